"""Shared test helpers: a free port, and an ASGI app served by uvicorn in a thread of the test process.

The API and the UI tests both run the production app over real HTTP; this is the one place that knows how to
start it, wait for it to answer, and stop it again.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_http(url: str, timeout: float = 120.0, **client_options: Any) -> None:
    """Poll ``url`` until it answers 200; TimeoutError naming the URL otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, **client_options).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextmanager
def serving(app: Any, port: int, health_path: str = "/health", **uvicorn_options: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1:``port`` in a daemon thread; yields the base URL once ``health_path`` answers.

    ``uvicorn_options`` go to ``uvicorn.Config`` (``ssl_keyfile``/``ssl_certfile`` serve HTTPS; the health poll
    then skips certificate checks, which the tests themselves make).
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           **uvicorn_options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    scheme = "https" if uvicorn_options.get("ssl_certfile") else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        wait_http(url + health_path, verify=False)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
