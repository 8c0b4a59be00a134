"""``/sdapi/v1``: the AUTOMATIC1111 web API routes and shapes, over the shared job queue.

Every generation and model load goes through ``services.queue`` (one GPU job at a time, shared with the UI).
Handlers translate A1111 fields to a ``GenerationRequest`` and the result back to A1111's response; the rules
about what is valid live in the engine, and its ``RequestError`` field names are mapped back to the A1111 names
here so a client learns which of *its* fields was wrong.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from sdlocal.api.cached import ignored_notes
from sdlocal.api.models import (
    PngInfoRequest,
    PngInfoResponse,
    ProgressResponse,
    PromptStyle,
    Sampler,
    Scheduler,
    SdModel,
    Txt2ImgRequest,
    Txt2ImgResponse,
)
from sdlocal.api.ops import gpu_memory, ram_figures
from sdlocal.api.options import MODEL, WRITABLE, ApiOptions, log_ignored
from sdlocal.api.translate import (
    build_info,
    hires_info,
    png_base64,
    schedule_name,
    to_generation_request,
    to_hires_spec,
)
from sdlocal.engine.request import GenerationRequest, ModelNotFoundError, RequestError
from sdlocal.engine.samplers import SAMPLER_ALIASES
from sdlocal.jobs import Job

__all__ = ["ApiError", "Runner", "build_router", "png_base64", "request_error", "wait_for_job"]

log = logging.getLogger(__name__)

# Engine field -> the A1111 field a client sent (for 422 messages).
A1111_FIELDS = {
    "sampler": "sampler_name",
    "schedule": "scheduler",
    "batch_count": "n_iter",
    "clip_skip": "override_settings.CLIP_stop_at_last_layers",
    "token_merging_ratio": "override_settings.token_merging_ratio",
    "emphasis": "override_settings.emphasis",
    "model": "override_settings.sd_model_checkpoint",
    "vae": "override_settings.sd_vae",
    "hr_sampler": "hr_sampler_name",
    "hr_schedule": "hr_scheduler",
}


class ApiError(Exception):
    """An error with its HTTP status and A1111-style body; raised by handlers, rendered by the server."""

    def __init__(self, status: int, error: str, detail: str, errors: Any = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        self.status, self.error, self.detail, self.errors = status, error, detail, errors
        self.headers = headers or {}
        self.extra = extra
        super().__init__(detail)

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, "errors": self.errors, **self.extra}


def request_error(exc: RequestError, names: dict[str, str] | None = None) -> ApiError:
    """422 naming the A1111 field (``names`` first: a route's own spellings), the value and what is allowed."""
    name = (names or {}).get(exc.field) or A1111_FIELDS.get(exc.field, exc.field)
    return field_error(name, exc.value, exc.allowed)


def field_error(name: str, value: Any, allowed: str, loc: list[Any] | None = None, **extra: Any) -> ApiError:
    """422 naming the field exactly as the client spelt it (``override_settings.x``), its value and the rule;
    ``loc`` where pydantic would put it, when ``name`` is not a dotted path (``script_args[1] (x_values)``)."""
    detail = f"{name}: {_short_repr(value)} is not allowed; {allowed}"
    return ApiError(422, "Unprocessable Entity", detail, **{"field": name, **extra},
                    errors=[{"loc": loc or ["body", *name.split(".")], "msg": allowed, "type": "value_error",
                             "input": _jsonable(value)}])


def model_not_found(exc: ModelNotFoundError) -> ApiError:
    return ApiError(404, "Not Found", f"{exc.message} {exc.hint}".strip(), known=list(exc.known))


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def _short_repr(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


MAX_NUMBER = 2**63  # beyond this no option or field means anything, and float() of it can overflow
MAX_DEPTH = 32  # nesting deeper than this in a request is junk, and deep enough to break serializers


def refuse_bad_values(values: Any, name: str = "", depth: int = 0) -> None:
    """422 naming the first value no A1111 field can mean, at any depth of a JSON body.

    NaN and infinities (Python's JSON reader accepts them; strict JSON cannot carry them back), integers too
    large for any field (``float(10**400)`` overflows in the engine's checks), text with lone surrogates (it
    cannot be written as UTF-8: not to a PNG, not to a response) and absurd nesting. Pydantic types the known
    fields; this covers the free-form parts (``override_settings``, ``script_args``, the ``/options`` body).
    """
    label = name or "body"
    if depth > MAX_DEPTH:
        raise field_error(label, "...", f"is nested more than {MAX_DEPTH} levels deep")
    if isinstance(values, dict):
        for key, value in values.items():
            refuse_bad_values(str(key), f"{name} (a key)" if name else "body (a key)", depth + 1)
            refuse_bad_values(value, f"{name}.{key}" if name else str(key), depth + 1)
    elif isinstance(values, list):
        for value in values:
            refuse_bad_values(value, name, depth + 1)
    elif isinstance(values, float) and not math.isfinite(values):
        raise field_error(label, values, "must be a finite number")
    elif isinstance(values, int) and not isinstance(values, bool) and abs(values) >= MAX_NUMBER:
        raise field_error(label, values, f"must be smaller than {MAX_NUMBER} in size")
    elif isinstance(values, str) and not _encodable(values):
        raise field_error(label, values, "must be valid Unicode text (it holds a lone surrogate)")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def wait_for_job(job: Job, request: Request | None = None) -> Any:
    """Wait for ``job`` without holding a thread for long; a client that goes away cancels a job not yet started.

    A job that is already running is left to finish (its images still go to the gallery when saved), so the
    worker and the next job are never disturbed by a disconnect.
    """
    while not job.done():
        finished = await anyio.to_thread.run_sync(job.join, 0.5)
        if finished:
            break
        if request is not None and await request.is_disconnected():
            if job.cancel():
                log.info("client went away; cancelled queued job %s", job.id)
            else:
                log.info("client went away; job %s runs to completion", job.id)
            break
    return job


class Runner:
    """The one path from an A1111 body to a finished job, shared by txt2img and img2img: the model override,
    the queue, waiting, switching the model back, and the notes about the overrides."""

    def __init__(self, services: Any, options: ApiOptions, to_api_error: Callable[[BaseException], ApiError]) -> None:
        self.services, self.engine, self.queue = services, services.engine, services.queue
        self.options, self.to_api_error = options, to_api_error
        self.styles = getattr(services, "styles", None)  # the StyleLibrary the ``styles`` field names

    def build(self, make: Callable[[], GenerationRequest]) -> GenerationRequest:
        """``make()`` (a body's translation, styles applied): a RequestError there is a 422 naming the field."""
        try:
            return make()
        except RequestError as exc:
            raise request_error(exc) from None

    def submit(self, make: Callable[[], Job], names: dict[str, str] | None = None) -> Job:
        """``make()`` (a queue submission): 503 when the queue is full, 422 naming the A1111 field (``names``
        maps engine fields to a route's own) when the request is invalid."""
        from sdlocal.jobs import QueueFullError

        try:
            return make()
        except QueueFullError as exc:
            raise ApiError(503, "Service Unavailable", f"The queue is full: {exc}",
                           headers={"Retry-After": str(exc.retry_after)}) from None
        except RequestError as exc:
            raise request_error(exc, names) from None

    async def run(self, body: Any, generation: GenerationRequest, request: Request, overrides: dict[str, Any],
                  honoured: tuple[str, ...] = (), names: dict[str, str] | None = None,
                  plan: Callable[[GenerationRequest], Awaitable[Any]] | None = None) -> tuple[Job, list[str]]:
        """Run ``generation`` for ``body``; the finished job (its ``result`` set) and the notes for
        ``info.warnings``. ``honoured`` are override keys the route uses itself (not named as ignored).

        With ``plan`` (a script's: ``sdlocal.api.scripts.ScriptCall.plan``) the request, its model resolved, is
        the base of a script plan, and the plan runs as one job; everything around it (the model override and
        switching back, waiting, the queue's limits) is the same as for one generation."""
        engine, queue = self.engine, self.queue
        previous, entry = engine.current_model, None
        if generation.model:
            entry = await find_model_off_loop(engine, generation.model)
            generation.model = entry.name
        save = bool(body.save_images) and not body.do_not_save_samples
        if plan is None:
            job = self.submit(lambda: queue.submit(generation, save=save, source="api"), names)
        else:
            script_plan = await plan(generation)
            save_grid = bool(body.save_images) and not body.do_not_save_grid
            job = self.submit(lambda: queue.submit_script(script_plan, save=save, source="api", save_grid=save_grid),
                              names)
        switch_back = (entry is not None and body.override_settings_restore_afterwards and previous is not None
                       and previous.path != entry.path)
        restore = queue.submit_call(lambda: engine.load(previous.name), source="api", force=True,
                                    label=f"Loading {previous.name} again") if switch_back else None
        await wait_for_job(job, request)
        notes = await self._finish_overrides(restore, body, overrides, entry, job.error is None, honoured)
        if job.error is not None:
            raise self.to_api_error(job.error)
        if not job.done() or job.result is None:
            raise ApiError(499, "Client Closed Request", "the client disconnected before the job finished")
        return job, notes

    async def _finish_overrides(self, restore: Job | None, body: Any, overrides: dict[str, Any], entry: Any,
                                succeeded: bool, honoured: tuple[str, ...]) -> list[str]:
        """After the run: wait for the model to be switched back (A1111's default), or keep the overrides as
        options (``override_settings_restore_afterwards: false``, after a run that worked)."""
        options = self.options
        notes = ignored_notes(overrides, honoured)
        if restore is not None:
            await wait_for_job(restore)
            if restore.error is not None:
                log.warning("could not load the previous model again: %s", restore.error)
                notes.append(f"The previous model could not be loaded again: {restore.error}")
        if not body.override_settings_restore_afterwards and succeeded:
            kept = options.check({key: overrides[key] for key in WRITABLE if key in overrides})
            notes += options.apply(kept)
            if entry is not None:
                notes += options.remember_model(entry.name)
            notes += [f"override_settings.{key} was used for this request only; sdlocal does not keep it as an "
                      "option" for key in sorted(honoured) if key in overrides]
        return notes


def build_router(services: Any, options: ApiOptions, auth: Callable[..., Any] | None = None,
                 errors: Callable[[BaseException], ApiError] | None = None,
                 limiter: Callable[..., Any] | None = None) -> APIRouter:
    """The ``/sdapi/v1`` router over ``services``; ``auth`` (a FastAPI dependency) guards every route, then
    ``limiter`` (``sdlocal.api.ratelimit.RateLimiter``) counts the generating ones."""
    from sdlocal.api.cached import answer
    from sdlocal.api.extras import add_extras_routes
    from sdlocal.api.img2img import add_img2img_route  # it builds on this module's helpers
    from sdlocal.api.networks import add_network_routes
    from sdlocal.api.scripts import add_script_routes, script_call

    guards = [Depends(guard) for guard in (auth, limiter) if guard is not None]
    router = APIRouter(prefix="/sdapi/v1", tags=["sdapi"], dependencies=guards)
    engine, queue = services.engine, services.queue
    to_api_error = errors or (lambda exc: exc if isinstance(exc, ApiError) else ApiError(500, "Error", str(exc)))
    runner = Runner(services, options, to_api_error)
    submit = runner.submit

    # ------------------------------------------------------------------------------------------ txt2img
    @router.post("/txt2img", response_model=Txt2ImgResponse, summary="Text to image (A1111 fields and defaults)")
    async def txt2img(body: Txt2ImgRequest, request: Request) -> JSONResponse:
        params = body.model_dump()
        refuse_bad_values(params)  # free-form parts (override_settings, script_args) pydantic does not type
        overrides = dict(body.override_settings or {})
        script = script_call(body, runner)
        generation = runner.build(lambda: with_hires(
            to_generation_request(body, options.snapshot(), overrides, runner.styles), body))
        images, info = await answer(runner, body, generation, request, overrides,
                                    lambda job, result: hires_info(build_info(body, result, job), result),
                                    plan=script.plan if script else None)
        return JSONResponse({"images": images, "parameters": params, "info": json.dumps(info)})

    add_img2img_route(router, runner)
    add_script_routes(router, runner)
    add_extras_routes(router, runner)
    add_network_routes(router, engine)

    # ------------------------------------------------------------------------------------------ models
    @router.get("/sd-models", response_model=list[SdModel], summary="Checkpoints found (supported ones)")
    def sd_models() -> list[dict[str, Any]]:
        return [model_record(entry) for entry in engine.models() if entry.supported]

    @router.post("/refresh-checkpoints", summary="Scan the model folders again")
    async def refresh_checkpoints() -> dict[str, Any]:
        entries = await anyio.to_thread.run_sync(lambda: engine.models(refresh=True))
        return {"models": len([e for e in entries if e.supported])}

    @router.get("/options", summary="The options sdlocal honours or reports (sd_model_checkpoint, clip skip...)")
    def get_options() -> dict[str, Any]:
        return options.snapshot()

    @router.post("/options", summary="Change options; a new sd_model_checkpoint loads that model. Other keys are "
                 "named back under 'ignored'")
    async def set_options(body: dict[str, Any]) -> dict[str, Any]:
        refuse_bad_values(body)
        changes, wanted, ignored = options.split(body)
        try:
            changes = options.check(changes)
        except RequestError as exc:
            raise field_error(exc.field, exc.value, exc.allowed) from None
        applied: dict[str, Any] = dict(changes)
        warnings: list[str] = []
        if wanted:
            entry = await find_model_off_loop(engine, str(wanted))
            if not entry.supported:
                raise field_error(MODEL, wanted, f"cannot be loaded: {entry.reason}")
            current = engine.current_model
            if current is None or current.path != entry.path:
                job = submit(lambda: queue.submit_call(lambda: engine.load(entry.name), source="api",
                                                       label=f"Loading {entry.name}"))
                await wait_for_job(job)
                if job.error is not None:
                    raise to_api_error(job.error)
            warnings += options.remember_model(entry.name)
            applied[MODEL] = engine.current_model.title if engine.current_model is not None else entry.title
        warnings += options.apply(changes)
        log_ignored("POST /sdapi/v1/options", ignored)
        return {"applied": applied, "ignored": ignored, **({"warnings": warnings} if warnings else {})}

    # ------------------------------------------------------------------------------------------ styles
    @router.get("/prompt-styles", response_model=list[PromptStyle],
                summary="Styles from styles.csv (data dir, --models-dir roots) and Fooocus style files")
    async def prompt_styles() -> list[dict[str, Any]]:
        library = runner.styles
        found = await anyio.to_thread.run_sync(library.refresh) if library is not None else []
        return [{"name": style.name, "prompt": style.prompt, "negative_prompt": style.negative_prompt}
                for style in found]

    # ------------------------------------------------------------------------------------------ samplers
    @router.get("/samplers", response_model=list[Sampler], summary="Samplers usable here")
    def samplers() -> list[dict[str, Any]]:
        return [{"name": name, "aliases": SAMPLER_ALIASES.get(name, []), "options": {}} for name in engine.samplers()]

    @router.get("/schedulers", response_model=list[Scheduler], summary="Schedule types")
    def schedulers() -> list[dict[str, Any]]:
        return [{"name": schedule_name(label), "label": label, "aliases": None, "default_rho": -1,
                 "need_inner_model": False} for label in engine.schedules()]

    # ------------------------------------------------------------------------------------------ progress
    @router.get("/progress", response_model=ProgressResponse, summary="Progress of the running job")
    async def progress(skip_current_image: bool = False) -> dict[str, Any]:
        state = queue.progress()
        image = None
        if not skip_current_image and state.preview is not None and state.job_id is not None:
            image = await anyio.to_thread.run_sync(png_base64, state.preview, None)
        return {
            "progress": round(float(state.fraction), 4) if state.job_id else 0.0,
            "eta_relative": round(state.eta_relative, 3) if state.job_id else 0.0,
            "state": {
                "skipped": state.skipped, "interrupted": state.interrupted, "stopping_generation": False,
                "job": f"task({state.job_id})" if state.job_id else "", "job_count": state.job_count,
                "job_timestamp": state.job_timestamp or "0", "job_no": state.job_no,
                "sampling_step": state.step, "sampling_steps": state.total_steps,
            },
            "current_image": image,
            "textinfo": state.textinfo or (state.text or None),
            "current_task": f"task({state.job_id})" if state.job_id else None,
        }

    @router.post("/interrupt", summary="Stop the running generation (finished images are kept)")
    def interrupt() -> dict[str, Any]:
        queue.interrupt()
        return {}

    @router.post("/skip", summary="Skip the current batch of the running generation")
    def skip() -> dict[str, Any]:
        queue.skip()
        return {}

    # ------------------------------------------------------------------------------------------ misc
    @router.post("/png-info", response_model=PngInfoResponse, summary="Read the parameters stored in an image")
    def png_info(body: PngInfoRequest) -> dict[str, Any]:
        return read_png_info(body.image)

    @router.get("/memory", summary="RAM and GPU memory")
    def memory() -> dict[str, Any]:
        gpu = gpu_memory()
        if gpu:
            cuda: dict[str, Any] = {
                "system": {"free": gpu["free"], "used": gpu["total"] - gpu["free"], "total": gpu["total"]},
                "active": {"current": gpu["allocated"]}, "reserved": {"current": gpu["reserved"]},
            }
        else:
            cuda = {"error": "No CUDA GPU in use" + ("" if "torch" in sys.modules else " (no model loaded yet)")}
        return {"ram": ram_figures(), "cuda": cuda}

    return router


def with_hires(generation: GenerationRequest, body: Txt2ImgRequest) -> GenerationRequest:
    """txt2img's request with its hires fix part (``enable_hr``), built from the ``hr_*`` fields."""
    generation.hires = to_hires_spec(body)
    return generation


def model_record(entry: Any) -> dict[str, Any]:
    return {"title": entry.title, "model_name": model_name(entry),
            "hash": entry.short_hash, "sha256": getattr(entry, "sha256", None), "filename": str(entry.path),
            "config": None}


def model_name(entry: Any) -> str:
    """A1111's ``model_name``: the name with folder separators as underscores (titles keep the folders)."""
    return entry.name.replace("/", "_").replace("\\", "_")


def find_model(engine: Any, name: str) -> Any:
    """The engine's lookup (name, title, file, hash), plus A1111's ``model_name`` spelling; 404 if unknown."""
    try:
        return engine.find_model(name)
    except ModelNotFoundError as exc:
        for entry in engine.models():
            if entry.supported and model_name(entry) == name.strip():
                return entry
        raise model_not_found(exc) from None


async def find_model_off_loop(engine: Any, name: str) -> Any:
    """``find_model`` on a worker thread: a hash-looking name may hash multi-GB files, which must not freeze the
    event loop (the UI, the API and ``/health`` all answer from it)."""
    return await anyio.to_thread.run_sync(find_model, engine, name)


def read_png_info(data: str) -> dict[str, Any]:
    """Decode a base64 image (data URL or raw) and read its A1111 parameters with the one reader the UI also
    uses (``outputs.read_image_info``); 422 naming ``image`` if it is not a readable image."""
    from sdlocal.engine.infotext import parse_infotext
    from sdlocal.outputs import read_image_info

    text = (data or "").strip()
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        parameters, items = read_image_info(io.BytesIO(base64.b64decode(text, validate=False)))
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds (OSError, SyntaxError, struct.error...) on junk
        raise ApiError(422, "Unprocessable Entity",
                       f"image: not a readable base64 image ({type(exc).__name__}); send a PNG as base64 or a "
                       "data: URL", field="image") from None
    return {"info": parameters or "", "items": items, "parameters": parse_infotext(parameters) if parameters else {}}
