"""The ingress's ``Services``: the same routes as one machine, with generations sent to the generator replicas.

``create_app`` builds the A1111 API over any object with ``Services``' surface; here the engine only discovers
models (it never loads one: the workers do) and the queue hands each job to Ray Serve with the checkpoint as
the multiplexed model id, so requests for a model go to the replicas that already hold it. Ray's backpressure
(a generator's ``max_queued_requests`` reached) becomes ``QueueFullError``, so the API answers 503 +
Retry-After exactly as one machine does when its queue is full.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sdlocal.engine import Engine
from sdlocal.engine.models import ModelEntry
from sdlocal.engine.request import EngineError, GenerationRequest, GenerationResult, ModelNotFoundError, RequestError
from sdlocal.jobs import CANCELLED, DONE, FAILED, INTERRUPTED, RUNNING, Job, ProgressState, QueueFullError

log = logging.getLogger(__name__)

DEFAULT_JOB_SECONDS = 10.0
WORKER_LOST_RETRY_S = 5  # a killed replica is back in about 5 s (measured: FACTS.md)


class DiscoveryEngine(Engine):
    """A real ``Engine`` over the shared models folder that never loads a model: discovery, samplers, checks.

    ``current_model`` is the cluster's default (config ``default_model``, else the first supported model) and
    ``load`` only changes it, so ``POST /sdapi/v1/options`` with ``sd_model_checkpoint`` and A1111's "switch
    back after the override" work unchanged while the checkpoints stay on the workers.
    """

    def __init__(self, config: Any, default_model: str = "") -> None:
        super().__init__(config)
        self._default_name = default_model

    @property
    def current_model(self) -> ModelEntry | None:
        if self._default_name:
            try:
                return self.find_model(self._default_name, hash_missing=False)
            except ModelNotFoundError:
                return None
        supported = [entry for entry in self.models() if entry.supported]
        return supported[0] if supported else None

    def load(self, name: str | None = None, on_status: Callable[[str], None] | None = None) -> ModelEntry:
        """Make ``name`` the cluster's default model (the workers load it when a request asks for it)."""
        entry = self.find_model(name) if name else self.current_model
        if entry is None:
            raise ModelNotFoundError("(default)", [])
        if not entry.supported:
            raise EngineError(f"{entry.name} cannot be loaded: {entry.reason}")
        self._default_name = entry.name
        return entry

    def generate(self, *args: Any, **kwargs: Any) -> GenerationResult:
        raise RuntimeError("the ingress does not generate: its ClusterQueue sends requests to the generators")

    def unload_all(self) -> None:
        """Nothing is loaded on the ingress."""


@dataclass
class Failure:
    """An error from a worker, as plain values: sdlocal's exceptions do not all survive pickling, and the API
    needs their type (RequestError -> 422, ModelNotFoundError -> 404, EngineError -> 500 with the hint)."""

    kind: str
    message: str
    hint: str = ""
    field_name: str = ""
    value: Any = None
    allowed: str = ""
    known: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        if isinstance(exc, RequestError):
            return cls("request", str(exc), field_name=exc.field, value=exc.value, allowed=exc.allowed)
        if isinstance(exc, ModelNotFoundError):
            return cls("model", str(exc), field_name=exc.name, known=list(exc.known))
        if isinstance(exc, EngineError):
            return cls("engine", exc.message, hint=exc.hint)
        return cls("internal", f"{type(exc).__name__}: {exc}")

    def to_exception(self) -> Exception:
        if self.kind == "request":
            return RequestError(self.field_name, self.value, self.allowed)
        if self.kind == "model":
            return ModelNotFoundError(self.field_name, self.known)
        if self.kind == "engine":
            return EngineError(self.message, self.hint)
        return RuntimeError(f"a generator failed: {self.message}")


