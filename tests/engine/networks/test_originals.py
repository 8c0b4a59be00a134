"""The original weights of a loaded model can be read back exactly: from the file it was streamed from, or from a
CPU copy kept at the first patch when it was not streamed; a file changed since the load is refused.

This is what makes removing a LoRA exact without keeping the patched weights in RAM (the patcher's tests show the
restore itself).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from sdlocal.engine.networks.originals import FileOriginals, MemoryOriginals
from sdlocal.engine.request import EngineError
from tests.engine.conftest import make_engine

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def load(models_dir: Path, data_dir: Path, name: str, precision: str = "fp32") -> Any:
    """``name`` loaded by the real loader on the CPU at ``precision``."""
    from sdlocal.engine.loader import load_pipeline

    engine = make_engine(models_dir, data_dir, device="cpu", precision=precision)
    return load_pipeline(engine.find_model(name), engine._runtime_now(), data_dir / "cache")


def every_parameter(pipe: Any) -> list[tuple[str, str, Any]]:
    return [(component, name, tensor) for component in COMPONENTS if getattr(pipe, component, None) is not None
            for name, tensor in getattr(pipe, component).state_dict().items()]


@pytest.mark.parametrize(("name", "precision"), [
    ("tiny-sd1-safetensors", "fp32"), ("tiny-sd1-diffusers", "fp32"), ("tiny-sdxl-safetensors", "fp32"),
    ("tiny-sdxl-diffusers", "fp32"), ("tiny-sd1-safetensors", "bf16"), ("tiny-sdxl-safetensors", "fp16"),
    ("tiny-sd1-diffusers", "bf16"),
])
def test_every_parameter_read_back_from_the_file_is_bit_identical_to_the_loaded_one(
        no_network, tiny_models_dir: Path, tmp_path: Path, name: str, precision: str) -> None:
    loaded = load(tiny_models_dir, tmp_path, name, precision)
    assert isinstance(loaded.originals, FileOriginals)
    assert not hasattr(loaded.originals, "models")  # the plan's models are the pipeline's: not kept twice
    checked = 0
    for component, param, tensor in every_parameter(loaded.pipe):
        again = loaded.originals.read(component, param, tensor)
        assert again.dtype == tensor.dtype and again.device == tensor.device
        assert torch_equal(again, tensor), f"{component}.{param} differs when read back"
        checked += 1
    assert checked > 100


def torch_equal(a: Any, b: Any) -> bool:
    """Bit for bit: equal values and the same signs of zero (torch.equal alone counts -0.0 == 0.0)."""
    import torch

    if not torch.equal(a, b):
        return False
    if a.is_floating_point():
        return torch.equal(torch.signbit(a), torch.signbit(b))
    return True


def test_a_ckpt_model_keeps_cpu_copies_of_what_is_patched_and_says_so(
        no_network, tiny_models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import torch

    loaded = load(tiny_models_dir, tmp_path, "tiny-sd1-ckpt")
    originals = loaded.originals
    assert isinstance(originals, MemoryOriginals)
    weight = loaded.pipe.unet.conv_in.weight
    before = weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="sdlocal.engine.networks.originals"):
        originals.remember("unet", "conv_in.weight", weight)
        originals.remember("unet", "conv_in.weight", weight)  # the first value is the original: kept once
    assert "keeps a CPU copy" in caplog.text and "tiny-sd1-ckpt" in caplog.text
    assert originals.nbytes == weight.numel() * weight.element_size()
    with torch.no_grad():
        weight.add_(1.0)
    assert torch.equal(originals.read("unet", "conv_in.weight", weight), before)
    originals.forget("unet", "conv_in.weight")
    assert originals.nbytes == 0


@pytest.mark.parametrize("change", ["touched", "rewritten", "deleted"])
@pytest.mark.parametrize("fmt", ["safetensors", "diffusers"])
def test_a_model_file_changed_since_the_load_is_refused_with_the_fix(tmp_path: Path, change: str, fmt: str) -> None:
    from sdlocal.engine.synthetic import save_tiny_model

    models = tmp_path / "models"
    models.mkdir()
    target = models / ("tiny.safetensors" if fmt == "safetensors" else "tiny")
    save_tiny_model(target, family="sd1", fmt=fmt)
    loaded = load(models, tmp_path / "data", "tiny")
    weight = loaded.pipe.unet.conv_in.weight
    loaded.originals.check()  # unchanged: readable
    loaded.originals.read("unet", "conv_in.weight", weight)
    file = target if fmt == "safetensors" else next((target / "unet").glob("*.safetensors"))
    if change == "touched":
        stat = file.stat()
        os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    elif change == "rewritten":
        with open(file, "ab") as fh:
            fh.write(b"\0")
    else:
        file.unlink()
    for attempt in (loaded.originals.check, lambda: loaded.originals.read("unet", "conv_in.weight", weight)):
        with pytest.raises(EngineError) as caught:
            attempt()
        assert "tiny changed on disk since it was loaded" in caught.value.message
        assert caught.value.hint == "Reload the model (pick it again)."
