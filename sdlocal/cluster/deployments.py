"""The two Ray Serve deployments: the ingress (sdlocal's A1111 API) and the generators (one GPU each).

The ingress builds its FastAPI app with ``sdlocal.server.create_app``, the code behind ``sdlocal serve --api
--nowebui``, over ``ClusterServices``. A generator replica is a one-machine sdlocal without the web: an
``Engine`` with its own model cache, a ``JobQueue`` (so loads never race a generation and images are saved as
sdlocal saves them) and an ``OutputStore`` over the shared data dir. Checkpoints are Serve's multiplexed
models: requests carry the checkpoint name, Serve routes them to a replica that holds it, and ``get_model``
loads it on a miss. Each replica posts its figures to a named ``StatsBoard`` actor, which the ingress reads
when ``/metrics`` is scraped.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any

import ray
from ray import serve

from sdlocal.cluster.config import ClusterConfig
from sdlocal.cluster.services import ClusterQueue, ClusterServices, DiscoveryEngine, Failure
from sdlocal.engine.request import GenerationRequest

BOARD_NAMESPACE = "sdlocal"
READY_CACHE_S = 3.0
GPU_REPORT_S = 15.0  # how often a replica posts its GPU gauges when idle (a scrape is usually every 15-30 s)
BUTTON_POLL_S = 0.25  # how soon Interrupt/Skip reach a running generation (a step of a 512x512 image: ~0.1 s)


@ray.remote(num_cpus=0)
class StatsBoard:
    """The generators' latest figures by replica id: each posts after every load and job, the ingress reads."""

    def __init__(self) -> None:
        self._stats: dict[str, dict[str, Any]] = {}
        self._running: dict[str, str] = {}  # job id -> the button pressed for it ("" none yet)

    def report(self, replica: str, stats: dict[str, Any]) -> None:
        self._stats[replica] = stats

    def all(self) -> dict[str, dict[str, Any]]:
        return dict(self._stats)

    # Interrupt and Skip: the ingress presses for its jobs, the replica running one polls for its own.
    def start(self, job_id: str) -> None:
        self._running[job_id] = ""

    def end(self, job_id: str) -> None:
        self._running.pop(job_id, None)

    def running_jobs(self) -> list[str]:
        """The jobs a replica has started and not ended (one whose replica died stays listed: it never ended)."""
        return list(self._running)

    def press(self, job_ids: list[str], button: str) -> int:
        """Press ``button`` ("interrupt" or "skip") for those of ``job_ids`` running now; how many that was."""
        pressed = [job_id for job_id in job_ids if job_id in self._running]
        for job_id in pressed:
            self._running[job_id] = button
        return len(pressed)

    def pressed(self, job_id: str) -> str:
        """The button pressed for ``job_id`` since the last ask ("" none), cleared by asking."""
        button = self._running.get(job_id, "")
        if button:
            self._running[job_id] = ""
        return button


def stats_board(name: str) -> Any:
    """The app's board (made by whichever deployment asks first; it outlives a replica that dies)."""
    return StatsBoard.options(name=name, namespace=BOARD_NAMESPACE, get_if_exists=True,
                              lifetime="detached").remote()


class GeneratorWorker:
    """What a generator replica does; ``generator_deployment`` adds Serve's multiplexed ``get_model``."""

    def __init__(self, config: ClusterConfig, board_name: str) -> None:
        from sdlocal.engine import Engine
        from sdlocal.jobs import JobQueue
        from sdlocal.outputs import OutputStore

        self.engine = Engine(config.engine_config())
        self.queue = JobQueue(self.engine, OutputStore(config.data_dir / "outputs"), max_queue=1000)
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.board = stats_board(board_name)
        self.loads: dict[str, int] = {}
        self.failed_loads = 0
        self.running = 0
        self.seconds: deque[float] = deque(maxlen=100)
        self._lock = threading.Lock()
        # This replica's GPUs as NVML numbers them (Ray's ids are the node's physical indices); [] on logical GPUs.
        self.gpu_ids = [int(i) for i in ray.get_gpu_ids() if str(i).isdigit()]
        threading.Thread(target=self._report_gpus, name="sdlocal-gpu-report", daemon=True).start()

    def _report_gpus(self) -> None:
        while True:
            try:
                self._report()
            except Exception:  # noqa: BLE001 - a board that is briefly away must not end the reports
                pass
            time.sleep(GPU_REPORT_S)

    async def load_checkpoint(self, model_id: str) -> str:
        """Load ``model_id`` into this replica's engine (on its queue: never under a running generation)."""
        job = self.queue.submit_call(lambda: self.engine.load(model_id), label=f"Loading {model_id}", source="cluster")
        try:
            await asyncio.to_thread(job.wait, 900)
        except Exception:
            with self._lock:
                self.failed_loads += 1
            self._report()
            raise
        with self._lock:
            self.loads[model_id] = self.loads.get(model_id, 0) + 1
        self._report()
        return model_id

    async def generate(self, request: GenerationRequest, save: bool, job_id: str = "") -> Any:
        """(GenerationResult, saved paths) for ``request`` with the multiplexed model, or a ``Failure``.

        ``job_id`` is the ingress's job: Interrupt and Skip pressed for it reach this run through the board.
        """
        model_id = serve.get_multiplexed_model_id()
        await self.board.start.remote(job_id)  # from here a press for it waits for the run (even while it loads)
        with self._lock:
            self.running += 1
        self._report()
        try:
            await self.get_model(model_id)  # type: ignore[attr-defined] - added by generator_deployment
            request.model = model_id
            job = self.queue.submit(request, save=save, source="cluster")
            watcher = asyncio.create_task(self._watch_buttons(job_id, job))
            try:
                result = await asyncio.to_thread(job.wait)
            finally:
                watcher.cancel()
            if job.duration is not None:
                self.seconds.append(round(job.duration, 3))
            return result, list(job.saved_paths)
        except Exception as exc:  # noqa: BLE001 - sent back as values the ingress turns into API errors
            return Failure.of(exc)
        finally:
            self.board.end.remote(job_id)
            with self._lock:
                self.running -= 1
            self._report()

    async def _watch_buttons(self, job_id: str, job: Any) -> None:
        """Apply Interrupt/Skip pressed on the ingress to this run (its own controls: never another job's)."""
        while not job.done():
            button = await self.board.pressed.remote(job_id)
            if button == "interrupt":
                job.interrupted = True
                job.control.interrupt()
            elif button == "skip":
                job.skipped = True
                job.control.skip()
            await asyncio.sleep(BUTTON_POLL_S)

    def ready(self) -> bool:
        """A cheap answer for the ingress's ``/ready``."""
        return True

    def actor_name(self) -> str:
        """This replica's Ray actor name (to find it in ``ray.get_actor(name, namespace="serve")``)."""
        return ray.get_runtime_context().get_actor_name() or ""

    def stats(self) -> dict[str, Any]:
        """This replica's figures: model loads by name, failed loads, jobs by outcome, images, recent durations."""
        with self._lock:
            return {"replica": self.replica, "actor": self.actor_name(), "loads": dict(self.loads),
                    "failed_loads": self.failed_loads, "jobs": dict(self.queue.jobs_finished),
                    "images": self.queue.images_generated, "running": self.running,
                    "generation_seconds": list(self.seconds), "at": time.time(),
                    "gpus": {str(index): list(values)
                             for index, values in zip(self.gpu_ids, self._gpu_readings(), strict=False)}}

    def _gpu_readings(self) -> list[tuple[float, float, float, float]]:
        from sdlocal.api.ops import nvml_readings

        return nvml_readings(self.gpu_ids) if self.gpu_ids else []

    def _report(self) -> None:
        self.board.report.remote(self.replica, self.stats())


