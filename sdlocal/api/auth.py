"""Who may call the API: the logins it takes, the HTTP Basic check and API tokens (both constant-time)."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from sdlocal.api.sdapi import ApiError
from sdlocal.api.tokens import ApiToken, match_token

_BASIC = HTTPBasic(auto_error=False, realm="sdlocal")


def api_credentials(settings: Any) -> list[tuple[str, str]]:
    """Logins the API accepts: ``--api-auth``; else, when shared or listening, the UI's logins; else none."""
    if settings.api_auth:
        return list(settings.api_auth)
    if (settings.share or settings.listen) and not settings.no_auth:
        return list(settings.auth)
    return []


def ui_credentials(settings: Any) -> list[tuple[str, str]] | None:
    if settings.no_auth:
        return None
    return list(settings.auth) or None


def basic_auth(pairs: list[tuple[str, str]]) -> Callable[..., Any]:
    """A FastAPI dependency requiring HTTP Basic credentials from ``pairs`` (constant-time comparison)."""
    scheme = HTTPBasic(auto_error=False, realm="sdlocal")

    def check(credentials: HTTPBasicCredentials | None = Depends(scheme)) -> str:  # noqa: B008 - FastAPI's pattern
        if credentials is not None:
            user = credentials.username.encode()
            password = credentials.password.encode()
            for known_user, known_password in pairs:
                user_ok = secrets.compare_digest(user, known_user.encode())
                password_ok = secrets.compare_digest(password, known_password.encode())
                if user_ok and password_ok:
                    return credentials.username
        raise ApiError(401, "Unauthorized", "This API needs a user name and password (HTTP Basic auth); "
                       "the server was started with --api-auth, --gradio-auth, --listen or --share.",
                       headers={"WWW-Authenticate": 'Basic realm="sdlocal"'})

    return check


class ApiAuth:
    """A FastAPI dependency taking either login: HTTP Basic (``--api-auth``) or an API token (``--api-tokens``,
    ``Authorization: Bearer ...``). A token's name goes on ``request.state.api_token`` (the rate limit's bucket)
    and its requests are counted in ``requests`` for ``/metrics``."""

    def __init__(self, pairs: list[tuple[str, str]], tokens: list[ApiToken] | None = None) -> None:
        self.pairs = list(pairs)
        self.tokens = list(tokens or [])
        self.basic = basic_auth(self.pairs) if self.pairs else None
        self.requests: dict[str, int] = {}
        self._lock = threading.Lock()
        schemes = (["Basic"] if self.pairs else []) + (["Bearer"] if self.tokens else [])
        self.challenge = ", ".join(f'{name} realm="sdlocal"' for name in schemes)

    def __call__(self, request: Request,
                 credentials: HTTPBasicCredentials | None = Depends(_BASIC)) -> str:  # noqa: B008 - FastAPI's pattern
        kind, _, value = request.headers.get("authorization", "").partition(" ")
        if self.tokens and kind.lower() == "bearer":
            token = match_token(value.strip(), self.tokens)
            if token is None:
                raise ApiError(401, "Unauthorized", "Authorization: the Bearer token is not one of this server's API "
                               "tokens (--api-tokens); check it was copied whole, or make a new one.",
                               headers={"WWW-Authenticate": self.challenge}, field="Authorization")
            request.state.api_token = token.name
            with self._lock:
                self.requests[token.name] = self.requests.get(token.name, 0) + 1
            return token.name
        if self.basic is not None and credentials is not None:
            try:
                return self.basic(credentials)
            except ApiError:
                pass
        ways = " or ".join(way for way, used in (("a user name and password (HTTP Basic)", self.pairs),
                                                ("an API token (Authorization: Bearer ...)", self.tokens)) if used)
        raise ApiError(401, "Unauthorized", f"This API needs {ways}; the server was started with "
                       + ("--api-tokens" if not self.pairs else "--api-auth, --gradio-auth, --listen or --share")
                       + ("" if not (self.pairs and self.tokens) else " and --api-tokens") + ".",
                       headers={"WWW-Authenticate": self.challenge})
