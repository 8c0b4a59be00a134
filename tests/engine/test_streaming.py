"""Single files streamed tensor by tensor load exactly what diffusers' reader loads, and refuse what cannot fit.

Every tensor of every component is compared with ``from_single_file`` (today's reader) on the tiny SD 1.x, SD 2.x,
SDXL and inpainting files, in fp32, fp16 and bf16; the slow test measures peak memory on a real-size SD 1.5 file
in a child process and compares a sample of tensors there.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sdlocal.engine import streaming
from sdlocal.engine.fit import GIB, Needs, check_fits
from sdlocal.engine.request import EngineError
from tests.engine.conftest import make_engine, pixels

ROOT = Path(__file__).resolve().parents[2]
CASES = {"sd1": ("sd1", False), "sd2": ("sd2", False), "sdxl": ("sdxl", False), "sd1-inpainting": ("sd1", True),
         "sdxl-inpainting": ("sdxl", True), "sdxl-fp16": ("sdxl", False)}
COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil

    import torch

    from sdlocal.engine import ldm_layout
    from sdlocal.engine.synthetic import build_tiny_pipeline, save_tiny_model

    folder = tmp_path_factory.mktemp("streamed")
    for case, (family, inpainting) in CASES.items():
        if case.endswith("-fp16"):
            continue
        save_tiny_model(folder / f"{case}.safetensors", family, "safetensors", seed=4, inpainting=inpainting)
    # fp16 weights, as most downloads are: loaded at fp16 they are read straight into place, q/k/v split included.
    half = ldm_layout.write_single_file(build_tiny_pipeline("sdxl", seed=5), folder / "sdxl-fp16.safetensors",
                                        dtype=torch.float16, include_extras=True)
    shutil.copytree(folder / "sdxl.config", half.with_name("sdxl-fp16.config"))
    return folder


def _engine_entry_runtime(folder: Path, data: Path, name: str, precision: str) -> tuple[Any, Any]:
    engine = make_engine(folder, data, device="cpu", precision=precision)
    return engine.find_model(name), engine._runtime_now()


def _reference(entry: Any, runtime: Any) -> Any:
    """Today's reader: diffusers' from_single_file with the same config folder and dtype."""
    from sdlocal.engine.loader import config_dir_for, pipeline_class

    cls = pipeline_class(entry.family, entry.inpainting)
    extra = {} if entry.family == "sdxl" else {"safety_checker": None, "feature_extractor": None,
                                                "requires_safety_checker": False}
    return cls.from_single_file(str(entry.path), config=str(config_dir_for(entry)), dtype=runtime.dtype,
                                local_files_only=True, **extra)


def _placed(reference: Any, runtime: Any) -> Any:
    """The reference as load_pipeline places it: an fp16 VAE whose config says force_upcast (SDXL) in fp32."""
    from sdlocal.engine.devices import torch_dtype
    from sdlocal.engine.loader import vae_precision

    reference.vae.to(dtype=torch_dtype(vae_precision(reference, runtime)))  # fp16 -> fp32 is exact
    return reference


def _config(model: Any) -> dict[str, Any]:
    return model.config.to_dict() if hasattr(model.config, "to_dict") else dict(model.config)


def _assert_identical(reference: Any, streamed: Any) -> int:
    import torch

    compared = 0
    assert type(streamed) is type(reference) and dict(streamed.config) == dict(reference.config)
    assert dict(streamed.scheduler.config) == dict(reference.scheduler.config)
    for component in COMPONENTS:
        want = getattr(reference, component, None)
        got = getattr(streamed, component, None)
        assert (want is None) == (got is None), component
        if want is None:
            continue
        assert _config(got) == _config(want), component
        expected = {**dict(want.named_buffers()), **want.state_dict()}
        actual = {**dict(got.named_buffers()), **got.state_dict()}
        assert actual.keys() == expected.keys(), component
        for name, tensor in expected.items():
            assert actual[name].dtype == tensor.dtype, f"{component}.{name}"
            assert actual[name].device.type == "cpu", f"{component}.{name}"
            assert torch.equal(actual[name], tensor), f"{component}.{name} differs"
            compared += 1
        assert [p.requires_grad for p in got.parameters()] == [p.requires_grad for p in want.parameters()]
        storages = [t.untyped_storage().data_ptr() for t in actual.values() if t.numel()]
        assert len(storages) == len(set(storages)), f"{component}: tensors share storage (q/k/v views?)"
    return compared


PRECISION_CASES = [(case, "fp32") for case in CASES] + [(case, precision) for case in ("sd1", "sdxl-inpainting")
                                                       for precision in ("fp16", "bf16")] + [("sdxl-fp16", "fp16")]


@pytest.mark.parametrize(("case", "precision"), PRECISION_CASES)
def test_streamed_file_is_bit_identical_to_diffusers_reader(no_network, tiny_files: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch, case: str,
                                                            precision: str) -> None:
    from sdlocal.engine import loader

    entry, runtime = _engine_entry_runtime(tiny_files, tmp_path, case, precision)
    assert entry.format == "safetensors" and entry.inpainting == CASES[case][1]
    reference = _reference(entry, runtime)
    cls = loader.pipeline_class(entry.family, entry.inpainting)

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the streamed path must not call from_single_file")

    monkeypatch.setattr(cls, "from_single_file", refuse)
    loaded = loader.load_pipeline(entry, runtime, tmp_path / "cache")
    assert _assert_identical(_placed(reference, runtime), loaded.pipe) > 50
    assert loaded.pipe.vae.dtype == reference.vae.dtype


@pytest.mark.parametrize("case", ["sd1", "sdxl-inpainting"])
def test_streamed_file_generates_the_same_image(no_network, tiny_files: Path, tmp_path: Path, request_for,
                                                monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    engine = make_engine(tiny_files, tmp_path / "a", device="cpu", precision="fp32")
    request = request_for(model=case)  # an inpainting model generates txt2img too
    streamed = engine.generate(request).images[0].image
    assert engine._cache.keys()  # loaded through load_pipeline

    monkeypatch.setattr(streaming, "plan_single_file", _mismatch)  # the same file through diffusers' reader
    engine2 = make_engine(tiny_files, tmp_path / "b", device="cpu", precision="fp32")
    old = engine2.generate(request).images[0].image
    assert (pixels(streamed) == pixels(old)).all()


def _mismatch(*_args: Any, **_kwargs: Any) -> Any:
    raise streaming.LayoutMismatch("faked: a layout this loader does not know")


def test_unknown_layout_falls_back_to_diffusers_with_a_log_line(no_network, tiny_files: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    from sdlocal.engine import loader

    entry, runtime = _engine_entry_runtime(tiny_files, tmp_path, "sd1", "fp32")
    reference = _reference(entry, runtime)
    monkeypatch.setattr(streaming, "plan_single_file", _mismatch)
    with caplog.at_level(logging.INFO, logger="sdlocal.engine.streaming"):
        loaded = loader.load_pipeline(entry, runtime, tmp_path / "cache")
    assert "not streamed (faked: a layout this loader does not know)" in caplog.text
    assert "diffusers' single-file reader" in caplog.text
    _assert_identical(reference, loaded.pipe)


def _rewrite(source: Path, dest: Path, change: Any) -> Path:
    """A copy of a safetensors file with its tensors changed by ``change(dict) -> dict`` (and the sidecar config)."""
    import shutil

    from safetensors.torch import load_file, save_file

    save_file(change(load_file(str(source))), str(dest), metadata={"format": "pt"})
    shutil.copytree(source.with_name(source.stem + ".config"), dest.with_name(dest.stem + ".config"))
    return dest


def test_a_missing_tensor_is_not_streamed_and_fails_naming_the_file(tiny_files: Path, tmp_path: Path) -> None:
    from sdlocal.engine import loader

    key = "model.diffusion_model.out.2.weight"
    folder = tmp_path / "models"
    folder.mkdir()
    path = _rewrite(tiny_files / "sd1.safetensors", folder / "broken.safetensors",
                    lambda state: {k: v for k, v in state.items() if k != key})
    with pytest.raises(streaming.LayoutMismatch, match=r"unet\.conv_out\.weight: the file has no tensor " + key):
        streaming.plan_single_file(path, path.with_name("broken.config"), "sd1")
    entry, runtime = _engine_entry_runtime(folder, tmp_path / "data", "broken", "fp32")
    with pytest.raises(EngineError, match="broken: could not be loaded"):
        loader.load_pipeline(entry, runtime, tmp_path / "cache")


def test_a_misshapen_tensor_is_refused_before_reading(tiny_files: Path, tmp_path: Path) -> None:
    import torch

    key = "first_stage_model.decoder.conv_out.weight"
    path = _rewrite(tiny_files / "sd1.safetensors", tmp_path / "odd.safetensors",
                    lambda state: {**state, key: torch.zeros(3, 32, 1, 1)})
    with pytest.raises(streaming.LayoutMismatch, match=r"vae\.decoder\.conv_out\.weight: .* has the shape "
                                                       r"\[3, 32, 1, 1\], the model needs \[3, 32, 3, 3\]"):
        streaming.plan_single_file(path, tmp_path / "odd.config", "sd1")


def test_extra_tensors_are_ignored_and_every_model_tensor_is_planned(tiny_files: Path) -> None:
    from safetensors import safe_open

    path = tiny_files / "sd1.safetensors"
    plan = streaming.plan_single_file(path, tiny_files / "sd1.config", "sd1")
    used = {step.source.key for step in plan.steps}
    with safe_open(str(path), framework="pt") as fh:
        keys = set(fh.keys())
    assert used <= keys
    # Only what diffusers also drops is left: the DDPM schedule and CLIP's position_ids (none in the tiny file).
    assert keys - used == set()
    assert len(plan.steps) == sum(len(model.state_dict()) for model in plan.models.values())


def test_header_matches_safetensors_and_a_truncated_file_is_refused(tiny_files: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    path = tiny_files / "sdxl.safetensors"
    header = streaming.read_header(path)
    with safe_open(str(path), framework="pt") as fh:
        assert set(header) == set(fh.keys())
        for key in list(header)[:20]:
            assert list(header[key].shape) == fh.get_slice(key).get_shape()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(streaming.LayoutMismatch, match="outside the file"):
        streaming.read_header(cut)


# ------------------------------------------------------------------------------------------------ fit check
def test_fit_check_names_the_figures_and_the_fixes() -> None:
    with pytest.raises(EngineError) as info:
        check_fits("big-model", Needs(ram=int(6.5 * GIB)), "fp32", "cpu", ram=lambda: 4 * GIB)
    assert str(info.value).startswith("big-model: needs 6.5 GiB of RAM in fp32, 4.0 GiB is available.")
    assert "bf16 or fp16" in info.value.hint and "--max-loaded-models 1" in info.value.hint
    assert "close other programs" in info.value.hint

    with pytest.raises(EngineError, match=r"needs 6\.5 GiB of GPU memory in fp16, 2\.0 GiB is free on cuda") as gpu:
        check_fits("big-model", Needs(ram=GIB, gpu=int(6.5 * GIB)), "fp16", "cuda", ram=lambda: 64 * GIB,
                   gpu=lambda _device: 2 * GIB)
    assert "--lowvram" in gpu.value.hint and "bf16 or fp16" not in gpu.value.hint

    check_fits("fits", Needs(ram=GIB, gpu=GIB), "fp16", "cuda", ram=lambda: 2 * GIB, gpu=lambda _d: 2 * GIB)
    check_fits("unknown", Needs(ram=GIB), "fp16", "cpu", ram=lambda: None)  # no figure: no false refusal


def test_a_model_too_big_for_the_free_ram_is_refused_before_any_read(tiny_files: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from sdlocal.engine import fit, loader

    entry, runtime = _engine_entry_runtime(tiny_files, tmp_path, "sdxl", "fp32")
    plan = streaming.plan_single_file(entry.path, loader.config_dir_for(entry), "sdxl")
    size = plan.size(runtime.dtype)
    reads: list[Any] = []
    monkeypatch.setattr(streaming, "_read", lambda *args: reads.append(args))
    monkeypatch.setattr(fit, "available_ram", lambda: size - 1)
    with pytest.raises(EngineError, match=rf"sdxl: needs {size / 2**20:.0f} MiB of RAM in fp32") as info:
        loader.load_pipeline(entry, runtime, tmp_path / "cache")
    assert "bf16 or fp16" in info.value.hint
    assert reads == []


def test_fit_check_also_guards_the_fallback(tiny_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sdlocal.engine import fit, loader

    entry, runtime = _engine_entry_runtime(tiny_files, tmp_path, "sd1", "fp16")
    monkeypatch.setattr(streaming, "plan_single_file", _mismatch)
    monkeypatch.setattr(fit, "available_ram", lambda: 1000)
    with pytest.raises(EngineError, match="of RAM in fp16"):
        loader.load_pipeline(entry, runtime, tmp_path / "cache")


def test_sizes_count_the_target_precision_and_gpu_loads_pass_through_ram_one_tensor_at_a_time(
        tiny_files: Path) -> None:
    import torch

    plan = streaming.plan_single_file(tiny_files / "sd2.safetensors", tiny_files / "sd2.config", "sd2")
    elements = sum(p.numel() for model in plan.models.values() for p in model.state_dict().values())
    assert plan.size(torch.float32) == 4 * elements and plan.size(torch.bfloat16) == 2 * elements

    def runtime(device: str, offload: bool = False, sequential: bool = False) -> Any:
        return SimpleNamespace(device=device, cpu_offload=offload, sequential_offload=sequential)

    assert streaming.target_device(runtime("cuda")) == "cuda"
    assert streaming.target_device(runtime("cuda", offload=True)) == "cpu"
    assert streaming.target_device(runtime("cuda", sequential=True)) == "cpu"  # --lowvram: layers move one by one
    assert streaming.target_device(runtime("cpu")) == "cpu"
    assert streaming.needs_for(100, 7, runtime("cuda")) == Needs(ram=7, gpu=100)
    assert streaming.needs_for(100, 7, runtime("cuda", offload=True)) == Needs(ram=100)
    assert streaming.needs_for(100, 7, runtime("mps")) == Needs(ram=100)  # unified memory: RAM is the GPU's
    assert streaming.needs_for(100, 7, runtime("cpu")) == Needs(ram=100)


# ------------------------------------------------------------------------------------------------ real size
CHILD = r"""
import json, os, sys, gc
sys.path.insert(0, os.environ["ROOT"])
from pathlib import Path
import torch
from sdlocal.engine import streaming
from sdlocal.engine.loader import BUNDLED_CONFIGS, quiet_libraries
from diffusers import StableDiffusionPipeline
quiet_libraries()

