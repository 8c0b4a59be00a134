"""Hires fix's infotext keys (A1111's names, written only when they say something) and reading them back."""

from __future__ import annotations

from types import SimpleNamespace

from sdlocal.engine.infotext import (
    format_infotext,
    hires_infotext,
    infotext_to_hires_fields,
    infotext_to_request_fields,
    parse_infotext,
)
from sdlocal.engine.request import GenerationRequest, HiresSpec


def _text(**hires) -> str:
    request = GenerationRequest.build(prompt="a cat", negative_prompt="blurry", width=512, height=512, steps=20,
                                      seed=5, sampler="Euler", hires=hires)
    extra = hires_infotext(request.hires, request.prompt, request.negative_prompt)
    return format_infotext(request, 5, "model", "0123456789", extra)


def test_scale_steps_and_upscaler_keys_and_the_first_pass_size():
    line = _text(scale=2, steps=10, upscaler="Latent", denoising_strength=0.7).splitlines()[-1]
    assert "Size: 512x512," in line  # A1111 writes the first pass's size
    assert "Denoising strength: 0.7, Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent," in line
    for absent in ("Hires resize", "Hires sampler", "Hires schedule type", "Hires prompt", "Hires negative"):
        assert absent not in line


def test_resize_instead_of_upscale_and_steps_zero_left_out():
    line = _text(resize_x=1024, resize_y=768, upscaler="Lanczos").splitlines()[-1]
    assert "Hires resize: 1024x768," in line
    assert "Hires upscale:" not in line and "Hires steps" not in line


def test_sampler_schedule_and_prompts_written_when_they_differ():
    line = _text(sampler="DPM++ 2M", schedule="Karras", prompt="a cat, detailed",
                 negative_prompt="blurry").splitlines()[-1]
    assert "Hires sampler: DPM++ 2M, Hires schedule type: Karras," in line
    assert 'Hires prompt: "a cat, detailed",' in line
    assert "Hires negative prompt" not in line  # the same as the first pass's


def test_round_trip_gives_the_same_spec():
    spec = dict(scale=1.5, steps=7, upscaler="Latent (bicubic antialiased)", denoising_strength=0.45,
                sampler="DPM++ 2M", schedule="Karras", prompt="a dog: tall, grey", negative_prompt="ugly")
    params = parse_infotext(_text(**spec))
    fields = infotext_to_hires_fields(params)
    assert HiresSpec(**fields).validate(512, 512) == HiresSpec(**spec).validate(512, 512)
    assert infotext_to_request_fields(params)["width"] == 512
    resized = infotext_to_hires_fields(parse_infotext(_text(resize_x=1024, resize_y=0)))
    assert (resized["resize_x"], resized["resize_y"]) == (1024, 0)
    assert "scale" not in resized and "sampler" not in resized and "schedule" not in resized


def test_no_hires_keys_gives_nothing_even_with_a_denoising_strength():
    img2img = "a cat\nSteps: 20, Sampler: Euler, Seed: 1, Size: 512x512, Denoising strength: 0.75"
    assert infotext_to_hires_fields(parse_infotext(img2img)) == {}


def test_a1111_text_with_legacy_hires_sampler_name_and_bad_numbers():
    text = ("a cat\nSteps: 20, Sampler: Euler a, Seed: 1, Size: 512x768, Denoising strength: 0.5, "
            "Hires upscale: two, Hires steps: 15, Hires upscaler: 4x-UltraSharp, Hires sampler: DPM++ 2M Karras")
    fields = infotext_to_hires_fields(parse_infotext(text))
    assert fields == {"steps": 15, "denoising_strength": 0.5, "upscaler": "4x-UltraSharp", "sampler": "DPM++ 2M",
                      "schedule": "Karras"}


def test_hires_infotext_reads_only_the_spec_fields():
    spec = SimpleNamespace(scale=2.0, resize_x=0, resize_y=0, steps=0, upscaler="None", denoising_strength=0.0,
                           sampler="Use same", schedule="Use same", prompt="", negative_prompt="")
    assert hires_infotext(spec, "p", "n") == {
        "Denoising strength": "0", "Hires upscale": "2", "Hires resize": None, "Hires steps": None,
        "Hires upscaler": "None", "Hires sampler": None, "Hires schedule type": None, "Hires prompt": None,
        "Hires negative prompt": None}
