"""The A1111 parameters text: written exactly as A1111 writes it, and A1111's own texts read back."""

from __future__ import annotations

import pytest

from sdlocal.engine import GenerationRequest
from sdlocal.engine.infotext import format_infotext, infotext_to_request_fields, parse_infotext, sdlocal_version


def _request(**values: object) -> GenerationRequest:
    base: dict[str, object] = dict(prompt="a cat", sampler="DPM++ 2M", schedule="Karras", steps=20, cfg_scale=7,
                                   width=512, height=512, seed=1741860054)
    base.update(values)
    return GenerationRequest.build(**base)


def test_exact_a1111_line() -> None:
    text = format_infotext(_request(negative_prompt="ugly"), 1741860054, "v1-5-pruned-emaonly", "6ce0161689")
    assert text == (
        "a cat\nNegative prompt: ugly\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1741860054, Size: 512x512, "
        f"Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: sdlocal {sdlocal_version()}"
    )


def test_optional_keys_appear_only_when_they_matter() -> None:
    plain = format_infotext(_request(sampler="Euler", schedule="Automatic"), 1, "m", "abc")
    assert "Schedule type" not in plain and "Clip skip" not in plain and "Token merging" not in plain
    assert "Negative prompt" not in plain
    rich = format_infotext(_request(clip_skip=2, token_merging_ratio=0.5, cfg_scale=7.5), 1, "m", "abc")
    assert "Clip skip: 2" in rich and "Token merging ratio: 0.5" in rich and "CFG scale: 7.5" in rich


def test_automatic_writes_the_schedule_that_ran() -> None:
    """A1111 1.9+: "Automatic" with DPM++ 2M runs Karras, and the text says so."""
    text = format_infotext(_request(sampler="DPM++ 2M", schedule="Automatic"), 1, "m", "abc")
    assert "Sampler: DPM++ 2M, Schedule type: Karras, " in text
    text = format_infotext(_request(sampler="DPM++ 2M SDE", schedule="Automatic"), 1, "m", "abc")
    assert "Schedule type: Exponential" in text


def test_values_with_separators_are_json_quoted() -> None:
    text = format_infotext(_request(), 1, "my model, v2: final", "abc")
    assert 'Model: "my model, v2: final"' in text
    assert parse_infotext(text)["Model"] == "my model, v2: final"


def test_round_trip_to_request_fields() -> None:
    request = _request(prompt="line one,\nline two: more", negative_prompt="bad, worse\nworst", clip_skip=2,
                       token_merging_ratio=0.3, width=768, height=512, seed=99)
    fields = infotext_to_request_fields(parse_infotext(format_infotext(request, 99, "model", "0123456789")))
    for name in ("prompt", "negative_prompt", "sampler", "schedule", "steps", "cfg_scale", "seed", "width", "height",
                 "clip_skip", "token_merging_ratio"):
        assert fields[name] == getattr(request, name), name
    assert fields["model"] == "model"


A1111_TEXT = """masterpiece, best quality, (1girl:1.2), looking at viewer
red scarf, <lora:add_detail:0.6>
Negative prompt: lowres, bad anatomy, (worst quality:1.4)
easynegative
Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 3543543, Size: 512x768, Model hash: 6ce0161689, \
Model: v1-5-pruned-emaonly, Denoising strength: 0.45, Clip skip: 2, Hires upscale: 2, Hires upscaler: Latent, \
Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "easynegative: c74b4e810b03", Version: v1.6.0"""


def test_parse_real_a1111_text() -> None:
    params = parse_infotext(A1111_TEXT)
    assert params["Prompt"] == ("masterpiece, best quality, (1girl:1.2), looking at viewer\n"
                                "red scarf, <lora:add_detail:0.6>")
    assert params["Negative prompt"] == "lowres, bad anatomy, (worst quality:1.4)\neasynegative"
    assert params["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert params["Size"] == "512x768" and params["Hires upscaler"] == "Latent" and params["Version"] == "v1.6.0"
    fields = infotext_to_request_fields(params)
    assert (fields["sampler"], fields["schedule"]) == ("DPM++ 2M", "Karras")  # pre-1.9 name split
    assert (fields["width"], fields["height"], fields["steps"], fields["cfg_scale"]) == (512, 768, 28, 7.5)
    assert fields["clip_skip"] == 2 and fields["seed"] == 3543543


def test_a1111_19_schedule_type_and_no_negative() -> None:
    params = parse_infotext("a lighthouse at dusk\nSteps: 30, Sampler: Euler a, Schedule type: Automatic, "
                            "CFG scale: 5, Seed: 7, Size: 1024x1024, Model hash: 31e35c80fc, Model: sd_xl_base_1.0, "
                            "Version: v1.10.1")
    assert params["Prompt"] == "a lighthouse at dusk" and params["Negative prompt"] == ""
    fields = infotext_to_request_fields(params)
    assert (fields["sampler"], fields["schedule"], fields["width"]) == ("Euler a", "Automatic", 1024)


@pytest.mark.parametrize("last_line", ["style: oil, mood: calm", "just more prompt", "a: b"])
def test_last_line_with_fewer_than_three_pairs_is_prompt(last_line: str) -> None:
    params = parse_infotext(f"a painting\n{last_line}")
    assert params["Prompt"] == f"a painting\n{last_line}"
    assert set(params) == {"Prompt", "Negative prompt"}


def test_unparsable_values_are_left_out_not_guessed() -> None:
    fields = infotext_to_request_fields({"Steps": "many", "Seed": "", "Size": "big", "CFG scale": "7", "Sampler": ""})
    assert fields == {"cfg_scale": 7.0}


def test_empty_text() -> None:
    assert parse_infotext("") == {"Prompt": "", "Negative prompt": ""}


def test_emphasis_is_written_only_when_not_original_and_read_back() -> None:
    assert "Emphasis" not in format_infotext(_request(), 1, "m", "abc")
    text = format_infotext(_request(emphasis="No norm"), 1, "m", "abc")
    assert "Clip skip" not in text and ", Emphasis: No norm," in text
    assert infotext_to_request_fields(parse_infotext(text))["emphasis"] == "No norm"
    assert infotext_to_request_fields({"Emphasis": "ignore"})["emphasis"] == "Ignore"  # any case, as the request
    assert "emphasis" not in infotext_to_request_fields({"Emphasis": "Louder"})  # unknown: the form keeps its own
    assert "emphasis" not in infotext_to_request_fields({"Steps": "20"})


def test_ti_hashes_as_a1111_writes_them() -> None:
    from types import SimpleNamespace

    from sdlocal.engine.infotext import ti_hashes

    used = [SimpleNamespace(name="EasyNegative", shorthash="c74b4e810b03"), SimpleNamespace(name="no file"),
            SimpleNamespace(name="style two", shorthash="0123456789ab")]
    value = ti_hashes(used)
    assert value == "EasyNegative: c74b4e810b03, style two: 0123456789ab"  # one without a hash is left out
    assert ti_hashes([]) is None and ti_hashes([SimpleNamespace(name="x")]) is None
    text = format_infotext(_request(), 1, "m", "abc", {"TI hashes": value})
    assert 'TI hashes: "EasyNegative: c74b4e810b03, style two: 0123456789ab"' in text
    assert parse_infotext(text)["TI hashes"] == value
