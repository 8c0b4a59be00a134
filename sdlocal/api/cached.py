"""The result cache in front of the queue, for txt2img and img2img (see ``sdlocal.result_cache`` for the key).

A hit answers with the stored images (the same base64 PNG bytes) and ``info`` with ``"cache": "hit"``; nothing
reaches the queue or the GPU, and nothing new is saved (the first run saved it, when it was asked to). What is
never served from the cache: a random seed (-1), a script run, a request that keeps its overrides as options
(``override_settings_restore_afterwards: false`` has effects beyond its images), one whose first answer had no
images (``send_images: false``), and a request that asks to save when the first run did not save.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from fastapi import Request

from sdlocal.api.options import MODEL, WRITABLE
from sdlocal.engine.request import GenerationRequest
from sdlocal.result_cache import request_key


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("sdlocal")
    except Exception:  # noqa: BLE001 - running from a checkout
        return "0.1.0"


VERSION = _version()


def model_id(entry: Any) -> str:
    """The checkpoint: its name (the answer's info names it) and its contents: the sha256 when known, else the
    short hash, else the file's size and modification time."""
    known = getattr(entry, "sha256", None) or getattr(entry, "short_hash", None)
    if known:
        return f"{entry.name}:{known}"
    try:
        stat = Path(entry.path).stat()
    except OSError:
        return ""
    return f"{entry.name}:{Path(entry.path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def runtime_id(engine: Any) -> str:
    """What ran the model: device, precision, attention, memory mode, and the engine options that move pixels."""
    caps = engine.capabilities()
    config = engine.config
    return (f"{caps.device}/{caps.precision}/{caps.attention}/{getattr(caps, 'memory_mode', '')}/"
            f"fast={config.fast}/no_half_vae={config.no_half_vae}")


async def cache_key(runner: Any, body: Any, generation: GenerationRequest,
                    scripted: bool) -> tuple[str | None, str]:
    """(the key for this request or None when it is not to be cached (see the module docstring), the name of the
    model the key was made for)."""
    from sdlocal.api.sdapi import find_model_off_loop

    cache = getattr(runner.services, "result_cache", None)
    if cache is None or scripted or not body.override_settings_restore_afterwards or not body.send_images:
        return None, ""
    if int(generation.seed) == -1:
        return None, ""
    engine = runner.engine
    entry = await find_model_off_loop(engine, generation.model) if generation.model else engine.current_model
    if entry is None:
        return None, ""
    own = getattr(runner.services, "runtime_id", None)  # the cluster's: its workers', not the ingress's
    runtime = own() if callable(own) else await anyio.to_thread.run_sync(runtime_id, engine)
    return request_key(generation, model_id(entry), runtime, VERSION), entry.name


def ignored_notes(overrides: dict[str, Any], honoured: tuple[str, ...] = ()) -> list[str]:
    return [f"override_settings.{key} is not supported by sdlocal and was ignored"
            for key in sorted(overrides) if key not in (MODEL, *WRITABLE, *honoured)]


async def answer(runner: Any, body: Any, generation: GenerationRequest, request: Request, overrides: dict[str, Any],
                 info_of: Callable[[Any, Any], dict[str, Any]], names: dict[str, str] | None = None,
                 plan: Any = None) -> tuple[list[str], dict[str, Any]]:
    """(images, info) for a txt2img or img2img body: from the cache when it holds this request, else from a run
    (``runner.run``), whose answer is then kept. ``info_of(job, result)`` is the route's ``info`` builder."""
    from sdlocal.api.scripts import job_outputs

    cache = getattr(runner.services, "result_cache", None)
    key, model_name = await cache_key(runner, body, generation, plan is not None)
    wants_save = bool(body.save_images) and not body.do_not_save_samples
    if key is not None:
        stored = await anyio.to_thread.run_sync(cache.get, key)
        entry = json.loads(stored) if stored is not None else None
        if entry is not None and (entry["saved"] or not wants_save):
            info = dict(entry["info"])
            info["warnings"] = list(info.get("warnings", [])) + ignored_notes(overrides)
            info["cache"] = "hit"
            return list(entry["images"]), info
    job, notes = await runner.run(body, generation, request, overrides, names=names, plan=plan)
    images, info = await job_outputs(job, body, lambda result: info_of(job, result))
    result = job.result
    # Kept only when the model that ran is the one the key names (another request may have switched it).
    if (key is not None and images and not getattr(result, "interrupted", False)
            and getattr(result, "model_name", model_name) == model_name):
        value = json.dumps({"images": images, "info": info, "saved": wants_save}).encode("utf-8")
        await anyio.to_thread.run_sync(cache.put, key, value)
        info["cache"] = "miss"
    info["warnings"] += notes
    return images, info
