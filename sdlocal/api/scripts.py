"""A1111's scripts over the API: ``script_name``/``script_args`` on txt2img and img2img, ``/scripts`` and
``/script-info``.

A body with a ``script_name`` is translated exactly as without one (styles, overrides, hires fix, the img2img
source); that request is the base the script plans over (``sdlocal.scripts.plan_script``, with A1111's positional
``script_args``), and the plan runs on the queue's worker as one job. Nothing here knows which script it is: the
script module's ``ARGS`` tell which position an argument has, so an error names it as the client sent it
(``script_args[1] (x_values): ...``). The response is A1111's: the grids first, then the cells' pictures, each
PNG with its own parameters, and ``info`` listing them in that order.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import anyio
from fastapi import APIRouter

from sdlocal.api.models import GenerationFields, ScriptInfoRecord, ScriptsList
from sdlocal.api.sdapi import ApiError, Runner, field_error, request_error
from sdlocal.api.translate import encode_images, png_base64
from sdlocal.engine.request import GenerationRequest, GenerationResult, RequestError
from sdlocal.jobs import Job
from sdlocal.scripts import NONE, SCRIPT_MODULES, find_script, plan_script, script_info, script_names
from sdlocal.scripts.plan import ScriptContext, ScriptPlan, ScriptResult

InfoOf = Callable[[GenerationResult], dict[str, Any]]  # a route's own ``info`` for one generation's result


class ScriptCall:
    """A body's script, found by name before anything runs; ``plan`` is handed to ``Runner.run``."""

    def __init__(self, name: str, args: list[Any], services: Any, names: dict[str, str] | None = None) -> None:
        self.name, self.args, self.services, self.names = name, args, services, names

    async def plan(self, base: GenerationRequest) -> ScriptPlan:
        """The plan over ``base`` (model already resolved), made on a worker thread: a big grid validates every
        cell. A bad argument is a 422 naming its position in ``script_args``."""
        ctx = ScriptContext.of(self.services)
        try:
            return await anyio.to_thread.run_sync(plan_script, self.name, base, self.args, ctx)
        except RequestError as exc:
            raise script_error(exc, self.name, self.names) from None


def script_call(body: GenerationFields, runner: Runner, names: dict[str, str] | None = None) -> ScriptCall | None:
    """The script ``body`` asks for, or None for none (no ``script_name``, "", or "None" as A1111's UI sends);
    an unknown name is a 422 naming ``script_name`` and the known ones."""
    name = body.script_name
    if name is None or name.strip().lower() in ("", NONE.lower()):
        return None
    try:
        script = find_script(name)
    except RequestError as exc:
        raise request_error(exc) from None
    return ScriptCall(script, list(body.script_args or []), runner.services, names)


def script_error(exc: RequestError, script: str, names: dict[str, str] | None = None) -> ApiError:
    """A planning error as a 422: an argument of the script by its position and A1111 name
    (``script_args[1] (x_values)``); the request's own fields as the route names them."""
    arguments = [name for name, _ in importlib.import_module(SCRIPT_MODULES[script]).ARGS]
    if exc.field not in arguments:
        return request_error(exc, names)
    index = arguments.index(exc.field)
    return field_error(f"script_args[{index}] ({exc.field})", exc.value, exc.allowed,
                       loc=["body", "script_args", index], field=f"script_args[{index}]", argument=exc.field)


async def job_outputs(job: Job, body: GenerationFields, info_of: InfoOf) -> tuple[list[str], dict[str, Any]]:
    """The response's ``images`` (when ``body`` sends them) and ``info`` for a finished job, a generation's or a
    script's."""
    result = job.result
    if not isinstance(result, ScriptResult):
        return (await anyio.to_thread.run_sync(encode_images, result) if body.send_images else []), info_of(result)
    images = await anyio.to_thread.run_sync(encode_outputs, result) if body.send_images else []
    return images, script_result_info(result, info_of)


def encode_outputs(result: ScriptResult) -> list[str]:
    """``result.outputs()`` (grids, then cells) as PNGs, each with its own parameters (slow: run on a thread)."""
    return [png_base64(picture, parameters) for picture, parameters, _ in result.outputs()]


def script_result_info(result: ScriptResult, info_of: InfoOf) -> dict[str, Any]:
    """The route's ``info`` for the first cell made, with the per-image lists over every output, in the order of
    ``images``; ``index_of_first_image`` is the number of grids before the cells, as A1111 sets it."""
    first = next((cell for cell in result.cells if cell is not None and cell.images), None)
    info = info_of(first if first is not None else _nothing_made(result.plan))
    items = result.output_items()
    outputs = [(picture, parameters, seed) for picture, parameters, seed, _ in items]
    requests = [request for *_, request in items]
    seeds = [seed if seed is not None else -1 for _, _, seed in outputs]
    notes = [note for note in info["warnings"] if note not in result.warnings]  # fields the body set, ignored
    info.update(
        prompt=requests[0].prompt if requests else result.plan.base.prompt,
        all_prompts=[request.prompt for request in requests],
        negative_prompt=requests[0].negative_prompt if requests else result.plan.base.negative_prompt,
        all_negative_prompts=[request.negative_prompt for request in requests],
        seed=seeds[0] if seeds else result.plan.base.seed, all_seeds=seeds,
        subseed=seeds[0] if seeds else -1, all_subseeds=seeds,
        infotexts=[parameters for _, parameters, _ in outputs], index_of_first_image=len(result.grids),
        interrupted=result.interrupted, warnings=list(result.warnings) + notes, timings=dict(result.timings),
    )
    return info


def _nothing_made(plan: ScriptPlan) -> GenerationResult:
    """A stand-in result for a script that made nothing (interrupted before its first cell, or that cell
    failed: ``warnings`` say which), so ``info`` still describes the request."""
    return GenerationResult(images=[], request=plan.base, model_name=plan.base.model, model_hash="", seeds=[])


def add_script_routes(router: APIRouter, runner: Runner) -> None:
    """``/scripts`` and ``/script-info`` on the ``/sdapi/v1`` router (its prefix and auth)."""

    @router.get("/scripts", response_model=ScriptsList,
                summary="The scripts script_name takes (A1111's names), for txt2img and for img2img")
    def scripts() -> dict[str, list[str]]:
        return {"txt2img": script_names(), "img2img": script_names()}

    @router.get("/script-info", response_model=list[ScriptInfoRecord],
                summary="Each script's positional script_args: label, default, range and choices")
    def script_infos() -> list[dict[str, Any]]:
        return [info.to_dict() for info in script_info(ScriptContext.of(runner.services))]
