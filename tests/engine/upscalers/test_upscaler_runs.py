"""Upscaler cases beyond the basics: x2plus on odd sizes, files in formats sdlocal does not read listed with the
reason, and the engine's Interrupt reaching an upscale that runs on its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.upscalers import UpscaleInterrupted, UpscalerSet
from tests.engine.upscalers.files import new_layout, save, tiny_rrdb


def picture(width: int, height: int) -> Image.Image:
    generator = torch.Generator().manual_seed(7)
    return Image.fromarray((torch.rand((height, width, 3), generator=generator) * 255).to(torch.uint8).numpy())


def test_x2plus_runs_on_odd_sizes_and_odd_tiles(tmp_path: Path) -> None:
    model = tiny_rrdb(unshuffle=2)
    save(new_layout(model), tmp_path / "models" / "RealESRGAN" / "RealESRGAN_x2plus.pth")
    upscalers = UpscalerSet(EngineConfig(data_dir=tmp_path))
    info = upscalers.find("realesrgan_x2plus")
    assert info.scale == 2
    assert upscalers.upscale(picture(15, 9), info.name, 30, 18).size == (30, 18)
    even = torch.rand(1, 3, 8, 6)
    with torch.no_grad():  # an odd side is padded, and the output cut back to twice the side
        assert model(even[..., :7, :5]).shape[-2:] == (14, 10)
    # 250 wide with a 192 tile: the second tile starts at an odd column
    out = upscalers.upscale(picture(250, 20), info.name, 500, 40)
    assert out.size == (500, 40) and np.asarray(out).std() > 0


def test_files_in_formats_sdlocal_does_not_read_are_listed_with_the_reason(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "ESRGAN"
    folder.mkdir(parents=True)
    (folder / "4x_model.onnx").write_bytes(b"onnx")
    torch.save(new_layout(tiny_rrdb()), str(folder / "old.ckpt"))
    found = {info.name: info for info in UpscalerSet(EngineConfig(data_dir=tmp_path)).scan()}
    assert not found["4x_model"].usable and "ONNX" in found["4x_model"].reason
    assert found["old"].usable and found["old"].scale == 4


def test_the_engines_interrupt_reaches_an_upscale_between_tiles(tmp_path: Path) -> None:
    from sdlocal.engine import Engine

    save(new_layout(tiny_rrdb()), tmp_path / "models" / "ESRGAN" / "4x.pth")
    engine = Engine(EngineConfig(data_dir=tmp_path, device="cpu"))
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        engine.interrupt()

    with pytest.raises(UpscaleInterrupted):
        engine.upscale(picture(400, 20), "4x", 1600, 80, on_progress=progress)
    assert seen == [1] and not engine.busy


def test_a_pickle_that_needs_code_is_refused_naming_what_it_needs(tmp_path: Path) -> None:
    import pickle

    class Payload:
        def __reduce__(self):
            # eval, not print: Ray (imported by the cluster tests in the same run) replaces builtins.print
            return (eval, ("1 + 1",))

    folder = tmp_path / "models" / "ESRGAN"
    folder.mkdir(parents=True)
    (folder / "code.pth").write_bytes(pickle.dumps({"weight": Payload()}))
    torch.save({"params_ema": {"weight": Payload()}}, str(folder / "zipped.pth"))
    found = {info.name: info for info in UpscalerSet(EngineConfig(data_dir=tmp_path)).scan()}
    assert not found["code"].usable and "contains code, refused" in found["code"].reason
    assert not found["zipped"].usable
    assert "it names eval" in found["zipped"].reason and "was not opened" in found["zipped"].reason
