"""``sdlocal generate --vae NAME``: the image is decoded by that VAE (named in its PNG parameters); an unknown
name exits 2 with the request error naming ``vae`` and the closest names."""

from __future__ import annotations

import io
from pathlib import Path

from sdlocal import cli
from sdlocal.settings import Settings


def test_generate_vae_flag_reaches_the_request(tmp_path: Path) -> None:
    invocation = cli.parse_command(["generate", "--model", "m", "--prompt", "p", "--out", str(tmp_path),
                                    "--vae", "kl-f8.safetensors"], env={})
    assert invocation.options["vae"] == "kl-f8.safetensors"
    assert cli.parse_command(["generate", "--model", "m", "--prompt", "p", "--out", str(tmp_path)],
                             env={}).options["vae"] == "Automatic"


def test_generate_decodes_with_the_vae_named_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    from sdlocal.engine.synthetic import build_tiny_pipeline, save_tiny_model
    from sdlocal.outputs import read_image_parameters
    from tests.engine.vae_files import write_vae

    data = tmp_path / "data"
    save_tiny_model(data / "models" / "Stable-diffusion" / "tiny.safetensors", family="sd1", fmt="safetensors")
    write_vae(build_tiny_pipeline("sd1").vae, data / "models" / "VAE" / "mine.safetensors")
    settings = Settings(data_dir=data, device="cpu", precision="fp32")
    options = {"model": "tiny", "prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 1,
               "out": tmp_path / "out"}
    out, err = io.StringIO(), io.StringIO()
    assert cli.run_generate(settings, {**options, "vae": "mine.safetensors"}, out=out, err=err) == 0, err.getvalue()
    assert "VAE: mine.safetensors" in read_image_parameters(Path(out.getvalue().split("\t")[0]))
    err = io.StringIO()
    assert cli.run_generate(settings, {**options, "vae": "mien"}, out=io.StringIO(), err=err) == 2
    assert "vae: 'mien'" in err.getvalue() and "mine.safetensors" in err.getvalue()
