"""``Engine.validate_extras``/``Engine.postprocess`` on the real upscaler set: names checked against what it finds
(builtins and a tiny model file), respelt as it lists them, and a model's picture in the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.engine import Engine
from sdlocal.engine.extras import ExtrasImage, ExtrasRequest, ExtrasResult
from sdlocal.engine.request import RequestError, RunControl
from tests.engine.upscalers.files import save, tiny_compact


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    save(tiny_compact(scale=2).state_dict(), tmp_path / "models" / "ESRGAN" / "2x-Tiny.safetensors")
    return Engine(EngineConfig(data_dir=tmp_path, device="cpu", precision="fp32"))


def _request(size: tuple[int, int] = (20, 20), **fields: Any) -> ExtrasRequest:
    return ExtrasRequest(images=[ExtrasImage(Image.new("RGB", size, (90, 40, 200)), "a.png", "x")], **fields)


def test_names_are_checked_and_given_as_the_upscaler_set_spells_them(engine: Engine) -> None:
    request = engine.validate_extras(_request(upscaler_1="lanczos", upscaler_2="2X-TINY"))
    assert (request.upscaler_1, request.upscaler_2) == ("Lanczos", "2x-Tiny")


@pytest.mark.parametrize("field", ["upscaler_1", "upscaler_2"])
def test_an_unknown_upscaler_or_a_latent_mode_is_refused_naming_its_field(engine: Engine, field: str) -> None:
    with pytest.raises(RequestError) as caught:
        engine.validate_extras(_request(**{"upscaler_1": "Lanczos", field: "Latent"}))
    assert caught.value.field == field and "Lanczos" in caught.value.allowed


def test_postprocess_runs_the_model_and_blends_upscaler_2(engine: Engine) -> None:
    result = engine.postprocess(_request(upscaler_1="2x-tiny", upscaler_2="Nearest", upscaler_2_visibility=0.5,
                                         scale=2))
    assert isinstance(result, ExtrasResult) and not result.interrupted
    output = result.images[0]
    assert output.image.size == (40, 40) and output.parameters == "x"
    assert output.infotext == ("Postprocess upscale by: 2, Postprocess upscaler: 2x-Tiny, "
                               "Postprocess upscaler 2: Nearest")


def test_an_interrupt_pressed_before_the_run_keeps_nothing_and_says_so(engine: Engine) -> None:
    control = RunControl()
    control.interrupt()
    result = engine.postprocess(_request(upscaler_1="2x-Tiny"), control=control)
    assert result.interrupted and result.images == []
