"""The one HTTP server: the Gradio UI, the A1111 API and the ops endpoints on one port, one job queue.

``create_app`` builds a FastAPI app: ops routes always, ``/sdapi/v1`` with ``--api`` (or ``--nowebui``), and
the Gradio UI mounted at ``/`` unless ``--nowebui``. Nothing here imports torch or diffusers, so the page and
``/health`` answer while the first model loads on the queue's worker.

``--share``: Gradio makes its share link only inside ``Blocks.launch``, which would start Gradio's own server
and leave the API routes to be bolted onto it afterwards. Instead sdlocal serves its own app with uvicorn and
opens the same tunnel with ``gradio.networking.setup_tunnel`` pointed at that port, so the UI and the API are
shared together; when the link cannot be made (no internet, the tunnel binary missing) the server keeps
serving locally and says why.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from sdlocal.api.auth import ApiAuth, api_credentials, ui_credentials
from sdlocal.api.errors import CatchAll, error_for, install_error_handlers
from sdlocal.api.guards import DEFAULT_MAX_BODY_BYTES, BodyLimit, SameOrigin
from sdlocal.api.ops import Metrics, RequestCounter, ops_router
from sdlocal.api.options import ApiOptions
from sdlocal.api.ratelimit import RateLimiter, effective_limits
from sdlocal.api.sdapi import build_router
from sdlocal.api.tokens import read_tokens

log = logging.getLogger("sdlocal.server")


# ---------------------------------------------------------------------------------------------- the app
def create_app(services: Any, settings: Any = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The whole server app over ``services`` (see the module docstring); starts the background model load.

    ``max_body_bytes`` bounds API request bodies (413 past it); Gradio's routes keep their own limits.
    """
    settings = settings or services.settings
    app = FastAPI(title="sdlocal", version=_version(), docs_url=None, redoc_url=None, openapi_url=None,
                  description="AUTOMATIC1111-compatible API (/sdapi/v1) and operations endpoints.")
    metrics = Metrics(services)
    services.queue.listeners.append(metrics.on_job_finished)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(SameOrigin)
    app.add_middleware(CatchAll)
    app.add_middleware(RequestCounter, metrics=metrics)  # outside CatchAll, so it counts those 500s
    install_error_handlers(app)
    app.state.services, app.state.metrics = services, metrics

    with_api = bool(settings.api or settings.nowebui)
    pairs = api_credentials(settings)
    tokens = read_tokens(settings.api_tokens) if with_api and settings.api_tokens else []
    if with_api and (settings.share or settings.listen) and not settings.no_auth and not pairs and not tokens:
        message = settings.secure_sharing()  # generates a password when none was given
        if message:
            print(message, flush=True)
        pairs = api_credentials(settings)
    auth = ApiAuth(pairs, tokens) if pairs or tokens else None
    limits_text = effective_limits(settings) if with_api else ""
    limiter = RateLimiter(limits_text, settings.api_rate_limit_storage) if limits_text else None
    metrics.auth, metrics.limiter = auth, limiter
    _add_docs(app, auth)
    app.include_router(ops_router(services, metrics, auth))
    if with_api:
        app.state.options = ApiOptions(services)
        app.include_router(build_router(services, app.state.options, auth, errors=error_for, limiter=limiter))

    if settings.nowebui:
        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/docs")
    else:
        import gradio as gr

        from sdlocal.ui.app import build_ui, mount_options

        blocks = build_ui(services)
        gr.mount_gradio_app(app, blocks, path="/", auth=ui_credentials(settings), **mount_options(services))
    services.start_background_load()
    return app


def _add_docs(app: FastAPI, auth: Callable[..., Any] | None) -> None:
    """``/openapi.json`` and ``/docs`` (Swagger UI) behind the API's login: the description lists every route."""
    guarded = [Depends(auth)] if auth is not None else []

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guarded)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - API")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("sdlocal")
    except Exception:  # noqa: BLE001 - running from a checkout
        return "0.1.0"


