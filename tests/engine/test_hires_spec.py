"""Hires fix's request part: A1111's size rules, steps and the errors that name the API's fields."""

from __future__ import annotations

import pytest

from sdlocal.engine.request import GenerationRequest, HiresSpec, ImageSource, RequestError
from sdlocal.engine.upscalers import LATENT_MODES, latent_mode


def sizes(width: int, height: int, **spec) -> tuple[int, int, int, int]:
    found = HiresSpec(**spec).sizes(width, height)
    return found.upscale_width, found.upscale_height, found.final_width, found.final_height


def test_the_scale_multiplies_both_sides():
    assert sizes(512, 512) == (1024, 1024, 1024, 1024)
    assert sizes(512, 768, scale=1.5) == (768, 1152, 768, 1152)


def test_one_resize_side_follows_the_aspect_ratio():
    assert sizes(512, 768, resize_x=1024) == (1024, 1536, 1024, 1536)
    assert sizes(512, 768, resize_y=1024) == (680, 1024, 680, 1024)  # 682 rounded down to a multiple of 8


def test_both_resize_sides_cover_the_box_then_crop():
    assert sizes(512, 768, resize_x=1024, resize_y=1024) == (1024, 1536, 1024, 1024)
    assert sizes(768, 512, resize_x=1024, resize_y=1024) == (1536, 1024, 1024, 1024)
    assert sizes(512, 512, resize_x=1024, resize_y=768) == (1024, 1024, 1024, 768)


def test_second_pass_steps_follow_a1111():
    assert HiresSpec().second_pass_steps(20) == 20
    assert HiresSpec(steps=7).second_pass_steps(20) == 7
    assert HiresSpec(denoising_strength=0).second_pass_steps(20) == 0
    request = GenerationRequest.build(steps=12, hires={"steps": 5})
    assert request.denoising_steps() == 17


@pytest.mark.parametrize(("spec", "field"), [
    ({"scale": 0}, "hr_scale"), ({"scale": 20}, "hr_scale"), ({"resize_x": 32}, "hr_resize_x"),
    ({"resize_y": 5000}, "hr_resize_y"), ({"steps": -1}, "hr_second_pass_steps"), ({"upscaler": ""}, "hr_upscaler"),
    ({"denoising_strength": 1.5}, "denoising_strength"), ({"sampler": 3}, "hr_sampler"),
    ({"prompt": 5}, "hr_prompt"), ({"colour": 1}, "hires.colour"),
])
def test_bad_values_name_the_field(spec, field):
    with pytest.raises(RequestError) as caught:
        GenerationRequest.build(hires=spec)
    assert caught.value.field == field


def test_a_target_over_the_size_limit_is_refused():
    with pytest.raises(RequestError, match="5120x5120") as caught:
        GenerationRequest.build(width=2048, height=2048, hires={"scale": 2.5})
    assert caught.value.field == "hr_scale"
    with pytest.raises(RequestError) as caught:
        GenerationRequest.build(width=512, height=2048, hires={"resize_x": 2048})
    assert caught.value.field == "hr_resize_x"


def test_hires_is_for_txt2img_only():
    from PIL import Image

    source = ImageSource(images=[Image.new("RGB", (64, 64))])
    with pytest.raises(RequestError) as caught:
        GenerationRequest.build(source=source, hires=HiresSpec())
    assert caught.value.field == "enable_hr"


def test_use_same_and_blank_mean_the_first_pass():
    spec = GenerationRequest.build(hires={"sampler": "", "schedule": "use same"}).hires
    assert (spec.sampler, spec.schedule) == ("Use same", "Use same")


def test_latent_modes_are_a1111s():
    assert list(LATENT_MODES)[0] == "Latent" and len(LATENT_MODES) == 6
    assert latent_mode("latent (nearest-exact)") == ("nearest-exact", False)
    assert latent_mode("Lanczos") is None