def status():
    with open("/proc/self/status") as fh:
        return {l.split(":")[0]: int(l.split()[1]) * 1024 for l in fh if l.startswith(("VmHWM", "VmRSS"))}

path, config = Path(sys.argv[1]), BUNDLED_CONFIGS / "sd1"
gc.collect()
before = status()["VmRSS"]
open("/proc/self/clear_refs", "w").write("5")
plan = streaming.plan_single_file(path, config, "sd1")
extra = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
pipe = streaming.load_planned(plan, StableDiffusionPipeline, torch.float16, extra=extra)
peak = status()["VmHWM"]
size = plan.size(torch.float16)
old = StableDiffusionPipeline.from_single_file(str(path), config=str(config), dtype=torch.float16,
                                               local_files_only=True, **extra)
differ, compared = [], 0
for component in ("unet", "vae", "text_encoder"):
    want, got = getattr(old, component).state_dict(), getattr(pipe, component).state_dict()
    for name in list(want)[::37]:
        compared += 1
        if not torch.equal(want[name], got[name]):
            differ.append(f"{component}.{name}")
print("RESULT" + json.dumps({"before": before, "peak": peak, "size": size, "compared": compared, "differ": differ}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="peak RSS reset needs Linux /proc")
def test_realsize_sd15_peak_is_within_a_quarter_of_the_model_above_the_start(tmp_path: Path) -> None:
    from sdlocal.engine.synthetic import build_realsize_sd15_file

    path = build_realsize_sd15_file(tmp_path / "sd15.safetensors")
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=1200,
                              env={**os.environ, "ROOT": str(ROOT), "HF_HUB_OFFLINE": "1"})
    finally:
        path.unlink()
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, done.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT"):])
    assert 1.9e9 < result["size"] < 2.3e9
    assert result["peak"] - result["before"] <= 1.25 * result["size"], result
    assert result["compared"] > 30 and result["differ"] == []


