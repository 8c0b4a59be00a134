"""``POST /sdapi/v1/img2img`` as AUTOMATIC1111 clients use it: fields, defaults, the translation to the engine's
request, the response, and a 422 naming the field for every bad image or value."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
import pytest
from PIL import Image

from sdlocal.api.img2img import IMG2IMG_UNSUPPORTED, decode_sources, to_img2img_request
from sdlocal.api.models import Img2ImgRequest, Txt2ImgRequest
from sdlocal.api.translate import UNSUPPORTED, ignored_fields
from sdlocal.engine.request import RequestError
from tests.api.conftest import Server, decode_png


def png_b64(size: tuple[int, int] = (64, 64), color: Any = (200, 40, 40), mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def half_mask(size: tuple[int, int] = (64, 64)) -> str:
    """White (repaint) on the right half, black elsewhere."""
    image = Image.new("L", size, 0)
    image.paste(255, (size[0] // 2, 0, size[0], size[1]))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def small(**values: Any) -> dict[str, Any]:
    body = {"init_images": [png_b64()], "prompt": "a red cube", "steps": 4, "width": 64, "height": 64,
            "seed": 1234, "sampler_name": "Euler", "cfg_scale": 7}
    body.update(values)
    return body


def translate(options: dict[str, Any] | None = None, **values: Any) -> Any:
    """Body -> validated GenerationRequest, as the route does it (decode, translate, validate)."""
    body = Img2ImgRequest(**small(**values))
    images, mask = decode_sources(body)
    request = to_img2img_request(body, options or {}, dict(body.override_settings or {}), images, mask)
    return request.validate()


# ---------------------------------------------------------------------------------------------- translation
def test_without_a_mask_it_is_img2img_with_a1111_api_defaults() -> None:
    request = translate()
    assert request.mode == "img2img" and request.source.mask is None
    assert request.source.denoising_strength == 0.75 and request.source.resize_mode == "Just resize"
    assert request.source.images[0].size == (64, 64) and request.source.images[0].getpixel((0, 0)) == (200, 40, 40)
    assert (request.prompt, request.steps, request.sampler, request.seed) == ("a red cube", 4, "Euler", 1234)
    assert request.denoising_steps() == 3  # int(4 x 0.75)
    assert translate(mask="").source.mask is None  # an empty mask is no mask, as in A1111


def test_with_a_mask_the_api_defaults_are_fill_only_masked_no_padding_blur_4() -> None:
    request = translate(mask=half_mask())
    mask = request.source.mask
    assert request.mode == "inpaint" and request.output_kind == "img2img"
    assert (mask.content, mask.area, mask.padding) == ("fill", "Only masked", 0)
    assert (mask.blur_x, mask.blur_y, mask.invert, mask.conditional_weight) == (4, 4, False, 1.0)
    assert mask.image.getpixel((0, 0)) == 0 and mask.image.getpixel((63, 0)) == 255


def test_every_img2img_field_reaches_the_request() -> None:
    request = translate(mask=half_mask(), denoising_strength=0.4, resize_mode=1, inpainting_fill=2,
                        inpaint_full_res=False, inpaint_full_res_padding=32, inpainting_mask_invert=1,
                        mask_blur_x=3, mask_blur_y=7, override_settings={"inpainting_mask_weight": 0.25})
    source, mask = request.source, request.source.mask
    assert (source.denoising_strength, source.resize_mode) == (0.4, "Crop and resize")
    assert (mask.content, mask.area, mask.padding, mask.invert) == ("latent noise", "Whole picture", 32, True)
    assert (mask.blur_x, mask.blur_y, mask.conditional_weight) == (3, 7, 0.25)
    assert translate(resize_mode="Resize and fill").source.resize_mode == "Resize and fill"  # names work too
    assert translate(resize_mode="3").source.resize_mode == "Just resize (latent upscale)"  # and indices as text
    assert translate(mask=half_mask(), inpainting_fill=3).source.mask.content == "latent nothing"


def test_mask_blur_when_sent_sets_both_axes() -> None:
    mask = translate(mask=half_mask(), mask_blur=9, mask_blur_x=1, mask_blur_y=2).source.mask
    assert (mask.blur_x, mask.blur_y) == (9, 9)
    mask = translate(mask=half_mask(), mask_blur_x=1, mask_blur_y=2).source.mask
    assert (mask.blur_x, mask.blur_y) == (1, 2)


def test_the_conditional_mask_weight_comes_from_the_option_unless_overridden() -> None:
    assert translate({"inpainting_mask_weight": 0.5}, mask=half_mask()).source.mask.conditional_weight == 0.5
    overridden = translate({"inpainting_mask_weight": 0.5}, mask=half_mask(),
                           override_settings={"inpainting_mask_weight": 0.0})
    assert overridden.source.mask.conditional_weight == 0.0


def test_init_images_decode_with_or_without_a_data_url_prefix() -> None:
    raw = png_b64(color=(1, 2, 3))
    body = Img2ImgRequest(init_images=[raw, "data:image/png;base64," + raw], mask="data:image/png;base64," + raw)
    images, mask = decode_sources(body)
    assert [image.getpixel((5, 5)) for image in images] == [(1, 2, 3), (1, 2, 3)] and mask.size == (64, 64)


def test_a_bad_init_image_names_the_field_and_which_one() -> None:
    body = Img2ImgRequest(init_images=[png_b64(), "not base64 at all!"])
    with pytest.raises(RequestError) as caught:
        decode_sources(body)
    assert caught.value.field == "init_images" and "init_images[1]" in caught.value.allowed


WEBUIAPI_IMG2IMG_DEFAULTS = {  # what webuiapi 0.9.17's img2img() sends when only images and a prompt are given
    "resize_mode": 0, "denoising_strength": 0.75, "mask_blur": 4, "inpainting_fill": 0, "inpaint_full_res": True,
    "inpaint_full_res_padding": 0, "inpainting_mask_invert": 0, "initial_noise_multiplier": 1, "styles": [],
    "seed": -1, "subseed": -1, "subseed_strength": 0, "seed_resize_from_h": 0, "seed_resize_from_w": 0,
    "batch_size": 1, "n_iter": 1, "steps": 20, "cfg_scale": 7.0, "image_cfg_scale": 1.5, "width": 512,
    "height": 512, "restore_faces": False, "tiling": False, "do_not_save_samples": False, "do_not_save_grid": False,
    "negative_prompt": "", "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1,
    "override_settings": {}, "override_settings_restore_afterwards": True, "sampler_name": "Euler a",
    "scheduler": "automatic", "sampler_index": "Euler a", "include_init_images": False, "script_name": None,
    "script_args": [], "send_images": True, "save_images": False, "alwayson_scripts": {},
}


def test_unused_fields_are_named_only_when_they_ask_for_something() -> None:
    """webuiapi's defaults ask for nothing sdlocal skips, except eta and the image CFG scale (which sdlocal's
    samplers and models never use); a real request for churn, a seed resize or face restoration is named."""
    body = Img2ImgRequest(init_images=[png_b64()], **WEBUIAPI_IMG2IMG_DEFAULTS)
    assert ignored_fields(body, IMG2IMG_UNSUPPORTED) == ["image_cfg_scale", "eta"]
    asking = Img2ImgRequest(s_churn=0.5, s_noise=1.003, seed_resize_from_h=512, initial_noise_multiplier=0.9,
                            restore_faces=True, tiling=True, latent_mask=png_b64(),
                            refiner_checkpoint="x", subseed_strength=0.2, alwayson_scripts={"ADetailer": {}},
                            script_name="x/y/z plot")  # scripts are honoured: tests/api/test_scripts_api.py
    assert set(ignored_fields(asking, IMG2IMG_UNSUPPORTED)) == {
        "s_churn", "s_noise", "seed_resize_from_h", "initial_noise_multiplier", "restore_faces", "tiling",
        "latent_mask", "refiner_checkpoint", "subseed_strength", "alwayson_scripts"}
    # txt2img, which shares the table: webuiapi's restore_faces=False and styles=[] are not warnings either
    # (styles are honoured: tests/api/test_styles_api.py).
    quiet = Txt2ImgRequest(restore_faces=False, tiling=False, styles=[], script_name=None)
    assert ignored_fields(quiet, UNSUPPORTED) == []


# ---------------------------------------------------------------------------------------------- errors
def _big_png() -> str:
    buffer = io.BytesIO()
    Image.new("L", (8200, 1)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.mark.parametrize(("values", "field", "mentions"), [
    ({"init_images": ["%%% not base64"]}, "init_images", "base64"),
    ({"init_images": [base64.b64encode(b"plain text, not an image").decode()]}, "init_images", "not an image"),
    ({"init_images": ["https://example.com/cat.png"]}, "init_images", "URL"),
    ({"init_images": ["data:image/png;base64," + base64.b64encode(b"GIF89a junk").decode()]}, "init_images",
     "not an image"),
    ({"init_images": [_big_png()]}, "init_images", "too large"),
    ({"init_images": []}, "init_images", "at least one"),
    ({"init_images": None}, "init_images", "at least one"),
    ({"init_images": [png_b64()] * 17}, "init_images", "at most"),
    ({"init_images": [5]}, "init_images.0", "string"),
    ({"mask": half_mask((32, 64))}, "mask", "size of its image"),
    ({"mask": "https://example.com/mask.png"}, "mask", "URL"),
    ({"mask": "bm90IGFuIGltYWdl"}, "mask", "not an image"),
    ({"denoising_strength": 1.5}, "denoising_strength", "0 to 1"),
    ({"denoising_strength": None}, "denoising_strength", "number"),
    ({"resize_mode": 9}, "resize_mode", "Just resize"),
    ({"mask": half_mask(), "inpainting_fill": 7}, "inpainting_fill", "latent nothing"),
    ({"mask": half_mask(), "mask_blur": -1}, "mask_blur", "-1"),
    ({"mask": half_mask(), "mask_blur_y": 999}, "mask_blur_y", "999"),
    ({"mask": half_mask(), "inpainting_mask_invert": 2}, "inpainting_mask_invert", "true or false"),
    ({"mask": half_mask(), "inpaint_full_res_padding": 9999}, "inpaint_full_res_padding", "9999"),
    ({"mask": half_mask(), "override_settings": {"inpainting_mask_weight": 2}},
     "override_settings.inpainting_mask_weight", "0 to 1"),
    ({"width": 100}, "width", "multiple of 8"),
    ({"sampler_name": "Nope"}, "sampler_name", "Nope"),
])
def test_a_bad_image_or_value_is_422_naming_the_field(client: httpx.Client, values: dict, field: str,
                                                      mentions: str) -> None:
    response = client.post("/sdapi/v1/img2img", json=small(**values))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field and body["detail"].startswith(field) and mentions in body["detail"], body


def test_the_route_is_in_the_openapi_description(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    assert "/sdapi/v1/img2img" in schema["paths"]
    fields = schema["components"]["schemas"]["Img2ImgRequest"]["properties"]
    assert fields["denoising_strength"]["default"] == 0.75 and fields["inpaint_full_res"]["default"] is True
    assert fields["inpainting_fill"]["default"] == 0 and fields["mask_blur"]["default"] == 4


def test_a_bad_image_does_not_reach_the_queue(client: httpx.Client, api: Server) -> None:
    before = dict(api.services.queue.jobs_finished)
    assert client.post("/sdapi/v1/img2img", json=small(init_images=["%%%"])).status_code == 422
    assert dict(api.services.queue.jobs_finished) == before
    info = json.loads(client.post("/sdapi/v1/txt2img", json={"prompt": "p", "steps": 1, "width": 64,
                                                               "height": 64}).json()["info"])
    assert info["steps"] == 1  # and the server goes on


# ---------------------------------------------------------------------------------------------- end to end
def noise_b64(seed: int, size: tuple[int, int] = (64, 64)) -> str:
    """A seeded noise picture: every pixel differs, so a kept pixel is told from a repainted one."""
    import random

    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def post(client: httpx.Client, **values: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    response = client.post("/sdapi/v1/img2img", json=small(**values))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"images", "parameters", "info"}
    return body, json.loads(body["info"])


def test_img2img_answers_as_a1111_does(client: httpx.Client) -> None:
    body, info = post(client, batch_size=2, eta=0.5, s_churn=0.0)
    txt2img_info = json.loads(client.post("/sdapi/v1/txt2img", json={"prompt": "p", "steps": 1, "width": 64,
                                                                       "height": 64}).json()["info"])
    assert set(txt2img_info) <= set(info)
    assert info["denoising_strength"] == 0.75 and info["all_seeds"] == [1234, 1235]
    assert info["prompt"] == "a red cube" and info["steps"] == 4 and info["sampler_name"] == "Euler"
    assert info["warnings"] == ["eta is not supported by sdlocal and was ignored"]
    assert len(body["images"]) == 2
    for image, infotext, seed in zip(body["images"], info["infotexts"], [1234, 1235], strict=True):
        png = decode_png(image)
        assert png.size == (64, 64) and png.info["parameters"] == infotext
        assert "Denoising strength: 0.75" in infotext and f"Seed: {seed}," in infotext
    echoed = body["parameters"]
    assert echoed["init_images"] is None and echoed["mask"] is None  # A1111 drops them unless asked
    assert echoed["denoising_strength"] == 0.75 and echoed["inpainting_fill"] == 0 and echoed["eta"] == 0.5


@pytest.mark.parametrize("values", [{"steps": 1}, {"steps": 1, "mask": half_mask()},
                                    {"steps": 2, "denoising_strength": 1.0}])
def test_the_fewest_steps_and_full_strength_run(client: httpx.Client, values: dict[str, Any]) -> None:
    _, info = post(client, send_images=False, **values)
    assert info["steps"] == values["steps"] and len(info["infotexts"]) == 1


def test_include_init_images_echoes_the_images_and_the_mask(client: httpx.Client) -> None:
    init, mask = png_b64(), half_mask()
    body, _ = post(client, init_images=[init], mask=mask, include_init_images=True, send_images=False)
    assert body["parameters"]["init_images"] == [init] and body["parameters"]["mask"] == mask
    assert body["images"] == []


def test_the_init_image_decides_the_result_and_the_same_request_gives_the_same_pixels(client: httpx.Client) -> None:
    first = post(client, init_images=[noise_b64(1)])[0]["images"][0]
    again = post(client, init_images=[noise_b64(1)])[0]["images"][0]
    other = post(client, init_images=[noise_b64(2)])[0]["images"][0]
    assert decode_png(first).tobytes() == decode_png(again).tobytes()
    assert decode_png(first).tobytes() != decode_png(other).tobytes()


def test_inpainting_keeps_the_pixels_outside_the_blurred_mask_and_reports_the_mask(client: httpx.Client) -> None:
    init = noise_b64(3)
    body, info = post(client, init_images=["data:image/png;base64," + init], mask=half_mask(), mask_blur=2,
                      denoising_strength=1.0)
    result, original = decode_png(body["images"][0]).convert("RGB"), decode_png(init)
    assert result.size == original.size
    left = (0, 0, 16, 64)  # the mask starts at x=32; a blur of sigma 2 reaches far less than 16 px
    assert result.crop(left).tobytes() == original.crop(left).tobytes()
    right = (40, 0, 64, 64)
    assert result.crop(right).tobytes() != original.crop(right).tobytes()
    assert (info["mask_blur_x"], info["mask_blur_y"], info["inpainting_fill"]) == (2, 2, 0)
    assert info["inpaint_full_res"] is True and info["inpaint_full_res_padding"] == 0
    assert info["is_using_inpainting_conditioning"] is False  # the tiny model has 4 input channels
    extra = info["extra_generation_params"]
    assert extra["Mask blur"] == 2 and extra["Masked content"] == "fill"
    assert extra["Inpaint area"] == "Only masked" and extra["Masked area padding"] == 0
    assert "Mask blur: 2" in info["infotexts"][0] and "Denoising strength: 1" in info["infotexts"][0]


def test_the_webuiapi_client_works_unchanged(api: Server) -> None:
    """webuiapi (the A1111 client most scripts use), as its users call it: every field it sends is accepted."""
    import webuiapi

    client = webuiapi.WebUIApi(baseurl=f"{api.url}/sdapi/v1", sampler="Euler", steps=4)
    init = Image.new("RGB", (64, 64), (30, 160, 90))
    result = client.img2img(images=[init], prompt="a green field", seed=5, width=64, height=64,
                            denoising_strength=0.5, cfg_scale=6)
    assert len(result.images) == 1 and result.images[0].size == (64, 64)
    assert result.info["seed"] == 5 and result.info["denoising_strength"] == 0.5 and result.info["cfg_scale"] == 6
    assert result.parameters["init_images"] is None and result.parameters["image_cfg_scale"] == 1.5
    assert sorted(result.info["warnings"]) == ["eta is not supported by sdlocal and was ignored",
                                               "image_cfg_scale is not supported by sdlocal and was ignored"]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    masked = client.img2img(images=[init], mask_image=mask, prompt="a green field", seed=5, width=64, height=64,
                            inpainting_fill=1, mask_blur=3, inpaint_full_res=False)
    assert len(masked.images) == 1 and masked.images[0].size == (64, 64)
    info = masked.info
    assert (info["inpainting_fill"], info["mask_blur_x"], info["inpaint_full_res"]) == (1, 3, False)
    assert info["extra_generation_params"]["Masked content"] == "original"


def test_images_are_saved_only_when_asked_as_in_txt2img(client: httpx.Client, api: Server) -> None:
    outputs = api.data_dir / "outputs"
    before = set(outputs.rglob("*.png")) if outputs.exists() else set()
    post(client, seed=901)
    assert (set(outputs.rglob("*.png")) if outputs.exists() else set()) == before
    _, info = post(client, seed=902, mask=half_mask(), save_images=True)
    new = set(outputs.rglob("*.png")) - before
    assert len(new) == 1 and [str(path) for path in new] == info["saved_paths"]
    saved = new.pop()
    # The folder (outputs/img2img/<date>/ for img2img and inpainting, as A1111) is the queue's choice (jobs.py).
    assert saved.name.endswith("-902.png") and saved.parent.parent.parent == outputs
    assert Image.open(saved).info["parameters"] == info["infotexts"][0]
    _, info = post(client, seed=903, save_images=True, do_not_save_samples=True)
    assert info["saved_paths"] == []


def test_a_9_channel_model_takes_the_conditional_mask_weight_from_override_settings(client: httpx.Client,
                                                                                   api: Server) -> None:
    from sdlocal.engine.synthetic import save_tiny_model

    save_tiny_model(api.models_dir / "tiny-inpaint", family="sd1", fmt="diffusers", inpainting=True)
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    previous = api.services.engine.current_model.name
    overrides = {"sd_model_checkpoint": "tiny-inpaint", "inpainting_mask_weight": 0.3}
    _, info = post(client, mask=half_mask(), override_settings=overrides)
    assert info["sd_model_name"] == "tiny-inpaint" and info["is_using_inpainting_conditioning"] is True
    assert info["extra_generation_params"]["Conditional mask weight"] == 0.3
    assert "Conditional mask weight: 0.3" in info["infotexts"][0]
    assert not [warning for warning in info["warnings"] if "inpainting_mask_weight" in warning]
    assert api.services.engine.current_model.name == previous  # the override is undone, as A1111 does


def test_the_mask_weight_is_an_option_that_is_saved_and_used(client: httpx.Client, api: Server) -> None:
    from sdlocal.api.options import ApiOptions

    try:
        response = client.post("/sdapi/v1/options", json={"inpainting_mask_weight": 0.4})
        assert response.status_code == 200 and response.json()["applied"] == {"inpainting_mask_weight": 0.4}
        assert client.get("/sdapi/v1/options").json()["inpainting_mask_weight"] == 0.4
        assert json.loads((api.data_dir / "api-options.json").read_text())["inpainting_mask_weight"] == 0.4
        assert ApiOptions(api.services).values["inpainting_mask_weight"] == 0.4  # what the next start reads
        bad = client.post("/sdapi/v1/options", json={"inpainting_mask_weight": 1.5})
        assert bad.status_code == 422 and bad.json()["field"] == "inpainting_mask_weight"
        _, info = post(client, mask=half_mask(), override_settings={"inpainting_mask_weight": 0.7},
                       override_settings_restore_afterwards=False)
        assert not [warning for warning in info["warnings"] if "inpainting_mask_weight" in warning]
        assert client.get("/sdapi/v1/options").json()["inpainting_mask_weight"] == 0.7  # kept, as asked
    finally:
        client.post("/sdapi/v1/options", json={"inpainting_mask_weight": 1.0})
