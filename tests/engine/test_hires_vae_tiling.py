"""Automatic VAE tiling: the rule with a faked amount of free memory, and a hires run on a 'small machine'."""

from __future__ import annotations

import numpy as np
import pytest

from sdlocal.engine import vae_tiling
from sdlocal.engine.vae_tiling import DECODE_BYTES_PER_PIXEL_FP32, HEADROOM, auto_tiling, needed_bytes, should_tile


class FakeVae:
    def __init__(self, dtype_name: str = "float32") -> None:
        import torch

        self.dtype = getattr(torch, dtype_name)
        self.device = torch.device("cpu")
        self.use_tiling = False
        self.calls: list[str] = []

    def enable_tiling(self) -> None:
        self.use_tiling = True
        self.calls.append("on")

    def disable_tiling(self) -> None:
        self.use_tiling = False
        self.calls.append("off")


def test_the_estimate_scales_with_pixels_images_and_precision():
    assert needed_bytes(FakeVae(), 1024, 1024, 1) == DECODE_BYTES_PER_PIXEL_FP32 * 1024 * 1024
    assert needed_bytes(FakeVae(), 1024, 1024, 2) == 2 * needed_bytes(FakeVae(), 1024, 1024, 1)
    assert needed_bytes(FakeVae("float16"), 1024, 1024, 1) == needed_bytes(FakeVae(), 1024, 1024, 1) // 2


def test_tiles_only_past_the_headroom_and_never_when_unknown_or_already_tiling():
    need = needed_bytes(FakeVae(), 2048, 2048, 1)
    assert should_tile(FakeVae(), 2048, 2048, 1, int(need / HEADROOM) - 1024)
    assert not should_tile(FakeVae(), 2048, 2048, 1, int(need / HEADROOM) + 1024)
    assert not should_tile(FakeVae(), 2048, 2048, 1, None)
    tiling = FakeVae()
    tiling.use_tiling = True
    assert not should_tile(tiling, 2048, 2048, 1, 1)


def test_auto_tiling_switches_on_for_the_call_and_back_off_even_on_error():
    vae, warnings = FakeVae(), []
    with pytest.raises(RuntimeError), auto_tiling(vae, 2048, 2048, 1, warnings, free=2**20) as tiled:
        assert tiled and vae.use_tiling
        raise RuntimeError("decode failed")
    assert vae.calls == ["on", "off"] and not vae.use_tiling
    assert len(warnings) == 1 and "tiled" in warnings[0]
    with auto_tiling(vae, 64, 64, 1, warnings, free=2**40) as tiled:
        assert not tiled
    assert vae.calls == ["on", "off"]


def test_a_hires_run_on_a_small_machine_tiles_and_still_makes_the_image(engine, request_for, monkeypatch):
    hires = {"upscaler": "Lanczos", "steps": 2, "denoising_strength": 0.5}
    plain = engine.generate(request_for(hires=hires))
    assert not any("tiled" in warning for warning in plain.warnings)
    monkeypatch.setattr(vae_tiling, "free_bytes", lambda device: 64 * 1024)  # 64 KiB "free"
    small = engine.generate(request_for(hires=hires))
    assert any("The VAE was tiled" in warning for warning in small.warnings)
    assert small.images[0].image.size == (128, 128)
    loaded = engine._pipelines().get(engine.find_model("tiny-sd1-diffusers"), engine._runtime_now())
    assert loaded.pipe.vae.use_tiling is False  # restored after the run
    difference = np.abs(np.asarray(small.images[0].image, np.int16) - np.asarray(plain.images[0].image, np.int16))
    assert difference.mean() < 40  # the same picture, with blended tile seams
