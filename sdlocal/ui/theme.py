"""``--theme dark|light``: Gradio's page picks dark or light from its ``__theme`` URL parameter only.

With no parameter the page follows the system's colour scheme, and Gradio has no server-side option for it.
So a request for the page itself without ``__theme`` is redirected to the same address with it; an address
that names its own ``__theme`` (a bookmark, Gradio's settings panel) is served as it is.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import RedirectResponse

THEMES_BY_URL = ("dark", "light")


class ThemeRedirect:
    """ASGI middleware for the Gradio app: ``GET /`` without ``__theme`` -> ``/?__theme=<theme>``."""

    def __init__(self, app: Any, theme: str) -> None:
        if theme not in THEMES_BY_URL:
            raise ValueError(f"theme: {theme!r} cannot be set by URL; use one of {', '.join(THEMES_BY_URL)}")
        self.app = app
        self.theme = theme

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not self._wants_redirect(scope):
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        # A relative reference of the query alone keeps the path, whatever the mount point or proxy in front.
        location = "?" + (f"{query}&" if query else "") + f"__theme={self.theme}"
        await RedirectResponse(location, status_code=307)(scope, receive, send)

    @staticmethod
    def _wants_redirect(scope: dict[str, Any]) -> bool:
        if scope.get("type") != "http" or scope.get("method") not in ("GET", "HEAD"):
            return False
        root = scope.get("root_path", "") or ""
        path = scope.get("path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        query = scope.get("query_string", b"")
        return path in ("", "/") and b"__theme=" not in query
