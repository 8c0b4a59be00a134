"""The sdlocal command line: flags into Settings, subcommands, helpful errors."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdlocal import cli
from sdlocal.engine.request import GenerationRequest
from sdlocal.settings import Settings
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]


def parse(argv, tmp_path, env=None):
    return cli.parse_command([*argv, "--data-dir", str(tmp_path)], env=env or {})


def test_a1111_flags_map_to_settings(tmp_path):
    inv = parse(["--listen", "--port", "7001", "--share", "--gradio-auth", "a:1,b:2", "--api", "--api-auth", "x:y",
                 "--models-dir", "/m1", "--ckpt-dir", "/m2", "--device", "cpu", "--precision", "fp32",
                 "--no-half-vae", "--xformers", "--preset", "SD 1.5", "--offline", "--require-gpu",
                 "--token-merging-ratio", "0.4", "--extra-model-paths", "/x.yaml"], tmp_path)
    s = inv.settings
    assert inv.command == "serve"
    assert (s.listen, s.port, s.share, s.api, s.device, s.precision, s.no_half_vae, s.offline, s.require_gpu) == (
        True, 7001, True, True, "cpu", "fp32", True, True, True)
    assert s.gradio_auth == [("a", "1"), ("b", "2")] and s.api_auth == [("x", "y")]
    assert s.models_dirs == [Path("/m1"), Path("/m2")] and s.extra_model_paths == [Path("/x.yaml")]
    assert s.attention == "xformers" and s.preset == "SD 1.5" and s.token_merging_ratio == 0.4
    assert s.data_dir == tmp_path


def test_flags_not_given_fall_through_to_the_environment(tmp_path):
    s = parse([], tmp_path, env={"SDLOCAL_PORT": "7100", "SDLOCAL_PRECISION": "bf16"}).settings
    assert (s.port, s.precision) == (7100, "bf16")
    s = parse(["--port", "7200"], tmp_path, env={"SDLOCAL_PORT": "7100"}).settings
    assert s.port == 7200
    assert cli.parse_args(["--data-dir", str(tmp_path)], env={}) == Settings(data_dir=tmp_path)


def test_nowebui_implies_api(tmp_path):
    assert parse(["--nowebui"], tmp_path).settings.api is True


@pytest.mark.parametrize(("argv", "command"), [
    (["doctor"], "doctor"), (["--doctor"], "doctor"), (["selftest"], "selftest"), (["--selftest"], "selftest"),
    (["serve", "--port", "7001"], "serve"), ([], "serve"),
])
def test_subcommands_and_their_flag_forms(argv, command, tmp_path):
    assert parse(argv, tmp_path).command == command


def test_generate_options(tmp_path):
    inv = parse(["generate", "--model", "tiny", "--prompt", "a cat", "--steps", "4", "--seed", "5", "--width",
                 "64", "--height", "64", "--batch-size", "2", "--out", str(tmp_path / "out")], tmp_path)
    assert inv.command == "generate"
    assert inv.options["model"] == "tiny" and inv.options["steps"] == 4 and inv.options["batch_size"] == 2
    assert inv.options["out"] == tmp_path / "out"


def test_unknown_flag_suggests_the_closest(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        parse(["--lsiten"], tmp_path)
    assert info.value.code == 2
    assert "--lsiten: did you mean --listen?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["generate", "--model", "m", "--prompt", "p", "--out", "o", "--stesp", "3"], tmp_path)
    assert "--stesp: did you mean --steps?" in capsys.readouterr().err


def test_no_abbreviations(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse(["--list"], tmp_path)
    assert "did you mean --listen?" in capsys.readouterr().err


def test_bad_values_exit_2_with_the_reason(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        parse(["--precision", "fp8"], tmp_path)
    assert info.value.code == 2 and "invalid choice: 'fp8'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--gradio-auth", "nopass"], tmp_path)
    assert "user:password" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--port", "99999"], tmp_path)
    assert "port: 99999" in capsys.readouterr().err


def test_help_explains_every_flag():
    out = subprocess.run([sys.executable, "-m", "sdlocal", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--listen", "--port", "--share", "--gradio-auth", "--gradio-auth-path", "--api", "--api-auth",
                 "--nowebui", "--data-dir", "--models-dir", "--device", "--precision", "--no-half-vae", "--attention",
                 "--xformers", "--preset", "--offline", "--skip-install", "--require-gpu", "--doctor", "--selftest",
                 "--no-auth", "--torch-index-url"):
        assert flag in out.stdout, flag
    assert "Precedence" in out.stdout


def test_generate_bad_value_prints_the_request_error_and_exits_2(tmp_path):
    err = io.StringIO()
    code = cli.run_generate(Settings(data_dir=tmp_path), {"model": "x", "prompt": "p", "width": 65,
                                                          "out": tmp_path / "o"}, out=io.StringIO(), err=err)
    assert code == 2
    assert "width" in err.getvalue() and "65" in err.getvalue() and "multiple of 8" in err.getvalue()


def _doctor(tmp_path, *flags):
    return subprocess.run([sys.executable, "-m", "sdlocal", "doctor", "--data-dir", str(tmp_path), "--offline",
                           "--port", str(free_port()), *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_doctor_command_prints_the_report_and_passes_here(tmp_path):
    """Inputs chosen so that nothing can fail: the test venv's pins, a new data folder, a free port, offline."""
    out = _doctor(tmp_path)
    assert "sdlocal doctor" in out.stdout
    assert "Python:" in out.stdout and "Data folder:" in out.stdout and "Port: " in out.stdout
    assert "Ready: 0 failure(s)" in out.stdout and "Cannot start" not in out.stdout, out.stdout
    assert out.returncode == 0


