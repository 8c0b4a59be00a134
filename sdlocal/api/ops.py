"""Operations endpoints: ``/health`` (alive), ``/ready`` (a model can be served) and ``/metrics`` (Prometheus).

Metrics use ``prometheus_client`` with one ``CollectorRegistry`` per app (never the process-wide default, so
several apps in one process, as in the tests, keep separate counts). Request counts come from a small ASGI
middleware that labels each request by its route template (never the raw path, so label cardinality stays
bounded); the queue's and the engine's figures are read at scrape time by a collector.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from sdlocal.jobs import DONE, INTERRUPTED, Job

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
METRICS_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class Metrics:
    """This app's registry: request and latency metrics kept here, the queue's and engine's read at scrape."""

    def __init__(self, services: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("sdlocal_http_requests_total", "HTTP requests by route, method and status.",
                                ["route", "method", "status"], registry=self.registry)
        self.generation_seconds = Histogram("sdlocal_generation_seconds",
                                            "Time from a generation job's start to its result.",
                                            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.request_seconds = Histogram("sdlocal_http_request_seconds",
                                         "API request latency, end to end, by route.", ["route"],
                                         buckets=LATENCY_BUCKETS, registry=self.registry)
        self.auth: Any = None  # the API's ApiAuth (per-token counts), when it has one
        self.limiter: Any = None  # the API's RateLimiter, when limits are on
        self.registry.register(_ServiceCollector(services))
        self.registry.register(_GuardCollector(self))

    def count_request(self, route: str, method: str, status: int, seconds: float | None = None) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        if seconds is not None:
            self.request_seconds.labels(route=route).observe(seconds)

    def on_job_finished(self, job: Job) -> None:
        """Queue listener: the latency of each generation that produced a result."""
        if job.kind == "generate" and job.state in (DONE, INTERRUPTED) and job.duration is not None:
            self.generation_seconds.observe(job.duration)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ServiceCollector:
    """The figures the queue and the engine already keep, as metrics at each scrape (nothing to keep in sync)."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: its label sets depend on the loaded model

    def collect(self) -> Iterator[Metric]:
        queue = self.services.queue
        yield _counter("sdlocal_images_generated_total", "Images generated since the server started.",
                       queue.images_generated)
        jobs = CounterMetricFamily("sdlocal_jobs_total", "Finished queue jobs by outcome.", labels=["outcome"])
        for outcome, count in sorted(queue.jobs_finished.items()):
            jobs.add_metric([outcome], count)
        yield jobs
        yield _gauge("sdlocal_queue_depth", "Jobs waiting in the queue (the running one not counted).", queue.depth)
        yield _gauge("sdlocal_queue_running", "1 while a job runs on the worker.", 1 if queue.running else 0)
        yield _gauge("sdlocal_queue_capacity", "The most jobs that may wait; the queue is full at this depth.",
                     getattr(queue, "max_queue", 0))
        yield _counter("sdlocal_queue_full_total", "Submissions refused (503) because the queue was full.",
                       getattr(queue, "refused_full", 0))
        if not getattr(self.services, "worker_metrics", False):  # the cluster's come from its replicas
            loads = CounterMetricFamily("sdlocal_model_loads_total", "Checkpoint loads from disk by outcome.",
                                        labels=["outcome"])
            for outcome, count in sorted(dict(getattr(self.services.engine, "load_counts", {}) or {}).items()):
                loads.add_metric([outcome], count)
            yield loads
        yield from _cache_metrics(getattr(self.services, "result_cache", None))
        loaded = GaugeMetricFamily("sdlocal_model_loaded", "1 when a model is loaded; its labels name it.",
                                   labels=["model", "family"])
        current = self.services.engine.current_model
        loaded.add_metric([current.title, current.family or ""] if current is not None else ["", ""],
                          1 if current is not None else 0)
        yield loaded
        yield _gauge("sdlocal_uptime_seconds", "Seconds since the services were built.",
                     round(time.time() - self.services.started_at, 3))
        gpu = gpu_memory()
        if gpu:
            memory = GaugeMetricFamily("sdlocal_gpu_memory_bytes",
                                       "GPU memory by kind (free, total, allocated, reserved).", labels=["kind"])
            for kind, value in gpu.items():
                memory.add_metric([kind], value)
            yield memory
        if not getattr(self.services, "worker_metrics", False):  # the cluster's GPUs are on its workers
            yield from nvml_metrics()


def _cache_metrics(cache: Any) -> Iterator[Metric]:
    """The result cache's hits and misses and its size (zero while there is no cache)."""
    requests = CounterMetricFamily("sdlocal_result_cache_requests_total",
                                   "Result cache lookups by result (hit: answered without generating).",
                                   labels=["result"])
    requests.add_metric(["hit"], getattr(cache, "hits", 0))
    requests.add_metric(["miss"], getattr(cache, "misses", 0))
    yield requests
    yield _gauge("sdlocal_result_cache_entries", "Entries in the result cache.",
                 cache.entries() if cache is not None else 0)


class _GuardCollector:
    """Per-token request counts and rate-limit refusals, read from the API's guards at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        limiter, auth = self.metrics.limiter, self.metrics.auth
        yield _counter("sdlocal_rate_limited_total", "Requests refused (429) by the rate limits.",
                       getattr(limiter, "refused", 0))
        tokens = CounterMetricFamily("sdlocal_api_token_requests_total", "API requests by API token name.",
                                     labels=["token"])
        for name, count in sorted(dict(getattr(auth, "requests", {}) or {}).items()):
            tokens.add_metric([name], count)
        yield tokens


NVML_FAMILIES = (
    ("sdlocal_gpu_utilization_percent", "GPU utilisation (NVML), percent."),
    ("sdlocal_gpu_memory_used_bytes", "GPU memory in use (NVML), bytes."),
    ("sdlocal_gpu_memory_total_bytes", "GPU memory in all (NVML), bytes."),
    ("sdlocal_gpu_temperature_celsius", "GPU temperature (NVML), degrees Celsius."),
)


def nvml_readings(indices: list[int] | None = None) -> list[tuple[float, float, float, float]]:
    """(utilisation %, memory used, memory total, temperature C) per NVIDIA GPU (those in ``indices``, else all);
    [] where NVML does not load (no NVIDIA driver, or ``nvidia-ml-py`` not installed: the ``cluster`` extra)."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - pynvml raises NVMLError_* for a missing driver or library
        return []
    readings = []
    try:
        for index in indices if indices is not None else range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            readings.append((float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu), float(memory.used),
                             float(memory.total),
                             float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))))
    except Exception:  # noqa: BLE001 - a GPU that stops answering must not fail the scrape
        return readings
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
    return readings


