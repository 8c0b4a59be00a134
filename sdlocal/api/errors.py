"""Every exception as an A1111-style JSON error: 4xx for what the client can fix, 500 without internals.

The handlers here and the ``CatchAll`` middleware are the only places that turn exceptions into responses, so
no route can leak a traceback or answer with something that is not JSON. Error bodies echo what the client
sent, and Python's JSON reader accepts ``NaN`` and ``Infinity``, which strict JSON cannot carry: ``json_safe``
renders those (and anything else JSON has no word for) as strings, so an error body is valid JSON whatever came in.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sdlocal.api.sdapi import ApiError, model_not_found, request_error
from sdlocal.engine.request import EngineError, ModelNotFoundError, RequestError
from sdlocal.jobs import JobCancelledError, QueueFullError

log = logging.getLogger("sdlocal.api")

MAX_ECHO_CHARS = 300  # an echoed input longer than this is cut (a 40 MB string is not worth sending back)


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as strict JSON values: non-finite floats as "NaN"/"Infinity"/"-Infinity", long text cut, the rest
    of what JSON cannot hold (bytes, exceptions, objects) as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_ECHO_CHARS else value[:MAX_ECHO_CHARS] + f"... ({len(value)} characters)"
    if depth > 20:
        return "..."
    if isinstance(value, dict):
        return {str(json_safe(key, depth + 1)): json_safe(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(item, depth + 1) for item in value]
    if isinstance(value, (bytes, bytearray)):
        return json_safe(bytes(value).decode("utf-8", "replace"), depth + 1)
    return json_safe(str(value), depth + 1)


class SafeJSONResponse(JSONResponse):
    """A JSONResponse that can never fail to render: the content goes through ``json_safe`` first."""

    def render(self, content: Any) -> bytes:
        # ASCII escapes: a lone surrogate in echoed text stays valid JSON instead of failing to encode.
        return json.dumps(json_safe(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def error_for(exc: BaseException) -> ApiError:
    """Any exception as an ``ApiError``: 4xx for what the client can fix, 500 without internals otherwise."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestError):
        return request_error(exc)
    if isinstance(exc, ModelNotFoundError):
        return model_not_found(exc)
    if isinstance(exc, QueueFullError):
        return ApiError(503, "Service Unavailable", f"The queue is full: {exc}",
                        headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, JobCancelledError):
        return ApiError(503, "Service Unavailable", str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, EngineError):
        return ApiError(500, "EngineError", f"{exc.message} {exc.hint}".strip())
    incident = uuid.uuid4().hex[:8]
    log.error("internal error %s: %s", incident, exc, exc_info=exc)
    return ApiError(500, "Internal Server Error",
                    f"An internal error occurred (incident {incident}); the server log has the details.")


def _error_response(error: ApiError) -> JSONResponse:
    return SafeJSONResponse(error.body(), status_code=error.status, headers=error.headers)


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(_request: Request, exc: Exception) -> JSONResponse:
        return _error_response(error_for(exc))

    async def on_validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _error_response(validation_error(exc.errors()))

    async def on_http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        carried = getattr(exc, "api_error", None)  # guards.BodyTooLarge
        if isinstance(carried, ApiError):
            return _error_response(carried)
        error = ApiError(exc.status_code, _reason(exc.status_code), str(exc.detail),
                         headers=dict(exc.headers or {}))
        return _error_response(error)

    for kind in (ApiError, RequestError, ModelNotFoundError, QueueFullError, EngineError):
        app.add_exception_handler(kind, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_error)


def validation_error(errors: Any) -> ApiError:
    """pydantic's errors as a 422 naming the first bad field (``override_settings.x``) and what it got."""
    problems = json_safe(list(errors))
    first = problems[0] if problems and isinstance(problems[0], dict) else {}
    if first.get("type") == "json_invalid":
        where = first.get("loc", [None, "?"])[-1]
        reason = (first.get("ctx") or {}).get("error", "")
        return ApiError(422, "Unprocessable Entity", f"body: not valid JSON at character {where} ({reason}); "
                        "send one JSON object", errors=problems, field="body")
    loc = [str(part) for part in first.get("loc", []) if part != "body"]
    name = ".".join(loc) or "body"
    detail = f"{name}: {first.get('msg', 'invalid value')}"
    if "input" in first and loc:
        detail += f" (got {first['input']!r})"
    return ApiError(422, "Unprocessable Entity", detail, errors=problems, field=name)


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class CatchAll:
    """ASGI middleware: any other exception becomes a JSON 500 without internals, sent here.

    Letting it reach Starlette's outermost handler would also answer 500, but that handler re-raises, and
    uvicorn then closes the connection, which can cut the response short for the client.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: dict) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:  # noqa: BLE001 - the server keeps serving
            error = error_for(exc)
            if started:
                log.error("error after the response started on %s: %s", scope.get("path"), exc)
                return
            await _error_response(error)(scope, receive, send)
