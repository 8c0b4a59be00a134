"""Operations endpoints: ``/health`` (alive), ``/ready`` (a model can be served) and ``/metrics`` (Prometheus).

The Prometheus text format is written by hand: it is a few lines of text, and the ``prometheus_client``
package would be one more dependency to pin for that. Request counts come from a small ASGI middleware that
labels each request by its route template (never the raw path, so label cardinality stays bounded).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse

from sdlocal.jobs import DONE, INTERRUPTED, Job

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Cumulative buckets, sum and count, as Prometheus reads them."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1
        self.total += value
        self.count += 1


class Metrics:
    """Counters the server keeps; the queue's own counters are read at scrape time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = {}
        self.generation_seconds = Histogram()

    def count_request(self, route: str, method: str, status: int) -> None:
        with self.lock:
            key = (route, method, str(status))
            self.requests[key] = self.requests.get(key, 0) + 1

    def on_job_finished(self, job: Job) -> None:
        """Queue listener: the latency of each generation that produced a result."""
        if job.kind == "generate" and job.state in (DONE, INTERRUPTED) and job.duration is not None:
            with self.lock:
                self.generation_seconds.observe(job.duration)

    def render(self, services: Any) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{_labels(labels)} {_number(value)}")

        with self.lock:
            requests = sorted(self.requests.items())
            hist = self.generation_seconds
            buckets = list(zip(hist.buckets, hist.counts, strict=True))
            hist_sum, hist_count = hist.total, hist.count
        metric("sdlocal_http_requests_total", "counter", "HTTP requests by route, method and status.",
               [({"route": r, "method": m, "status": s}, n) for (r, m, s), n in requests])
        lines.append("# HELP sdlocal_generation_seconds Time from a generation job's start to its result.")
        lines.append("# TYPE sdlocal_generation_seconds histogram")
        for bound, count in buckets:
            lines.append(f'sdlocal_generation_seconds_bucket{{le="{_number(bound)}"}} {count}')
        lines.append(f'sdlocal_generation_seconds_bucket{{le="+Inf"}} {hist_count}')
        lines.append(f"sdlocal_generation_seconds_sum {_number(hist_sum)}")
        lines.append(f"sdlocal_generation_seconds_count {hist_count}")
        queue = services.queue
        metric("sdlocal_images_generated_total", "counter", "Images generated since the server started.",
               [({}, queue.images_generated)])
        metric("sdlocal_jobs_total", "counter", "Finished queue jobs by outcome.",
               [({"outcome": outcome}, n) for outcome, n in sorted(queue.jobs_finished.items())])
        metric("sdlocal_queue_depth", "gauge", "Jobs waiting in the queue (the running one not counted).",
               [({}, queue.depth)])
        metric("sdlocal_queue_running", "gauge", "1 while a job runs on the worker.",
               [({}, 1 if queue.running is not None else 0)])
        current = services.engine.current_model
        metric("sdlocal_model_loaded", "gauge", "1 when a model is loaded; its labels name it.",
               [({"model": current.title, "family": current.family or ""}, 1)] if current is not None
               else [({"model": "", "family": ""}, 0)])
        metric("sdlocal_uptime_seconds", "gauge", "Seconds since the services were built.",
               [({}, round(time.time() - services.started_at, 3))])
        gpu = gpu_memory()
        if gpu:
            metric("sdlocal_gpu_memory_bytes", "gauge", "GPU memory by kind (free, total, allocated, reserved).",
                   [({"kind": kind}, value) for kind, value in gpu.items()])
        return "\n".join(lines) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    escaped = (f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + ",".join(escaped) + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def gpu_memory() -> dict[str, int]:
    """CUDA memory figures when torch is already imported and a GPU is there (never imports torch itself)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    try:
        if not torch.cuda.is_available():
            return {}
        free, total = torch.cuda.mem_get_info()
        return {"free": int(free), "total": int(total), "allocated": int(torch.cuda.memory_allocated()),
                "reserved": int(torch.cuda.memory_reserved())}
    except Exception:  # noqa: BLE001 - metrics must never fail a scrape
        return {}


def ram_figures() -> dict[str, int]:
    """Machine RAM in bytes: free (available), used, total; from /proc/meminfo or sysconf."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle if line.strip()}
        total, free = info["MemTotal"], info.get("MemAvailable", info["MemFree"])
    except (OSError, KeyError, ValueError, IndexError):
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            total, free = os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
        except (ValueError, OSError, AttributeError):
            return {}
    return {"free": free, "used": total - free, "total": total}


class RequestCounter:
    """ASGI middleware: counts API/ops requests by route template, method and status for ``/metrics``."""

    def __init__(self, app: Any, metrics: Metrics, prefixes: tuple[str, ...] = ("/sdapi/", "/health", "/ready",
                                                                                   "/metrics")) -> None:
        self.app = app
        self.metrics = metrics
        self.prefixes = prefixes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http" or not str(scope.get("path", "")).startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def capture(message: dict) -> None:
            if message.get("type") == "http.response.start":
                status["code"] = int(message.get("status", 500))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "(unmatched)"
            self.metrics.count_request(label, str(scope.get("method", "")), status["code"])


def ops_router(services: Any, metrics: Metrics, auth: Callable[..., Any] | None = None) -> APIRouter:
    """``/health`` is always open (a liveness probe); ``/ready`` and ``/metrics`` sit behind the API's auth."""
    router = APIRouter(tags=["operations"])
    guarded = [Depends(auth)] if auth is not None else []

    @router.get("/health", summary="The server is alive")
    def health() -> dict[str, Any]:
        return {"status": "ok", "uptime_seconds": round(time.time() - services.started_at, 3)}

    @router.get("/ready", summary="A model is loaded and generations can run (503 with the reason if not)",
                dependencies=guarded)
    def ready() -> JSONResponse:
        current = services.engine.current_model
        if current is not None:
            return JSONResponse({"ready": True, "model": current.title, "queue_depth": services.queue.depth})
        reason = services.load_error or services.load_status() or "no model is loaded yet"
        return JSONResponse({"ready": False, "reason": reason}, status_code=503)

    @router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse, dependencies=guarded)
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(services), media_type=METRICS_CONTENT_TYPE)

    return router
