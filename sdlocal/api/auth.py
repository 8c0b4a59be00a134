"""Who may call the API: the logins it takes and the HTTP Basic check (constant-time)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from fastapi import Depends
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from sdlocal.api.sdapi import ApiError


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