class ClusterQueue:
    """``JobQueue``'s surface for the API, over the generator deployment's handle (see the module docstring).

    Each job runs on its own thread that waits on the handle; Ray Serve does the queueing and the routing.
    ``depth`` counts the jobs the cluster holds for this ingress (waiting or running on a replica: the ingress
    cannot see when a replica starts one). Counters are the ingress's own view: jobs by outcome, images made.
    """

    def __init__(self, handle: Any, engine: DiscoveryEngine, max_queue: int, timeout_s: float = 3600.0,
                 press: Callable[[list[str], str], int] | None = None) -> None:
        self.handle = handle
        self.press = press  # (job ids, "interrupt" | "skip") -> how many were running: the stats board's
        self.engine = engine
        self.max_queue = max_queue  # the generator's max_queued_requests (per replica)
        self.timeout_s = timeout_s
        self.listeners: list[Callable[[Job], None]] = []
        self.images_generated = 0
        self.jobs_finished: dict[str, int] = {DONE: 0, FAILED: 0, INTERRUPTED: 0, CANCELLED: 0}
        self.refused_full = 0  # backpressure refusals (sdlocal_queue_full_total)
        self._lock = threading.Lock()
        self._in_flight: list[Job] = []
        self._recent_seconds: deque[float] = deque(maxlen=20)
        self._closed = False

    # ------------------------------------------------------------------------------------------ submitting
    def submit(self, request: GenerationRequest, save: bool = True, source: str = "api") -> Job:
        """Check ``request`` here (``RequestError`` at once, nothing sent) and send it with its model's name."""
        self.engine.validate(request)
        if not request.model:
            default = self.engine.current_model
            if default is None:
                raise ModelNotFoundError("(default)", [])
            request.model = default.name
        job = Job("generate", request=request, save=save, source=source)
        return self._start(job, lambda: self._generate(job))

    def submit_call(self, fn: Callable[[], Any], label: str = "", source: str = "api", force: bool = False) -> Job:
        """Run ``fn()`` on a thread of the ingress (only the default-model switch calls this: nothing loads here)."""
        job = Job("call", fn=fn, source=source, label=label or getattr(fn, "__name__", "call"))
        return self._start(job, fn)

    def submit_extras(self, *args: Any, **kwargs: Any) -> Job:
        raise _not_on_cluster("Extras (upscaling)")

    def submit_script(self, *args: Any, **kwargs: Any) -> Job:
        raise _not_on_cluster("Scripts (X/Y/Z plot, prompt matrix, prompts from file)")

    def _start(self, job: Job, work: Callable[[], Any]) -> Job:
        with self._lock:
            if self._closed:
                raise RuntimeError("the cluster queue is closed")
            self._in_flight.append(job)
        threading.Thread(target=self._run, args=(job, work), name=f"sdlocal-cluster-{job.id}", daemon=True).start()
        return job

    def _run(self, job: Job, work: Callable[[], Any]) -> None:
        job.state, job.started = RUNNING, time.time()
        try:
            value = work()
            state = INTERRUPTED if getattr(value, "interrupted", False) else DONE
            job._finish(state, result=value)
        except Exception as exc:  # noqa: BLE001 - becomes the job's error, which the API renders
            if isinstance(exc, QueueFullError):
                with self._lock:
                    self.refused_full += 1
            elif not isinstance(exc, (RequestError, EngineError, ModelNotFoundError)):
                log.warning("cluster job %s failed: %s", job.id, exc)
            job._finish(FAILED, error=exc)
        finally:
            with self._lock:
                self._in_flight.remove(job)
                if job.state in self.jobs_finished:
                    self.jobs_finished[job.state] += 1
            for listener in list(self.listeners):
                try:
                    listener(job)
                except Exception:  # noqa: BLE001 - a listener never fails a job
                    log.exception("job listener failed")

    def _generate(self, job: Job) -> GenerationResult:
        from ray.exceptions import ActorDiedError, ActorUnavailableError
        from ray.serve.exceptions import BackPressureError

        assert job.request is not None
        routed = self.handle.options(multiplexed_model_id=job.request.model)  # to a replica holding the model
        response = routed.generate.remote(job.request, job.save, job.id)
        try:
            outcome = response.result(timeout_s=self.timeout_s)
        except BackPressureError:
            raise QueueFullError(self.max_queue, self.max_queue, self._retry_after()) from None
        except (ActorDiedError, ActorUnavailableError) as exc:
            raise worker_lost(exc) from None
        if isinstance(outcome, Failure):
            raise outcome.to_exception()
        result, paths = outcome
        job.saved_paths = list(paths)
        with self._lock:
            self.images_generated += len(result.images)
            self._recent_seconds.append(time.time() - (job.started or time.time()))
        return result

    def _retry_after(self) -> int:
        with self._lock:
            seconds = list(self._recent_seconds)
        average = sum(seconds) / len(seconds) if seconds else DEFAULT_JOB_SECONDS
        return max(1, math.ceil(average * 1.5))  # as one machine: the running job's rest plus one waiting

    # ------------------------------------------------------------------------------------------ reading
    @property
    def depth(self) -> int:
        with self._lock:
            return sum(1 for job in self._in_flight if job.kind == "generate")

    @property
    def job_count(self) -> int:
        return self.depth

    @property
    def running(self) -> Job | None:
        with self._lock:
            return next((job for job in self._in_flight if job.kind == "generate"), None)

    def progress(self, job: Job | None = None) -> ProgressState:
        """How many jobs the cluster holds for this ingress; per-step progress stays on the workers."""
        count = self.depth
        oldest = self.running
        if oldest is None:
            return ProgressState(job_count=count, queued=count)
        return ProgressState(job_id=oldest.id, job_kind=oldest.kind, state="running", text="Generating on the cluster…",
                             job_count=count, queued=count)

    def recent_runs(self) -> list[Any]:
        return []

    # ------------------------------------------------------------------------------------------ control
    def interrupt(self) -> bool:
        """Stop this ingress's generations running on the workers after their current step (finished images are
        kept, as on one machine); jobs still waiting in Ray's queues run. False when none was running."""
        return self._press("interrupt")

    def skip(self) -> bool:
        """Skip the current batch of this ingress's running generations. False when none was running."""
        return self._press("skip")

    def _press(self, button: str) -> bool:
        with self._lock:
            ids = [job.id for job in self._in_flight if job.kind == "generate"]
        if not ids or self.press is None:
            return False
        try:
            return self.press(ids, button) > 0
        except Exception:  # noqa: BLE001 - a button that cannot reach the board presses nothing
            log.warning("could not reach the generators to %s", button, exc_info=True)
            return False

    def close(self, timeout: float | None = 5.0) -> None:
        with self._lock:
            self._closed = True


