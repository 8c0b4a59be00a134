"""Hires fix through the engine on the tiny models: sizes, A1111's second-pass steps, upscalers, prompts,
samplers, strength 0, interrupt, determinism and the infotext."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdlocal.engine import RequestError
from sdlocal.engine.hires import crop_box, schedule_for
from sdlocal.engine.infotext import infotext_to_hires_fields, parse_infotext
from sdlocal.engine.request import HiresSizes, RunControl

from .conftest import pixels


def _hires(**spec):
    return {"upscaler": "Latent", "steps": 3, "denoising_strength": 0.5, **spec}


@pytest.mark.parametrize(("steps", "strength"), [(20, 0.7), (3, 0.5), (1, 1.0), (10, 0.999), (7, 0.05), (5, 0.33)])
def test_the_schedule_is_a1111s_and_diffusers_runs_exactly_n_steps(steps, strength):
    total, given = schedule_for(steps, strength)
    assert total == max(steps, int(steps / min(strength, 0.999)))
    assert given <= 1.0 and min(int(total * given), total) == steps  # diffusers' get_timesteps cut


def test_a_very_low_strength_caps_the_schedule_at_the_training_timesteps(engine, request_for):
    assert schedule_for(150, 0.01, 1000) == (1000, 150.5 / 1000)
    seen = []
    result = engine.generate(request_for(steps=2, hires=_hires(steps=12, denoising_strength=0.01)),
                             on_progress=seen.append)
    assert len(seen) == 14 and result.images[0].image.size == (128, 128)


def test_crop_box_is_centred_as_a1111_rounds_it():
    assert crop_box(HiresSizes(1024, 1536, 1024, 1024), 8) == (32, 160, 0, 128)
    assert crop_box(HiresSizes(1048, 1024, 1024, 1024), 8) == (0, 128, 1, 129)  # 3 cells: 1 left, 2 right


@pytest.mark.parametrize("model", ["tiny-sd1-diffusers", "tiny-sdxl-diffusers"])
def test_final_size_and_one_progress_count_over_both_passes(engine, request_for, model):
    seen = []
    result = engine.generate(request_for(model=model, steps=4, hires=_hires()), on_progress=seen.append)
    assert result.images[0].image.size == (128, 128)
    assert [p.step for p in seen] == [1, 2, 3, 4, 5, 6, 7]  # 4 first-pass steps, then exactly 3
    assert {p.total_steps for p in seen} == {7}
    assert result.request.hires is not None


def test_second_pass_steps_zero_means_the_first_pass_steps(engine, request_for):
    seen = []
    engine.generate(request_for(steps=3, hires=_hires(steps=0, denoising_strength=0.3)), on_progress=seen.append)
    assert [p.step for p in seen] == [1, 2, 3, 4, 5, 6]


def test_same_request_same_pixels_and_batch_image_i_gets_seed_plus_i(engine, request_for):
    batch = engine.generate(request_for(seed=21, batch_size=2, hires=_hires()))
    again = engine.generate(request_for(seed=21, batch_size=2, hires=_hires()))
    single = engine.generate(request_for(seed=22, hires=_hires()))
    assert np.array_equal(pixels(batch.images[0].image), pixels(again.images[0].image))
    assert np.abs(pixels(batch.images[1].image) - pixels(single.images[0].image)).max() <= 2
    assert not np.array_equal(pixels(batch.images[0].image), pixels(batch.images[1].image))


@pytest.mark.parametrize(("resize", "size"), [((128, 96), (128, 96)), ((96, 128), (96, 128)), ((128, 0), (128, 128)),
                                              ((0, 96), (96, 96))])
def test_resize_sides_give_the_final_size(engine, request_for, resize, size):
    spec = _hires(resize_x=resize[0], resize_y=resize[1])
    result = engine.generate(request_for(hires=spec))
    assert result.images[0].image.size == size
    params = parse_infotext(result.images[0].infotext)
    assert params["Hires resize"] == f"{resize[0]}x{resize[1]}" and params["Size"] == "64x64"


@pytest.mark.parametrize("upscaler", ["None", "Lanczos", "Nearest", "Latent (nearest-exact)",
                                      "Latent (bicubic antialiased)"])
def test_each_builtin_and_latent_upscaler_runs(engine, request_for, upscaler):
    result = engine.generate(request_for(hires=_hires(upscaler=upscaler)))
    assert result.images[0].image.size == (128, 128)
    assert infotext_to_hires_fields(parse_infotext(result.images[0].infotext))["upscaler"] == upscaler


def test_pixel_and_latent_upscalers_differ(engine, request_for):
    latent = engine.generate(request_for(hires=_hires(upscaler="Latent"))).images[0].image
    lanczos = engine.generate(request_for(hires=_hires(upscaler="Lanczos"))).images[0].image
    assert not np.array_equal(pixels(latent), pixels(lanczos))


def test_strength_zero_is_the_upscaled_picture_with_no_second_pass(engine, request_for):
    seen = []
    plain = engine.generate(request_for(steps=3)).images[0].image
    result = engine.generate(request_for(steps=3, hires=_hires(upscaler="Lanczos", denoising_strength=0.0)),
                             on_progress=seen.append)
    assert [p.step for p in seen] == [1, 2, 3]
    expected = plain.resize((128, 128), Image.Resampling.LANCZOS)
    assert np.array_equal(pixels(result.images[0].image), pixels(expected))
    latent = engine.generate(request_for(steps=3, hires=_hires(denoising_strength=0.0))).images[0].image
    assert latent.size == (128, 128)


def test_strength_zero_crops_the_upscaled_picture_centred(engine, request_for):
    plain = engine.generate(request_for(steps=2)).images[0].image
    spec = _hires(upscaler="Nearest", denoising_strength=0.0, resize_x=128, resize_y=96)
    result = engine.generate(request_for(steps=2, hires=spec)).images[0].image
    expected = plain.resize((128, 128), Image.Resampling.NEAREST).crop((0, 16, 128, 112))
    assert np.array_equal(pixels(result), pixels(expected))


def test_a_hires_sampler_changes_the_second_pass_and_is_written(engine, request_for):
    same = engine.generate(request_for(hires=_hires()))
    other = engine.generate(request_for(hires=_hires(sampler="DPM++ 2M", schedule="Karras")))
    assert not np.array_equal(pixels(same.images[0].image), pixels(other.images[0].image))
    assert "Hires sampler: DPM++ 2M, Hires schedule type: Karras" in other.images[0].infotext
    assert "Hires sampler" not in same.images[0].infotext


def test_a_hires_prompt_is_used_and_the_same_text_changes_nothing(engine, request_for):
    base = engine.generate(request_for(hires=_hires())).images[0].image
    echoed = engine.generate(request_for(hires=_hires(prompt="a red cube on a table"))).images[0].image
    other = engine.generate(request_for(hires=_hires(prompt="a blue sphere in the sky")))
    assert np.array_equal(pixels(base), pixels(echoed))
    assert not np.array_equal(pixels(base), pixels(other.images[0].image))
    assert "Hires prompt: a blue sphere in the sky" in other.images[0].infotext


def test_a_hires_prompt_with_other_lora_tags_warns(engine, request_for):
    result = engine.generate(request_for(hires=_hires(prompt="a cube <lora:nothing-here:0.5>")))
    assert any("hires prompt" in warning for warning in result.warnings)
    assert len(result.images) == 1


def test_interrupt_in_the_second_pass_drops_the_batch(engine, request_for):
    control = RunControl()

    def press(progress):
        if progress.step == 5:  # the second pass's first step
            control.interrupt()

    result = engine.generate(request_for(steps=4, batch_count=2, hires=_hires()), on_progress=press, control=control)
    assert result.interrupted and result.images == []


@pytest.mark.parametrize(("spec", "field"), [({"upscaler": "4x-NoSuchModel"}, "hr_upscaler"),
                                             ({"sampler": "No Sampler"}, "hr_sampler_name"),
                                             ({"sampler": "Euler", "schedule": "Nope"}, "hr_scheduler")])
def test_bad_hires_names_are_refused_naming_the_field(engine, request_for, spec, field):
    with pytest.raises(RequestError) as caught:
        engine.generate(request_for(hires=_hires(**spec)))
    assert caught.value.field == field


def test_latent_mode_names_in_any_case_are_canonical(engine, request_for):
    request = engine.validate(request_for(hires=_hires(upscaler="latent (BICUBIC)")))
    assert request.hires.upscaler == "Latent (bicubic)"


def test_an_inpainting_model_is_refused_with_the_reason(engine, request_for):
    with pytest.raises(RequestError) as caught:
        engine.generate(request_for(model="tiny-sd1-inpainting", hires=_hires()))
    assert caught.value.field == "enable_hr" and "inpainting" in caught.value.allowed
