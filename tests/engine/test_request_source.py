"""The img2img / inpainting parts of the one request: validation names the field, A1111 indices are accepted."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from sdlocal.engine.images import decode_image
from sdlocal.engine.request import GenerationRequest, RequestError


def _img(size=(64, 64), mode="RGB"):
    return Image.new(mode, size, 128)


def _source(**extra):
    return {"images": [_img()], **extra}


def test_mode_and_kind_follow_the_source():
    assert GenerationRequest.build().mode == "txt2img"
    img2img = GenerationRequest.build(source=_source())
    assert (img2img.mode, img2img.output_kind) == ("img2img", "img2img")
    inpaint = GenerationRequest.build(source=_source(mask={"image": _img(mode="L")}))
    assert (inpaint.mode, inpaint.output_kind) == ("inpaint", "img2img")


@pytest.mark.parametrize(("steps", "strength", "expected"), [(20, 0.75, 15), (20, 1.0, 19), (20, 0.999, 19),
                                                               (20, 0.0, 1), (7, 0.5, 3), (1, 1.0, 1)])
def test_denoising_steps_follow_a1111(steps, strength, expected):
    request = GenerationRequest.build(steps=steps, source=_source(denoising_strength=strength))
    assert request.denoising_steps() == expected


def test_a1111_indices_become_names():
    request = GenerationRequest.build(source=_source(resize_mode=2, mask={"image": _img(mode="L"), "content": 3,
                                                                          "area": 1, "invert": 1}))
    assert request.source.resize_mode == "Resize and fill"
    assert (request.source.mask.content, request.source.mask.area, request.source.mask.invert) == (
        "latent nothing", "Only masked", True)


@pytest.mark.parametrize(("source", "field"), [
    ({"images": []}, "init_images"),
    ({"images": ["not an image"]}, "init_images"),
    ({"images": [_img()], "denoising_strength": 1.5}, "denoising_strength"),
    ({"images": [_img()], "denoising_strength": float("nan")}, "denoising_strength"),
    ({"images": [_img()], "resize_mode": 7}, "resize_mode"),
    ({"images": [_img()], "mask": {"image": _img((32, 64), "L")}}, "mask"),
    ({"images": [_img()], "mask": {"image": _img(mode="L"), "blur_x": -1}}, "mask_blur_x"),
    ({"images": [_img()], "mask": {"image": _img(mode="L"), "content": "paint"}}, "inpainting_fill"),
    ({"images": [_img()], "mask": {"image": _img(mode="L"), "colour": 1}}, "mask.colour"),
    ({"images": [_img()], "bogus": 1}, "source.bogus"),
])
def test_bad_source_values_name_their_field(source, field):
    with pytest.raises(RequestError) as caught:
        GenerationRequest.build(source=source)
    assert caught.value.field == field


def test_to_dict_leaves_pixels_out():
    values = GenerationRequest.build(source=_source(mask={"image": _img(mode="L")})).to_dict()
    assert values["source"]["images"] == 1
    assert "image" not in values["source"]["mask"]


def _b64(image, fmt="PNG"):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def test_decode_image_accepts_raw_and_data_url_base64():
    raw = _b64(_img((40, 24)))
    assert decode_image(raw, "init_images").size == (40, 24)
    assert decode_image("data:image/png;base64," + raw, "init_images").size == (40, 24)
    assert decode_image(_b64(_img(mode="RGBA"), "PNG"), "mask").mode == "RGBA"


@pytest.mark.parametrize("data", ["http://example.com/a.png", "https://x/y.png", "@@@not base64@@@",
                                  base64.b64encode(b"not an image").decode(), "", 12])
def test_decode_image_refuses_with_the_field(data):
    with pytest.raises(RequestError) as caught:
        decode_image(data, "init_images")
    assert caught.value.field == "init_images"


def test_decode_image_refuses_huge_images_before_decoding_them():
    huge = Image.new("L", (9000, 8), 0)
    with pytest.raises(RequestError, match="too large"):
        decode_image(_b64(huge), "mask")
