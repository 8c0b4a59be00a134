"""Every exception as an A1111-style JSON error: 4xx for what the client can fix, 500 without internals.

The handlers here and the ``CatchAll`` middleware are the only places that turn exceptions into responses, so
no route can leak a traceback or answer with something that is not JSON.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sdlocal.api.sdapi import ApiError, model_not_found, request_error
from sdlocal.engine.request import EngineError, ModelNotFoundError, RequestError
from sdlocal.jobs import JobCancelledError, QueueFullError

log = logging.getLogger("sdlocal.api")


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
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(_request: Request, exc: Exception) -> JSONResponse:
        return _error_response(error_for(exc))

    async def on_validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
        first = problems[0] if problems else {}
        loc = [str(part) for part in first.get("loc", []) if part != "body"]
        name = ".".join(loc) or "body"
        detail = f"{name}: {first.get('msg', 'invalid value')}"
        if "input" in first and loc:
            detail += f" (got {first['input']!r})"
        return JSONResponse({"error": "Unprocessable Entity", "detail": detail, "errors": problems, "field": name},
                            status_code=422)

    for kind in (ApiError, RequestError, ModelNotFoundError, QueueFullError, EngineError):
        app.add_exception_handler(kind, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)


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
