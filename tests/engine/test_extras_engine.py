"""``Engine.validate_extras``/``Engine.postprocess``: the Extras rules over the engine's upscalers, names checked
against what the upscaler set finds (a stand-in set here: the library's own behaviour is tested with it)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.engine import Engine
from sdlocal.engine.extras import ExtrasImage, ExtrasRequest, ExtrasResult
from sdlocal.engine.request import RequestError

KNOWN = ("None", "Lanczos", "4x-Sharp")


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    engine = Engine(EngineConfig(data_dir=tmp_path))
    calls: list[str] = []

    def find(name: str, field: str = "upscaler_1") -> Any:
        for known in KNOWN:
            if known.lower() == name.strip().lower():
                return SimpleNamespace(name=known, usable=True)
        raise RequestError(field, name, f"must be one of: {', '.join(KNOWN)}")

    def upscale(image: Any, name: str, width: int, height: int, control: Any = None, on_progress: Any = None) -> Any:
        calls.append(name)
        return image.resize((width, height))

    monkeypatch.setattr(engine, "upscaler_set", lambda: SimpleNamespace(find=find), raising=False)
    monkeypatch.setattr(engine, "upscale", upscale, raising=False)
    engine.calls = calls  # type: ignore[attr-defined]
    return engine


def _request(**fields: Any) -> ExtrasRequest:
    return ExtrasRequest(images=[ExtrasImage(Image.new("RGB", (20, 20)), "a.png", "x")], **fields)


def test_names_are_checked_and_given_as_the_upscaler_set_spells_them(engine: Engine) -> None:
    request = engine.validate_extras(_request(upscaler_1="lanczos", upscaler_2="4X-SHARP"))
    assert (request.upscaler_1, request.upscaler_2) == ("Lanczos", "4x-Sharp")


@pytest.mark.parametrize("field", ["upscaler_1", "upscaler_2"])
def test_an_unknown_upscaler_is_refused_naming_its_field(engine: Engine, field: str) -> None:
    with pytest.raises(RequestError) as caught:
        engine.validate_extras(_request(**{"upscaler_1": "Lanczos", field: "Latent"}))
    assert caught.value.field == field and "4x-Sharp" in caught.value.allowed


def test_postprocess_runs_the_engines_upscale_and_writes_the_names_used(engine: Engine) -> None:
    result = engine.postprocess(_request(upscaler_1="4x-sharp", upscaler_2="lanczos", upscaler_2_visibility=0.5,
                                         scale=2))
    assert isinstance(result, ExtrasResult) and engine.calls == ["4x-Sharp", "Lanczos"]  # type: ignore[attr-defined]
    output = result.images[0]
    assert output.image.size == (40, 40) and output.parameters == "x"
    assert output.infotext == ("Postprocess upscale by: 2, Postprocess upscaler: 4x-Sharp, "
                               "Postprocess upscaler 2: Lanczos")