def test_a_gpu_load_streams_onto_the_gpu_and_checks_gpu_memory(tiny_files: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """No GPU here: the plan is real, the last step (reading onto the device) is recorded instead of run."""
    import torch

    calls: dict[str, Any] = {}
    monkeypatch.setattr(streaming, "load_planned", lambda plan, cls, dtype, device, extra: calls.update(
        device=device, dtype=dtype, size=plan.size(dtype)) or "pipe")
    runtime = SimpleNamespace(device="cuda", cpu_offload=False, dtype=torch.float16, precision="fp16")
    checked: list[tuple] = []
    pipe = streaming.load_single_file(tiny_files / "sdxl.safetensors", tiny_files / "sdxl.config", "sdxl", object,
                                      runtime, fits=lambda *args: checked.append(args))
    assert pipe == "pipe" and calls["device"] == "cuda" and calls["dtype"] == torch.float16
    (name, needs, precision, device), = checked
    assert (name, precision, device) == ("sdxl.safetensors", "fp16", "cuda")
    assert needs.gpu == calls["size"] and 0 < needs.ram < needs.gpu  # RAM holds one tensor at a time

    runtime.cpu_offload = True  # offloading keeps the model in RAM: it is read there
    checked.clear()
    streaming.load_single_file(tiny_files / "sdxl.safetensors", tiny_files / "sdxl.config", "sdxl", object, runtime,
                               fits=lambda *args: checked.append(args))
    assert calls["device"] == "cpu" and checked[0][1] == Needs(ram=calls["size"])


def test_a_diffusers_folder_too_big_for_the_free_ram_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    import torch

    from sdlocal.engine import fit, loader
    from sdlocal.engine.synthetic import save_tiny_model

    folder = save_tiny_model(tmp_path / "models" / "tiny-folder", "sd1", "diffusers")
    entry, runtime = _engine_entry_runtime(tmp_path / "models", tmp_path / "data", "tiny-folder", "fp16")
    pipe = loader.load_pipeline(entry, runtime, tmp_path / "cache").pipe
    elements = sum(t.numel() for part in (pipe.unet, pipe.vae, pipe.text_encoder) for t in part.state_dict().values())
    assert streaming.folder_estimate(folder, torch.float16) == 2 * elements  # every weight, at the target width
    monkeypatch.setattr(fit, "available_ram", lambda: 2 * elements - 1)
    with pytest.raises(EngineError, match=r"tiny-folder: needs \d+ MiB of RAM in fp16, \d+ MiB is available"):
        loader.load_pipeline(entry, runtime, tmp_path / "cache")


# ------------------------------------------------------------------------------------------------ folders
FOLDER_CASES = [("sd1", "fp32"), ("sd2", "bf16"), ("sdxl", "fp16"), ("sd1-inpainting", "fp16")]


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdlocal.engine.synthetic import save_tiny_model

    folder = tmp_path_factory.mktemp("folders")
    for case in {case for case, _ in FOLDER_CASES}:
        family, inpainting = CASES[case]
        save_tiny_model(folder / case, family, "diffusers", seed=6, inpainting=inpainting)
    return folder


@pytest.mark.parametrize(("case", "precision"), FOLDER_CASES)
def test_streamed_folder_is_bit_identical_to_from_pretrained(no_network, tiny_folders: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch, case: str,
                                                             precision: str) -> None:
    from sdlocal.engine import loader

    entry, runtime = _engine_entry_runtime(tiny_folders, tmp_path, case, precision)
    assert entry.format == "diffusers"
    cls = loader.pipeline_class(entry.family, entry.inpainting)
    extra = {} if entry.family == "sdxl" else {"safety_checker": None, "feature_extractor": None,
                                                "requires_safety_checker": False}
    reference = cls.from_pretrained(str(entry.path), dtype=runtime.dtype, local_files_only=True, **extra)

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the streamed path must not call from_pretrained")

    monkeypatch.setattr(cls, "from_pretrained", refuse)
    loaded = loader.load_pipeline(entry, runtime, tmp_path / "cache")
    assert _assert_identical(_placed(reference, runtime), loaded.pipe) > 50


def test_a_folder_of_bin_weights_is_loaded_by_from_pretrained(no_network, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    import torch

    from sdlocal.engine import loader
    from sdlocal.engine.synthetic import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd1", seed=2)
    pipe.save_pretrained(str(tmp_path / "models" / "bin-folder"), safe_serialization=False)
    with pytest.raises(streaming.LayoutMismatch, match=r"unet: no safetensors weights without a variant"):
        streaming.plan_folder(tmp_path / "models" / "bin-folder")
    entry, runtime = _engine_entry_runtime(tmp_path / "models", tmp_path / "data", "bin-folder", "fp32")
    with caplog.at_level(logging.INFO, logger="sdlocal.engine.streaming"):
        loaded = loader.load_pipeline(entry, runtime, tmp_path / "cache")
    assert "bin-folder: not streamed" in caplog.text and "from_pretrained" in caplog.text
    assert torch.equal(loaded.pipe.unet.conv_in.weight, pipe.unet.conv_in.weight)