def test_doctor_exits_1_on_a_failure(tmp_path):
    """--require-gpu fails exactly where there is no usable CUDA GPU (the machines these tests run on)."""
    import torch

    out = _doctor(tmp_path, "--require-gpu")
    if torch.cuda.is_available():
        assert out.returncode == 0 and "Ready: 0 failure(s)" in out.stdout, out.stdout
        return
    assert out.returncode == 1, out.stdout
    assert "FAILURE  CUDA" in out.stdout and "Cannot start: " in out.stdout and "Ready: " not in out.stdout


def test_selftest_generates_an_image_on_the_cpu(tmp_path):
    out = io.StringIO()
    code = cli.run_selftest(Settings(data_dir=tmp_path, device="cpu", precision="fp32"), out=out)
    assert code == 0, out.getvalue()
    assert out.getvalue().startswith("selftest passed: cpu (")
    assert "fp32, attention sdpa, 64x64, 4 steps" in out.getvalue()


def test_generate_saves_images_with_their_seeds(tmp_path):
    from sdlocal.engine.synthetic import save_tiny_model
    from sdlocal.outputs import read_image_parameters

    models = tmp_path / "data" / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    save_tiny_model(models / "tiny-sd15.safetensors", family="sd1", fmt="safetensors")
    out, err = io.StringIO(), io.StringIO()
    code = cli.run_generate(Settings(data_dir=tmp_path / "data", device="cpu", precision="fp32"),
                            {"model": "tiny-sd15", "prompt": "a cat", "steps": 2, "width": 64, "height": 64,
                             "seed": 42, "batch_size": 2, "out": tmp_path / "out"}, out=out, err=err)
    assert code == 0, err.getvalue()
    lines = out.getvalue().strip().splitlines()
    assert [line.split("\tseed ")[1] for line in lines] == ["42", "43"]
    for line in lines:
        path = Path(line.split("\t")[0])
        assert path.parent.parent.name == "txt2img" and path.is_relative_to(tmp_path / "out")
        assert "Seed: " in read_image_parameters(path)


def test_generate_unknown_model_is_an_error_naming_it(tmp_path):
    err = io.StringIO()
    code = cli.run_generate(Settings(data_dir=tmp_path), {"model": "no-such-model", "prompt": "p", "steps": 2,
                                                          "width": 64, "height": 64, "out": tmp_path / "o"},
                            out=io.StringIO(), err=err)
    assert code in (1, 2)
    assert "no-such-model" in err.getvalue()


