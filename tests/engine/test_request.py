"""Every bad request field is refused before any work, naming the field, the value and what is allowed."""

from __future__ import annotations

import math

import pytest

from sdlocal.engine import GenerationRequest, ModelNotFoundError, RequestError


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("steps", 10000),
        ("width", 100),
        ("width", 99999),
        ("height", 36),
        ("seed", "abc"),
        ("seed", 2**40),
        ("seed", -2),
        ("cfg_scale", math.nan),
        ("cfg_scale", math.inf),
        ("batch_size", 0),
        ("batch_count", 0),
        ("clip_skip", 0),
        ("token_merging_ratio", 1.5),
        ("steps", True),
        ("vae_tiling", "yes"),
    ],
)
def test_bad_field_names_field_and_value(field: str, value: object) -> None:
    with pytest.raises(RequestError) as caught:
        GenerationRequest.build(prompt="x", **{field: value})
    assert caught.value.field == field
    assert caught.value.value == value or (isinstance(value, float) and math.isnan(value))
    assert field in str(caught.value)


def test_width_not_multiple_of_8_suggests_neighbours() -> None:
    with pytest.raises(RequestError, match=r"multiple of 8 \(try 96 or 104\)"):
        GenerationRequest.build(width=100)


def test_unknown_request_key_is_named() -> None:
    with pytest.raises(RequestError) as caught:
        GenerationRequest.build(stepz=20)
    assert caught.value.field == "stepz"


def test_loose_values_are_normalised() -> None:
    request = GenerationRequest.build(steps="25", seed="42", cfg_scale="6.5", width=512.0)
    assert (request.steps, request.seed, request.cfg_scale, request.width) == (25, 42, 6.5, 512)


def test_unknown_sampler_lists_valid_names(engine) -> None:
    with pytest.raises(RequestError) as caught:
        engine.validate(GenerationRequest(sampler="Euler z"))
    assert caught.value.field == "sampler"
    assert "Euler a" in caught.value.allowed and "DPM++ 2M" in caught.value.allowed


def test_unknown_schedule_lists_valid_names(engine) -> None:
    with pytest.raises(RequestError) as caught:
        engine.validate(GenerationRequest(schedule="Cosine-ish"))
    assert caught.value.field == "schedule"
    assert "Karras" in caught.value.allowed


def test_unknown_model_lists_known_models(engine, request_for) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        engine.generate(request_for(model="no-such-model"))
    assert caught.value.name == "no-such-model"
    assert any("tiny-sd1-diffusers" in known for known in caught.value.known)
    assert "tiny-sd1-diffusers" in caught.value.hint