# ---------------------------------------------------------------------------------------------- serving
def port_problem(host: str, port: int) -> str | None:
    """Why the port cannot be bound (in use, not allowed), or None; checked first for a clear message."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return (f"cannot listen on {host}:{port} ({exc.strerror or exc}). Another program (perhaps another "
                    f"sdlocal or A1111) is using it: stop it, or start with --port {port + 1}.")
    return None


def scheme(settings: Any) -> str:
    """``https`` when the server has a TLS key and certificate (``--tls-keyfile``/``--tls-certfile``)."""
    return "https" if settings.tls_keyfile and settings.tls_certfile else "http"


def tls_options(settings: Any) -> dict[str, str]:
    """uvicorn's TLS options from the settings; empty for plain HTTP (Settings already refuses one without the
    other)."""
    if scheme(settings) != "https":
        return {}
    return {"ssl_keyfile": str(settings.tls_keyfile), "ssl_certfile": str(settings.tls_certfile)}


def plain_http_warning(settings: Any) -> str | None:
    """A warning when logins would cross the network unencrypted: ``--listen`` with a login and no TLS.

    ``--share`` alone is not warned about: the tunnel is HTTPS at its public end and plain only on this machine.
    """
    ui_login = ui_credentials(settings) if not settings.nowebui else None
    api_login = api_credentials(settings) if (settings.api or settings.nowebui) else None
    logins = ui_login or api_login
    if settings.listen and logins and scheme(settings) == "http":
        return ("WARNING: --listen with a login over plain HTTP: passwords cross the network unencrypted (HTTP "
                "Basic and the UI's login are readable by anyone on the path). Add --tls-keyfile KEY.pem "
                "--tls-certfile CERT.pem, or put an HTTPS reverse proxy in front.")
    return None


def describe(settings: Any, share_url: str | None = None) -> list[str]:
    """The lines printed at start: where to connect and who may (with the plain-HTTP warning if it applies)."""
    web = scheme(settings)
    lines = [f"Running on local URL:  {web}://127.0.0.1:{settings.port}/"]
    if settings.listen:
        lines.append(f"Listening on every network interface: {web}://{_lan_address()}:{settings.port}/")
    if share_url:
        lines.append(f"Public share URL: {share_url}")
    if settings.api or settings.nowebui:
        base = f"{web}://127.0.0.1:{settings.port}"
        lines.append(f"API: {base}/sdapi/v1  (OpenAPI: {base}/docs)")
    if settings.nowebui:
        lines.append("Web UI: off (--nowebui)")
    ui_login = ui_credentials(settings)
    api_login = api_credentials(settings)
    if not settings.nowebui:
        lines.append("UI login: " + (f"required ({len(ui_login)} user(s))" if ui_login else "none"))
    if settings.api or settings.nowebui:
        lines.append("API login: " + (f"HTTP Basic required ({len(api_login)} user(s))" if api_login else "none")
                     + (f"; API tokens from {settings.api_tokens} (Authorization: Bearer)" if settings.api_tokens
                        else ""))
        limits_text = effective_limits(settings)
        lines.append("API rate limit: " + (f"{limits_text} per client" if limits_text else "off"))
    if web == "https":
        lines.append(f"HTTPS: on (certificate {settings.tls_certfile})")
    warning = plain_http_warning(settings)
    if warning:
        lines.append(warning)
    return lines


def _lan_address() -> str:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            return probe.getsockname()[0]
    except OSError:
        return socket.gethostname()


def open_share_link(port: int) -> str:
    """A Gradio share tunnel to ``port`` (the whole app: UI and API); raises with the reason when it cannot."""
    from gradio import networking, tunneling

    try:
        return networking.setup_tunnel("127.0.0.1", port, secrets.token_urlsafe(32), None, None)
    except Exception as exc:
        from pathlib import Path

        if not Path(tunneling.BINARY_PATH).exists():
            raise RuntimeError(f"Gradio's tunnel program is missing ({tunneling.BINARY_PATH}) and could not be "
                               f"downloaded ({exc}); is this machine offline?") from exc
        raise RuntimeError(f"the share server could not be reached ({exc}); is this machine offline?") from exc


def serve(settings: Any, after_start: Callable[[], int] | None = None) -> int:
    """Run the server until Ctrl+C; returns the process exit code.

    ``after_start`` runs on a thread once the page answers (the doctor's torch checks, which take seconds and
    must not hold the page back); a non-zero return stops the server with that exit code.
    """
    import uvicorn

    from sdlocal.services import build_services

    problem = port_problem(settings.host, int(settings.port))
    if problem:
        print(f"[sdlocal] {problem}", flush=True)
        return 1
    from sdlocal.api.tokens import TokenFileError

    services = build_services(settings)
    try:
        app = create_app(services, settings)
    except TokenFileError as exc:
        services.close()
        print(f"[sdlocal] {exc}", flush=True)
        return 1
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=int(settings.port), log_level="warning",
                                           timeout_graceful_shutdown=5, **tls_options(settings)))

    exit_code = 0

    def announce() -> None:
        nonlocal exit_code
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if not server.started:
            return
        if after_start is not None:
            code = after_start()
            if code:
                exit_code = code
                server.should_exit = True
                return
        for line in describe(settings):
            print(f"[sdlocal] {line}", flush=True)
        if settings.share and getattr(settings, "offline", False):
            print("[sdlocal] Could not create a share link: --share needs the internet and offline mode is on. "
                  f"Still serving locally at {scheme(settings)}://127.0.0.1:{settings.port}/", flush=True)
        elif settings.share:
            try:
                url = open_share_link(int(settings.port))
                print(f"[sdlocal] Public share URL: {url}", flush=True)
            except Exception as exc:  # noqa: BLE001 - sharing is optional; keep serving locally
                print(f"[sdlocal] Could not create a share link: {exc} Still serving locally at "
                      f"{scheme(settings)}://127.0.0.1:{settings.port}/", flush=True)

    threading.Thread(target=announce, name="sdlocal-announce", daemon=True).start()
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn has already shut down gracefully; no traceback for Ctrl+C
        pass
    finally:
        services.close()
    print("[sdlocal] stopped", flush=True)
    return exit_code
