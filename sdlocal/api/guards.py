"""ASGI guards in front of the API and ops routes: no cross-site state changes, and a bound on request bodies.

A web page on another site can make the browser POST to ``http://127.0.0.1:7860/sdapi/v1/interrupt`` (a plain
form needs no CORS permission), so requests that change state are refused when their ``Origin`` names another
site; scripts and curl send no ``Origin`` and stay allowed. Bodies are bounded because a base64 image is read
whole into memory: one 2 GB request must not take the server down. Both guards look only at the API's paths,
so Gradio's own routes (uploads included) keep Gradio's rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException

from sdlocal.api.sdapi import ApiError

GUARDED_PREFIXES = ("/sdapi/", "/health", "/ready", "/metrics", "/docs", "/openapi.json")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
DEFAULT_MAX_BODY_BYTES = 50 * 1024 * 1024


def _guarded(scope: dict) -> bool:
    return scope.get("type") == "http" and str(scope.get("path", "")).startswith(GUARDED_PREFIXES)


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _refuse(error: ApiError, scope: dict, receive: Callable, send: Callable) -> None:
    from sdlocal.api.errors import SafeJSONResponse

    await SafeJSONResponse(error.body(), status_code=error.status, headers=error.headers)(scope, receive, send)


def same_site(origin: str, host: str) -> bool:
    """Whether ``origin`` (scheme://host[:port]) names the server reached through ``host`` (the Host header)."""
    try:
        parsed = urlsplit(origin)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            return False
        default = 443 if parsed.scheme == "https" else 80
        served = urlsplit("//" + host)
        return (parsed.hostname.lower() == (served.hostname or "").lower()
                and (parsed.port or default) == (served.port or default))
    except ValueError:  # a malformed port in either header
        return False


class SameOrigin:
    """Refuse (403) a state-changing API request whose ``Origin`` header names another site than this server."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if _guarded(scope) and str(scope.get("method", "")).upper() not in SAFE_METHODS:
            origin = _header(scope, b"origin")
            host = _header(scope, b"host") or ""
            if origin is not None and not same_site(origin, host):
                error = ApiError(403, "Forbidden", f"Cross-site request refused: the page at Origin {origin!r} is "
                                 f"not this server ({host or 'unknown host'}). Call the API from a script (which "
                                 "sends no Origin) or from this server's own pages.", field="Origin")
                await _refuse(error, scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyTooLarge(HTTPException):
    """Raised while the body streams in; carries the full 413 error for the error handlers."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.status, detail=error.detail)
        self.api_error = error


class BodyLimit:
    """Refuse (413) API request bodies over ``max_bytes``: at once by Content-Length, else while they stream."""

    def __init__(self, app: Any, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    def _error(self, size: str) -> ApiError:
        limit = f"{self.max_bytes} bytes" + (f" ({self.max_bytes / 2**20:g} MB)" if self.max_bytes >= 2**20 else "")
        return ApiError(413, "Content Too Large", f"body: the request body is {size}; the limit is {limit}. Send a "
                        "smaller image or request.", field="body", limit=self.max_bytes)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if not _guarded(scope):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            await _refuse(self._error(f"{int(declared)} bytes"), scope, receive, send)
            return
        seen = 0

        async def counting() -> dict:
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI re-raises an HTTPException from reading the body; the error handlers render it.
                    raise BodyTooLarge(self._error(f"over {self.max_bytes} bytes"))
            return message

        await self.app(scope, counting, send)
