"""``POST /sdapi/v1/img2img``: img2img and inpainting with AUTOMATIC1111's API fields, defaults and response.

The route decodes the images (off the event loop: a 50 MB base64 PNG takes a while), translates A1111's fields
to a ``GenerationRequest`` with an ``ImageSource`` (and a ``MaskSpec`` when a ``mask`` is sent), and runs it
through the same ``Runner`` as txt2img, so the queue, the model override, saving and the errors behave alike.
A1111's API defaults are not its UI's: masked content "fill" (``inpainting_fill`` 0), "Only masked"
(``inpaint_full_res`` true) with no padding; ``mask_blur``, when sent, sets both ``mask_blur_x`` and
``mask_blur_y``; the conditional mask weight of 9-channel inpainting models comes from the
``inpainting_mask_weight`` option (``override_settings``), 1.0 by default.
As in A1111, ``parameters`` echoes ``init_images`` and ``mask`` only with ``include_init_images``; otherwise
they are null there.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sdlocal.api.cached import answer
from sdlocal.api.models import Img2ImgRequest, Img2ImgResponse
from sdlocal.api.scripts import script_call
from sdlocal.api.sdapi import Runner, refuse_bad_values, request_error
from sdlocal.api.translate import UNSUPPORTED, build_info, infotext_value, to_generation_request
from sdlocal.engine.request import (
    INPAINT_AREAS,
    MASKED_CONTENT,
    MAX_INIT_IMAGES,
    GenerationRequest,
    GenerationResult,
    ImageSource,
    MaskSpec,
    RequestError,
)
from sdlocal.jobs import Job

MASK_WEIGHT = "inpainting_mask_weight"  # A1111's option for the conditional mask weight

# Fields img2img clients send that sdlocal does not use, with the values that ask for nothing (A1111's
# defaults: no churn, noise multiplier 1, no seed resize...). Any other value is named in ``info.warnings``.
# ``eta`` and ``image_cfg_scale`` are named whenever they are sent: sdlocal's samplers take no eta, and it runs
# no instruct-pix2pix (edit) models, the only ones that use an image CFG scale.
IMG2IMG_UNSUPPORTED: dict[str, Any] = {
    **{name: neutral for name, neutral in UNSUPPORTED.items() if name != "enable_hr"},
    "image_cfg_scale": None, "eta": None, "s_churn": 0.0, "s_tmax": 0.0, "s_tmin": 0.0, "s_noise": 1.0,
    "s_min_uncond": 0.0, "initial_noise_multiplier": 1.0, "latent_mask": None, "seed_resize_from_h": (-1, 0),
    "seed_resize_from_w": (-1, 0),
}

# Infotext keys of the inpainting settings: A1111 reports them in ``info.extra_generation_params`` too.
MASK_INFOTEXT_KEYS = ("Mask blur", "Mask blur X", "Mask blur Y", "Inpaint area", "Masked area padding",
                      "Masked content", "Mask mode", "Conditional mask weight")


def add_img2img_route(router: APIRouter, runner: Runner) -> None:
    """Add ``/img2img`` to the ``/sdapi/v1`` router (its prefix and auth), over the shared ``runner``."""

    @router.post("/img2img", response_model=Img2ImgResponse,
                 summary="Image to image and inpainting (A1111 fields and API defaults)")
    async def img2img(body: Img2ImgRequest, request: Request) -> JSONResponse:
        params = body.model_dump()
        # The images are checked by decoding them; the rest, free-form parts included, here.
        refuse_bad_values({key: value for key, value in params.items() if key not in ("init_images", "mask")})
        overrides = dict(body.override_settings or {})
        script = script_call(body, runner, error_names(body))  # an unknown script is refused before decoding
        try:
            images, mask = await anyio.to_thread.run_sync(decode_sources, body)
        except RequestError as exc:
            raise request_error(exc) from None
        generation = runner.build(lambda: to_img2img_request(body, runner.options.snapshot(), overrides, images, mask,
                                                             runner.styles))
        encoded, info = await answer(runner, body, generation, request, overrides,
                                     lambda job, result: img2img_info(body, result, job), names=error_names(body),
                                     plan=script.plan if script else None)
        if not body.include_init_images:
            params["init_images"], params["mask"] = None, None
        return JSONResponse({"images": encoded, "parameters": params, "info": json.dumps(info)})


def decode_sources(body: Img2ImgRequest) -> tuple[list[Any], Any]:
    """The init images and the mask as PIL images; ``RequestError`` naming ``init_images`` (and which one) or
    ``mask``. A missing or empty ``mask`` means img2img, as in A1111."""
    from sdlocal.engine.images import decode_image

    sources = body.init_images or []
    if len(sources) > MAX_INIT_IMAGES:
        raise RequestError("init_images", f"<{len(sources)} images>", f"must hold at most {MAX_INIT_IMAGES}")
    images = []
    for index, data in enumerate(sources):
        try:
            images.append(decode_image(data, "init_images"))
        except RequestError as exc:
            which = f" (init_images[{index}])" if len(sources) > 1 else ""
            raise RequestError(exc.field, exc.value, exc.allowed + which) from None
    mask = decode_image(body.mask, "mask") if body.mask else None
    return images, mask


def mask_blur(body: Img2ImgRequest) -> tuple[int, int]:
    """(x, y) sigma: ``mask_blur`` when the client sent it (it sets both, as in A1111), else the x/y fields."""
    if "mask_blur" in body.model_fields_set and body.mask_blur is not None:
        return body.mask_blur, body.mask_blur
    return body.mask_blur_x, body.mask_blur_y


def error_names(body: Img2ImgRequest) -> dict[str, str]:
    """Engine field -> the A1111 field this client sent, for 422s (the engine has no ``inpaint_full_res``)."""
    names = {"inpaint_area": "inpaint_full_res", "conditional_mask_weight": f"override_settings.{MASK_WEIGHT}"}
    if "mask_blur" in body.model_fields_set and body.mask_blur is not None:
        names.update(mask_blur_x="mask_blur", mask_blur_y="mask_blur")
    return names


def to_img2img_request(body: Img2ImgRequest, current_options: dict[str, Any], overrides: dict[str, Any],
                       images: list[Any], mask: Any, styles: Any = None) -> GenerationRequest:
    """A1111's img2img fields (images already decoded) to the engine's request, ``styles`` (a StyleLibrary)
    applied as for txt2img; validated at submit."""
    generation = to_generation_request(body, current_options, overrides, styles)
    spec = None
    if mask is not None:
        blur_x, blur_y = mask_blur(body)
        spec = MaskSpec(image=mask, blur_x=blur_x, blur_y=blur_y, invert=body.inpainting_mask_invert,
                        area=INPAINT_AREAS[1] if body.inpaint_full_res else INPAINT_AREAS[0],
                        padding=body.inpaint_full_res_padding, content=_index_or_name(body.inpainting_fill),
                        conditional_weight=overrides.get(MASK_WEIGHT, current_options.get(MASK_WEIGHT, 1.0)))
    generation.source = ImageSource(images=images, denoising_strength=body.denoising_strength,
                                    resize_mode=_index_or_name(body.resize_mode), mask=spec)
    return generation


def _index_or_name(value: int | str) -> int | str:
    """A1111 sends indices; a client that sends one as text ("1") means the index too."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def img2img_info(body: Img2ImgRequest, result: GenerationResult, job: Job) -> dict[str, Any]:
    """txt2img's ``info`` plus the denoising strength and, for inpainting, the mask settings as used (under
    their request names, and under their infotext names in ``extra_generation_params``, as A1111 does)."""
    from sdlocal.engine.infotext import parse_infotext

    info = build_info(body, result, job, IMG2IMG_UNSUPPORTED)
    source = result.request.source
    if source is None:  # the engine always keeps it; a stand-in engine in a test may not
        return info
    info["denoising_strength"] = source.denoising_strength
    mask = source.mask
    if mask is not None:
        info.update(mask_blur_x=mask.blur_x, mask_blur_y=mask.blur_y,
                    inpainting_fill=MASKED_CONTENT.index(mask.content), inpaint_full_res=mask.area == INPAINT_AREAS[1],
                    inpaint_full_res_padding=mask.padding, inpainting_mask_invert=int(mask.invert))
        written = parse_infotext(info["infotexts"][0]) if info["infotexts"] else {}
        extra = {key: infotext_value(written[key]) for key in MASK_INFOTEXT_KEYS if key in written}
        info["extra_generation_params"] = {**info["extra_generation_params"], **extra}
        info["is_using_inpainting_conditioning"] = "Conditional mask weight" in written
    return info