def worker_lost(exc: BaseException) -> Exception:
    """A replica died under the request (a node lost, the process killed): 503 + Retry-After, as Serve restarts it."""
    from sdlocal.api.sdapi import ApiError

    return ApiError(503, "Service Unavailable",
                    "The generator running this request stopped (its worker died or its node went away); the "
                    f"cluster is starting another. Send the request again. ({type(exc).__name__})",
                    headers={"Retry-After": str(WORKER_LOST_RETRY_S)})


def _not_on_cluster(what: str) -> Exception:
    from sdlocal.api.sdapi import ApiError

    return ApiError(501, "Not Implemented", f"{what} is not available on the cluster yet; use txt2img or img2img, or "
                    "run it on a single sdlocal server (sdlocal serve --api).")


@dataclass
class ClusterServices:
    """``Services`` for the ingress: the same attributes the API and the ops routes read (see the module docstring).

    ``ready`` answers whether a generator replica answers (``/ready``); ``start_background_load`` has nothing
    to load: the workers load a checkpoint when the first request for it arrives.
    """

    settings: Any
    engine: DiscoveryEngine
    queue: ClusterQueue
    store: Any
    presets: Any
    ready_probe: Callable[[], bool] = lambda: True
    styles: Any = None
    started_at: float = field(default_factory=time.time)
    load_error: str | None = None
    result_cache: Any = None  # sdlocal.result_cache.RedisResultCache, shared by the ingress replicas (None: off)
    worker_metrics: bool = True  # model loads come from the replicas (sdlocal.cluster.metrics), not the ingress

    def __post_init__(self) -> None:
        if self.styles is None:
            from sdlocal.styles import StyleLibrary

            self.styles = StyleLibrary(self.settings.data_dir, self.settings.models_dirs)

    def load_status(self) -> str:
        if self.engine.current_model is None:
            return (f"No model found yet: put a checkpoint in {self.settings.models_dirs[0]} (the models_dir of "
                    "cluster.yaml) and refresh the checkpoints.")
        return ""

    def not_ready_reason(self) -> str:
        """Why ``/ready`` says no although a model exists: no generator replica answers (yet)."""
        return "" if self.ready_probe() else "no generator replica answers yet (they are starting, or gone)"

    def start_background_load(self) -> None:
        return None

    def runtime_id(self) -> str:
        """What runs the models, for the result cache's key: the workers' device and precision from cluster.yaml
        (the ingress runs none itself, so its own hardware says nothing)."""
        return f"cluster/{self.settings.device}/{self.settings.precision}"

    def capabilities(self) -> Any:
        raise EngineError("the ingress runs no model; each generator reports its own device in its log")

    def loras(self, refresh: bool = False) -> list[Any]:
        return list(self.engine.loras(refresh=refresh))

    def vaes(self, refresh: bool = False) -> list[Any]:
        return list(self.engine.vaes(refresh=refresh))

    def loaded_family(self) -> str | None:
        return getattr(self.engine.current_model, "family", None)

    def close(self) -> None:
        self.queue.close()