def nvml_metrics(readings: list[tuple[float, float, float, float]] | None = None) -> Iterator[Metric]:
    """The NVML gauges, one series per GPU; the families are always there (empty without NVML), so alert rules
    and dashboards name metrics that exist on every sdlocal."""
    readings = nvml_readings() if readings is None else readings
    for position, (name, help_text) in enumerate(NVML_FAMILIES):
        family = GaugeMetricFamily(name, help_text, labels=["gpu"])
        for index, values in enumerate(readings):
            family.add_metric([str(index)], values[position])
        yield family


def _counter(name: str, help_text: str, value: float) -> Metric:
    return CounterMetricFamily(name, help_text, value=value)


def _gauge(name: str, help_text: str, value: float) -> Metric:
    return GaugeMetricFamily(name, help_text, value=value)


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
        started = time.perf_counter()

        async def capture(message: dict) -> None:
            if message.get("type") == "http.response.start":
                status["code"] = int(message.get("status", 500))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "(unmatched)"
            self.metrics.count_request(label, str(scope.get("method", "")), status["code"],
                                       time.perf_counter() - started)


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
        blocker = getattr(services, "not_ready_reason", None)  # the cluster's: no generator answers yet
        blocked = blocker() if callable(blocker) else ""
        if current is not None and not blocked:
            return JSONResponse({"ready": True, "model": current.title, "queue_depth": services.queue.depth})
        reason = blocked or services.load_error or services.load_status() or "no model is loaded yet"
        return JSONResponse({"ready": False, "reason": reason}, status_code=503)

    @router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse, dependencies=guarded)
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    return router
