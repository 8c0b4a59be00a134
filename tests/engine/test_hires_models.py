"""Hires fix with an upscaler model: through the engine's upscaler hooks (``Engine.upscaler_set`` and
``Engine.upscale``) faked, so the hires side is tested on its own, and with a real tiny RRDBNet file."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from PIL import Image

from sdlocal.engine import RequestError, upscalers


class FakeSet:
    def find(self, name: str, field: str = "upscaler_1"):
        known = {"4x-fake": "4x-Fake", "lanczos": "Lanczos", "none": "None"}
        if name.lower() not in known:
            raise RequestError(field, name, f"must be one of: {', '.join(known.values())}")
        return SimpleNamespace(name=known[name.lower()], usable=True)


class Interrupted(Exception):
    pass


@pytest.fixture
def hooked(engine, monkeypatch):
    calls = []

    def upscale(image, name, width, height, control=None, on_progress=None, field="upscaler_1"):
        calls.append((name, image.size, width, height, control is not None))
        if name == "4x-Stop":
            raise Interrupted()
        return image.resize((width, height), Image.Resampling.NEAREST)

    monkeypatch.setattr(engine, "upscaler_set", lambda: FakeSet(), raising=False)
    monkeypatch.setattr(engine, "upscale", upscale, raising=False)
    monkeypatch.setattr(upscalers, "UpscaleInterrupted", Interrupted, raising=False)
    return calls


def _hires(upscaler: str, **extra):
    return {"upscaler": upscaler, "steps": 2, "denoising_strength": 0.5, **extra}


def test_a_model_upscaler_gets_each_first_pass_picture_and_the_upscale_size(engine, request_for, hooked):
    result = engine.generate(request_for(batch_size=2, hires=_hires("4X-FAKE", resize_x=128, resize_y=96)))
    assert hooked == [("4x-Fake", (64, 64), 128, 128, True), ("4x-Fake", (64, 64), 128, 128, True)]
    assert [image.image.size for image in result.images] == [(128, 96), (128, 96)]
    assert "Hires upscaler: 4x-Fake" in result.images[0].infotext  # the library's own spelling


def test_an_unknown_upscaler_is_refused_by_the_library_naming_hr_upscaler(engine, request_for, hooked):
    with pytest.raises(RequestError) as caught:
        engine.generate(request_for(hires=_hires("4x-Missing")))
    assert caught.value.field == "hr_upscaler" and "4x-Fake" in caught.value.allowed
    assert hooked == []


def test_latent_modes_never_reach_the_upscaler(engine, request_for, hooked):
    engine.generate(request_for(hires=_hires("Latent (antialiased)")))
    assert hooked == []


def test_an_upscaler_interrupted_between_tiles_drops_the_batch(engine, request_for, hooked, monkeypatch):
    monkeypatch.setattr(FakeSet, "find", lambda self, name, field="": SimpleNamespace(name=name, usable=True))
    result = engine.generate(request_for(hires=_hires("4x-Stop")))
    assert result.images == [] and len(hooked) == 1


def test_a_real_tiny_esrgan_file_upscales_the_first_pass(engine, request_for):
    from .upscalers.files import new_layout, save, tiny_rrdb

    save(new_layout(tiny_rrdb()), engine.config.own_models_dir / "ESRGAN" / "4x-TinyHires.safetensors")
    assert "4x-TinyHires" in [info.name for info in engine.upscalers(refresh=True)]
    seen = []
    result = engine.generate(request_for(steps=2, hires=_hires("4x-tinyhires")), on_progress=seen.append)
    assert result.images[0].image.size == (128, 128) and len(seen) == 4
    assert "Hires upscaler: 4x-TinyHires" in result.images[0].infotext
    lanczos = engine.generate(request_for(steps=2, hires=_hires("Lanczos"))).images[0].image
    assert lanczos.tobytes() != result.images[0].image.tobytes()  # the network's picture, not a resize