def test_serve_stops_with_the_report_when_the_late_checks_fail(tmp_path):
    """The torch checks run after the page is up; a failure there (--require-gpu on a CPU machine) still stops
    the server with the report and exit code 1."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a usable GPU, so --require-gpu passes")
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "sdlocal", "serve", "--require-gpu", "--offline", "--port",
                           str(port), "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "FAILURE  CUDA" in done.stdout and "stopping: fix the failure above" in done.stdout


def _picture(path: Path, size=(64, 64), mode="RGB") -> Path:
    from PIL import Image

    Image.new(mode, size, 200).save(path)
    return path


def test_img2img_flags_build_the_same_image_source_as_the_api(tmp_path):
    init, mask = _picture(tmp_path / "init.png"), _picture(tmp_path / "mask.png", mode="L")
    inv = parse(["generate", "--model", "m", "--prompt", "p", "--out", str(tmp_path / "o"), "--init-image", str(init),
                 "--init-image", str(init), "--mask", str(mask), "--denoising-strength", "0.4", "--resize-mode",
                 "Crop and resize", "--mask-blur", "8", "--mask-invert", "--inpaint-area", "Only masked",
                 "--inpaint-padding", "16", "--masked-content", "latent noise", "--conditional-mask-weight", "0.5"],
                tmp_path)
    source = cli.image_source(inv.options)
    request = GenerationRequest.build(prompt="p", width=64, height=64, source=source)
    assert request.mode == "inpaint" and request.output_kind == "img2img"
    assert [image.size for image in request.source.images] == [(64, 64), (64, 64)]
    assert (request.source.denoising_strength, request.source.resize_mode) == (0.4, "Crop and resize")
    spec = request.source.mask
    assert (spec.blur_x, spec.blur_y, spec.invert, spec.area, spec.padding, spec.content, spec.conditional_weight) == (
        8, 8, True, "Only masked", 16, "latent noise", 0.5)
    plain = parse(["generate", "--model", "m", "--prompt", "p", "--out", "o", "--init-image", str(init)], tmp_path)
    assert GenerationRequest.build(source=cli.image_source(plain.options)).mode == "img2img"
    assert cli.image_source(parse(["generate", "--model", "m", "--prompt", "p", "--out", "o"], tmp_path).options) \
        is None


def test_generate_with_an_init_image_and_a_mask_saves_in_img2img(tmp_path):
    from PIL import Image

    from sdlocal.engine.synthetic import save_tiny_model
    from sdlocal.outputs import read_image_parameters

    models = tmp_path / "data" / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    save_tiny_model(models / "tiny-sd15.safetensors", family="sd1", fmt="safetensors")
    init = _picture(tmp_path / "init.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    mask.save(tmp_path / "mask.png")
    argv = ["generate", "--model", "tiny-sd15", "--prompt", "a cat", "--steps", "4", "--width", "64", "--height",
            "64", "--seed", "7", "--out", str(tmp_path / "out"), "--init-image", str(init), "--mask",
            str(tmp_path / "mask.png"), "--denoising-strength", "0.5", "--mask-blur", "2", "--device", "cpu",
            "--precision", "fp32"]
    inv = parse(argv, tmp_path / "data")
    out, err = io.StringIO(), io.StringIO()
    assert cli.run_generate(inv.settings, inv.options, out=out, err=err) == 0, err.getvalue()
    path = Path(out.getvalue().strip().split("\t")[0])
    assert path.parent.parent == tmp_path / "out" / "img2img" and path.name.endswith("-7.png")
    text = read_image_parameters(path)
    assert "Denoising strength: 0.5" in text and "Mask blur: 2" in text and "Seed: 7" in text


@pytest.mark.parametrize(("flags", "expected"), [
    (["--mask", "{mask}"], "mask.png' is not allowed; needs --init-image PATH, the image to start from"),
    (["--denoising-strength", "0.5"], "--denoising-strength: 0.5 is not allowed; needs --init-image PATH"),
    (["--init-image", "{init}", "--mask-blur", "3"], "--mask-blur: 3 is not allowed; needs --mask PATH"),
    (["--init-image", "{missing}"], "cannot be read (No such file or directory); give an image file (set with "
                                    "--init-image)"),
    (["--init-image", "{text}"], "(set with --init-image)"),
    (["--init-image", "{init}", "--mask", "{small}"], "must be the size of its image: init image 1 is 64x64; "),
    (["--init-image", "{init}", "--denoising-strength", "1.5"], "denoising_strength: 1.5 is not allowed"),
])
def test_bad_img2img_flags_are_refused_before_any_work_naming_the_flag(tmp_path, flags, expected):
    files = {"init": _picture(tmp_path / "init.png"), "mask": _picture(tmp_path / "mask.png", mode="L"),
             "small": _picture(tmp_path / "small.png", (32, 32), "L"), "missing": tmp_path / "nope.png"}
    files["text"] = tmp_path / "notes.png"
    files["text"].write_text("not an image")
    argv = ["generate", "--model", "no-such-model", "--prompt", "p", "--out", str(tmp_path / "o"),
            *[flag.format(**files) for flag in flags]]
    err = io.StringIO()
    code = cli.run_generate(parse(argv, tmp_path).settings, parse(argv, tmp_path).options, out=io.StringIO(), err=err)
    assert code == 2 and expected in err.getvalue(), err.getvalue()
    assert "no-such-model" not in err.getvalue()  # refused before the engine looked for the model


def test_an_unknown_resize_mode_is_a_flag_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        parse(["generate", "--model", "m", "--prompt", "p", "--out", "o", "--resize-mode", "Stretch"], tmp_path)
    assert caught.value.code == 2 and "--resize-mode" in capsys.readouterr().err
