"""``/sdapi/v1`` routes of A1111's Extras: ``POST /extra-single-image``, ``POST /extra-batch-images``, and the lists
clients read first, ``GET /upscalers`` and ``GET /latent-upscale-modes``.

As in A1111, the API's Extras do not save (A1111 passes ``save_output=False``): the pictures come back in the
response, each PNG carrying the source's own ``parameters`` and a ``postprocessing`` chunk. The work goes through
the shared job queue (one GPU job at a time, interruptible with ``POST /interrupt``).
"""

from __future__ import annotations

import html
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sdlocal.api.models import (
    ExtrasBatchImagesRequest,
    ExtrasBatchImagesResponse,
    ExtrasFields,
    ExtrasSingleImageRequest,
    ExtrasSingleImageResponse,
    LatentUpscaleMode,
    UpscalerRecord,
)
from sdlocal.api.sdapi import ApiError, Runner, refuse_bad_values, request_error, wait_for_job
from sdlocal.api.translate import png_base64
from sdlocal.engine.request import RequestError

FACE_FIELDS = ("gfpgan_visibility", "codeformer_visibility")  # a visibility above 0 asks for face restoration


def add_extras_routes(router: APIRouter, runner: Runner) -> None:
    """Add the Extras and upscaler-list routes to the ``/sdapi/v1`` router (its prefix and auth)."""
    engine = runner.engine

    @router.post("/extra-single-image", response_model=ExtrasSingleImageResponse,
                 summary="Upscale one image (A1111's Extras fields; not saved, as in A1111's API)")
    async def extra_single_image(body: ExtrasSingleImageRequest, request: Request) -> JSONResponse:
        refuse_bad_values(body.model_dump(exclude={"image"}))
        sources = await _decode(lambda: [_source(body.image, "image", "")])
        outputs, result = await _run(runner, body, sources, request)
        if not outputs:
            raise ApiError(409, "Conflict", "The upscale was interrupted before the image was finished; "
                                            "send it again", field="image")
        return JSONResponse({"html_info": outputs[-1][1], "image": outputs[-1][0],
                             "warnings": _warnings(body, result)})

    @router.post("/extra-batch-images", response_model=ExtrasBatchImagesResponse,
                 summary="Upscale several images (imageList: [{data, name}]); the finished ones come back")
    async def extra_batch_images(body: ExtrasBatchImagesRequest, request: Request) -> JSONResponse:
        refuse_bad_values(body.model_dump(exclude={"imageList"}))
        if not body.imageList:
            raise request_error(RequestError("imageList", [], "give at least one image: [{data, name}]"))
        items = body.imageList
        sources = await _decode(lambda: [_source(item.data, "imageList", item.name, index, len(items))
                                         for index, item in enumerate(items)])
        outputs, result = await _run(runner, body, sources, request)
        return JSONResponse({"html_info": outputs[-1][1] if outputs else "",
                             "images": [image for image, _ in outputs], "warnings": _warnings(body, result)})

    @router.get("/upscalers", response_model=list[UpscalerRecord],
                summary="Upscalers usable here: None, Lanczos, Nearest, then the model files found")
    async def upscalers() -> list[dict[str, Any]]:
        # Looked for again each time (only new or changed files are read), so a file dropped in is listed at once.
        found = await anyio.to_thread.run_sync(lambda: engine.upscalers(refresh=True))
        return [upscaler_record(info) for info in found if info.usable]

    @router.get("/latent-upscale-modes", response_model=list[LatentUpscaleMode],
                summary="The latent modes hires fix's hr_upscaler takes")
    def latent_upscale_modes() -> list[dict[str, Any]]:
        from sdlocal.engine.upscalers import LATENT_MODES

        return [{"name": name} for name in LATENT_MODES]


def upscaler_record(info: Any) -> dict[str, Any]:
    """A1111's record: builtins have no model name or path; a file's ``model_name`` is its name (the stem)."""
    is_model = info.kind == "model"
    return {"name": info.name, "model_name": info.name if is_model else None,
            "model_path": str(info.path) if is_model and info.path is not None else None, "model_url": None,
            "scale": info.scale, "architecture": info.architecture}


async def _decode(make: Any) -> list[Any]:
    """Decode the images off the event loop; a bad one is a 422 naming its field (and which one)."""
    try:
        return await anyio.to_thread.run_sync(make)
    except RequestError as exc:
        raise request_error(exc) from None


def _source(data: str, field: str, name: str, index: int = 0, count: int = 1) -> Any:
    """One ``ExtrasImage`` from base64, keeping the source's own ``parameters`` text."""
    from sdlocal.engine.extras import ExtrasImage
    from sdlocal.engine.images import decode_image

    try:
        image = decode_image(data, field)
    except RequestError as exc:
        which = f" ({field}[{index}])" if count > 1 or field == "imageList" else ""
        raise RequestError(exc.field, exc.value, exc.allowed + which) from None
    parameters = image.info.get("parameters")
    return ExtrasImage(image=image, name=name, parameters=parameters if isinstance(parameters, str) else None)


def to_extras_request(body: ExtrasFields, sources: list[Any]) -> Any:
    """A1111's fields to the engine's ``ExtrasRequest`` (validated at submit, names checked by the engine)."""
    from sdlocal.engine.extras import ExtrasRequest

    resize_mode = int(body.resize_mode) if isinstance(body.resize_mode, str) and body.resize_mode.strip().isdigit() \
        else body.resize_mode
    return ExtrasRequest(images=sources, resize_mode=resize_mode, scale=body.upscaling_resize,
                         width=body.upscaling_resize_w, height=body.upscaling_resize_h, crop=body.upscaling_crop,
                         upscaler_1=body.upscaler_1, upscaler_2=body.upscaler_2,
                         upscaler_2_visibility=body.extras_upscaler_2_visibility)


async def _run(runner: Runner, body: ExtrasFields, sources: list[Any],
               request: Request) -> tuple[list[tuple[str, str]], Any]:
    """Queue the upscale, wait, and encode the outputs: [(base64 PNG, html_info)] and the ``ExtrasResult``."""
    extras = to_extras_request(body, sources)
    job = runner.submit(lambda: runner.queue.submit_extras(extras, save=False, source="api"))
    await wait_for_job(job, request)
    if job.error is not None:
        raise runner.to_api_error(job.error)
    if not job.done() or job.result is None:
        raise ApiError(499, "Client Closed Request", "the client disconnected before the job finished")
    result = job.result
    encoded = await anyio.to_thread.run_sync(
        lambda: [(png_base64(out.image, out.parameters, {"postprocessing": out.infotext}), to_html(out.infotext))
                 for out in result.images])
    return encoded, result



def to_html(text: str) -> str:
    """A1111's ``html_info``: the text escaped, lines joined with ``<br>``, in one paragraph."""
    return "<p>" + "<br>\n".join(html.escape(line) for line in text.split("\n")) + "</p>"


def _warnings(body: ExtrasFields, result: Any) -> list[str]:
    """What was asked and not done: face restoration (sdlocal has none), an interrupt, the engine's notes."""
    notes = [f"{name} is not supported by sdlocal (no face restoration) and was ignored"
             for name in FACE_FIELDS if getattr(body, name)]
    if result.interrupted:
        notes.append(f"Interrupted: {len(result.images)} of the images were finished")
    return notes + list(result.warnings)
