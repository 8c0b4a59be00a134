"""txt2img's hires fix fields in the API: A1111's names and defaults become the engine's HiresSpec, bad values are
422 naming the field, and a hires run through the server gives the larger PNG with A1111's infotext keys."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import httpx
import pytest

from sdlocal.api.models import Txt2ImgRequest
from sdlocal.api.translate import to_hires_spec
from sdlocal.engine.request import USE_SAME
from tests.api.conftest import decode_png

HIRES_ENGINE = importlib.util.find_spec("sdlocal.engine.hires") is not None


def test_no_enable_hr_means_no_hires_part() -> None:
    assert to_hires_spec(Txt2ImgRequest(hr_scale=3, hr_upscaler="Lanczos")) is None


def test_a1111s_api_defaults_fill_what_the_body_leaves_out() -> None:
    spec = to_hires_spec(Txt2ImgRequest(enable_hr=True))
    assert spec is not None
    assert (spec.scale, spec.resize_x, spec.resize_y, spec.steps) == (2.0, 0, 0, 0)
    assert spec.upscaler == "Latent" and spec.denoising_strength == 0.75
    assert spec.sampler == spec.schedule == USE_SAME and spec.prompt == spec.negative_prompt == ""


def test_every_hr_field_reaches_the_spec() -> None:
    spec = to_hires_spec(Txt2ImgRequest(
        enable_hr=True, hr_scale=1.5, hr_resize_x=640, hr_resize_y=0, hr_upscaler="Latent (bicubic)",
        hr_second_pass_steps=7, denoising_strength=0.4, hr_sampler_name="k_dpmpp_2m", hr_scheduler="karras",
        hr_prompt="sharp", hr_negative_prompt="blurry"))
    assert spec is not None
    assert (spec.scale, spec.resize_x, spec.upscaler, spec.steps) == (1.5, 640, "Latent (bicubic)", 7)
    assert (spec.denoising_strength, spec.sampler, spec.schedule) == (0.4, "DPM++ 2M", "Karras")
    assert (spec.prompt, spec.negative_prompt) == ("sharp", "blurry")


@pytest.mark.parametrize("same", ["Use same sampler", "use same", "", None])
def test_a1111s_use_same_spellings_mean_the_first_pass(same: str | None) -> None:
    spec = to_hires_spec(Txt2ImgRequest(enable_hr=True, hr_sampler_name=same, hr_scheduler=same))
    assert spec is not None and spec.sampler == spec.schedule == USE_SAME


@pytest.mark.parametrize(("fields", "field"), [
    ({"hr_scale": 0}, "hr_scale"),
    ({"hr_scale": 20}, "hr_scale"),
    ({"hr_resize_x": 5000}, "hr_resize_x"),
    ({"hr_resize_y": 32}, "hr_resize_y"),
    ({"hr_second_pass_steps": -1}, "hr_second_pass_steps"),
    ({"denoising_strength": 1.5}, "denoising_strength"),
    ({"width": 2048, "height": 2048, "hr_scale": 4}, "hr_scale"),  # 8192 is over the size limit
    ({"hr_upscaler": ""}, "hr_upscaler"),
])
def test_bad_hires_values_are_422_naming_the_field(client: httpx.Client, fields: dict[str, Any], field: str) -> None:
    body = {"prompt": "x", "steps": 1, "width": 64, "height": 64, "enable_hr": True, **fields}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(field), response.json()


def test_hires_fields_without_enable_hr_change_nothing(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                                      "hr_scale": 20})
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert decode_png(response.json()["images"][0]).size == (64, 64)
    assert info["denoising_strength"] is None and not any("enable_hr" in note for note in info["warnings"])


@pytest.mark.skipif(not HIRES_ENGINE, reason="the engine's hires fix (sdlocal.engine.hires) is not on this branch")
def test_a_64_pixel_hires_2x_gives_a_128_pixel_png_with_a1111s_keys(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64, "seed": 3, "enable_hr": True,
        "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 2, "denoising_strength": 0.6})
    assert response.status_code == 200, response.text
    image = decode_png(response.json()["images"][0])
    assert image.size == (128, 128)
    text = image.info["parameters"]
    assert "Hires upscale: 2" in text and "Hires upscaler: Latent" in text and "Denoising strength: 0.6" in text
    assert "Hires steps: 2" in text
    info = json.loads(response.json()["info"])
    assert info["denoising_strength"] == 0.6
    assert info["extra_generation_params"]["Hires upscale"] == 2
    assert info["extra_generation_params"]["Hires upscaler"] == "Latent"


@pytest.mark.skipif(not HIRES_ENGINE, reason="the engine's hires fix (sdlocal.engine.hires) is not on this branch")
def test_an_unknown_hires_upscaler_is_422_with_the_known_names(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                                      "enable_hr": True, "hr_upscaler": "4x-NoSuchModel"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("hr_upscaler") and "Lanczos" in detail  # the known names are listed