def generator_deployment(config: ClusterConfig) -> Any:
    """The generator deployment with the config's GPUs, queue bound, autoscaling and models per replica."""
    spec = config.generator

    @serve.deployment(name="Generator", ray_actor_options={"num_gpus": spec.num_gpus, "num_cpus": 0.5},
                      max_ongoing_requests=spec.max_ongoing_requests, max_queued_requests=spec.max_queued_requests,
                      autoscaling_config={"min_replicas": spec.min_replicas, "max_replicas": spec.max_replicas,
                                          "target_ongoing_requests": spec.target_ongoing_requests})
    class Generator(GeneratorWorker):
        @serve.multiplexed(max_num_models_per_replica=spec.max_models_per_replica)
        async def get_model(self, model_id: str) -> str:
            return await self.load_checkpoint(model_id)

    return Generator


class IngressApp:
    """The ingress replica: ``create_app`` over ``ClusterServices`` (see the module docstring)."""

    def __init__(self, generator: Any, config: ClusterConfig, board_name: str) -> None:
        from sdlocal.cluster.metrics import ClusterCollector
        from sdlocal.outputs import OutputStore
        from sdlocal.presets import PresetStore
        from sdlocal.server import create_app

        settings = config.ingress_settings()
        engine = DiscoveryEngine(settings.to_engine_config(), config.default_model)
        board = stats_board(board_name)
        queue = ClusterQueue(generator, engine, max_queue=config.generator.max_queued_requests,
                             press=lambda ids, button: ray.get(board.press.remote(ids, button), timeout=5))
        presets = PresetStore(settings.presets_dir, samplers=engine.samplers(), schedules=engine.schedules())
        self.generator = generator
        self._ready_at, self._ready = 0.0, False
        self._ready_lock = threading.Lock()
        self.services = ClusterServices(settings=settings, engine=engine, queue=queue,
                                        store=OutputStore(settings.outputs_dir), presets=presets,
                                        ready_probe=self.generators_ready, result_cache=config.result_cache())
        self.asgi = create_app(self.services, settings)
        self.asgi.state.metrics.registry.register(ClusterCollector(lambda: ray.get(board.all.remote(), timeout=5)))

    def __serve_build_asgi_app__(self) -> Any:
        return self.asgi

    def generators_ready(self) -> bool:
        """True when a generator replica answers ``ready()`` (or all are busy but running); kept a few seconds."""
        with self._ready_lock:
            if time.monotonic() - self._ready_at < READY_CACHE_S:
                return self._ready
            try:
                self._ready = bool(self.generator.ready.remote().result(timeout_s=2))
            except TimeoutError:
                self._ready = running_replicas("Generator") > 0  # busy replicas do not answer at once
            except Exception:  # noqa: BLE001 - any failure to answer is "not ready"
                self._ready = False
            self._ready_at = time.monotonic()
            return self._ready


def running_replicas(deployment: str) -> int:
    """How many replicas of ``deployment`` (in this replica's app) Serve reports as RUNNING."""
    app = serve.get_replica_context().app_name
    status = serve.status().applications.get(app)
    found = status.deployments.get(deployment) if status is not None else None
    return int(found.replica_states.get("RUNNING", 0)) if found is not None else 0


def ingress_deployment(ingress_cpus: float = 0.5, max_ongoing_requests: int = 256) -> Any:
    """The ingress deployment; it only translates and waits, so it holds many requests at once."""
    return serve.deployment(name="Ingress", ray_actor_options={"num_cpus": ingress_cpus},
                            max_ongoing_requests=max_ongoing_requests)(serve.ingress()(IngressApp))
