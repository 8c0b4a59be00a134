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


@contextmanager
def redis_server() -> Iterator[str]:
    """A real ``redis-server`` (Debian's; ``.ci/run`` installs it) on a free loopback port, with nothing saved to
    disk; yields its ``redis://`` URL and stops it after."""
    import shutil
    import subprocess
    import tempfile

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: apt-get install -y redis-server (.ci/run does)")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", folder], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                        probe.sendall(b"PING\r\n")
                        if probe.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {port}")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=10)
