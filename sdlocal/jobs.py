"""The one FIFO queue that the UI and the HTTP API submit work to: one worker thread, one GPU job at a time.

Why one worker: a GPU holds one model and runs one generation well; two at once only thrash memory. Model
loads and switches go through the same worker (``submit_call``), so a load never pulls a model from under a
running generation. The queue is bounded so a flood of API calls is refused early (``QueueFullError`` with a
``retry_after`` estimate, which the API turns into 503 + ``Retry-After``) instead of piling up for hours.

The worker never dies: any exception in a job becomes that job's ``error`` (logged with its traceback here, on
the server; clients see only the message). Progress from the engine is kept in one ``ProgressState`` that the
UI's progress bar and ``/sdapi/v1/progress`` read from any thread.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sdlocal.engine.request import GenerationRequest, GenerationResult, Progress, RunControl
from sdlocal.job_kinds import ScriptAndExtrasRuns
from sdlocal.job_state import (  # noqa: F401 - re-exported: the adapters import them from here
    CANCELLED,
    DEFAULT_JOB_SECONDS,
    DONE,
    FAILED,
    FINISHED_STATES,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    JobCancelledError,
    ProgressState,
    QueueFullError,
    RunTiming,
)

log = logging.getLogger(__name__)


class Job:
    """One unit of work on the worker: a generation (``request``), an Extras upscale (``extras``, an
    ``ExtrasRequest``), a script (``script``, a ``ScriptPlan``: many generations and a grid) or a call (``fn``,
    e.g. a model load)."""

    def __init__(self, kind: str, request: GenerationRequest | None = None, fn: Callable[[], Any] | None = None,
                 save: bool = True, source: str = "ui", label: str = "", extras: Any = None,
                 store: Any = None, script: Any = None, save_grid: bool = True) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.store = store  # where this job's pictures are saved, when not the queue's own store
        self.kind = kind
        self.request = request
        self.extras = extras
        self.script = script
        self.save_grid = save_grid  # a script's grids (``save`` covers its cells)
        self.fn = fn
        self.save = save
        self.source = source
        self.label = label
        self.state = QUEUED
        self.result: Any = None  # GenerationResult, ExtrasResult, ScriptResult, or a call's value
        self.error: BaseException | None = None
        self.saved_paths: list[Path] = []
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.interrupted = False
        self.skipped = False
        # This job's own Interrupt/Skip buttons, handed to the engine: a press while the job is starting
        # (before the engine's run exists) applies to this job and can never reach the next one.
        self.control = RunControl()
        self._done = threading.Event()
        self._queue: JobQueue | None = None

    @property
    def paths(self) -> list[Path]:
        """The files the images were saved to, in image order (empty when not saved)."""
        return self.saved_paths

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started

    def done(self) -> bool:
        return self._done.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds without raising; True when the job has finished (any outcome)."""
        return self._done.wait(timeout)

    def wait(self, timeout: float | None = None) -> Any:
        """The job's result once finished; re-raises its error. Raises ``TimeoutError`` if not done in time."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"job {self.id} is still {self.state} after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result

    def cancel(self) -> bool:
        """Remove a job that has not started; False when it is already running or finished."""
        queue = self._queue
        return queue is not None and queue._cancel(self)

    def _finish(self, state: str, result: Any = None, error: BaseException | None = None) -> None:
        self.state, self.result, self.error = state, result, error
        self.finished = time.time()
        self._done.set()

    def __repr__(self) -> str:
        return f"Job({self.id}, {self.kind}, {self.state})"


class JobQueue(ScriptAndExtrasRuns):
    """FIFO of jobs run one at a time on a daemon worker thread; see the module docstring for why.

    ``store`` is an ``OutputStore`` (or None: nothing is saved). ``max_queue`` bounds the jobs *waiting*; the
    running one is not counted. ``listeners`` are called with each finished job on the worker thread (metrics
    use this); a listener that raises is logged and ignored.
    """

    def __init__(self, engine: Any, store: Any = None, max_queue: int = 8) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue: {max_queue!r} is not allowed; the queue must hold at least 1 job")
        self.engine = engine
        self.store = store
        self.max_queue = max_queue
        self.listeners: list[Callable[[Job], None]] = []
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._running: Job | None = None
        self._progress = ProgressState()
        self._progress_lock = threading.Lock()
        self._previews = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._recent_seconds: deque[float] = deque(maxlen=20)
        self._recent_runs: deque[RunTiming] = deque(maxlen=20)
        # Counters (read by /metrics and the System tab).
        self.images_generated = 0
        self.jobs_finished: dict[str, int] = {DONE: 0, FAILED: 0, INTERRUPTED: 0, CANCELLED: 0}
        self.refused_full = 0  # submissions refused because the queue was full

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker thread (submit does this on first use)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the job queue is closed")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="sdlocal-worker", daemon=True)
                self._thread.start()

    def close(self, timeout: float | None = 5.0) -> None:
        """Cancel waiting jobs, interrupt the running one, and stop the worker."""
        with self._cond:
            self._closed = True
            while self._waiting:
                self._waiting.popleft()._finish(CANCELLED, error=JobCancelledError("the server is shutting down"))
            self._cond.notify_all()
        self.interrupt()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ------------------------------------------------------------------------------------------ submitting
    def submit(self, request: GenerationRequest, save: bool = True, source: str = "ui") -> Job:
        """Validate ``request`` now (``RequestError`` to the caller, nothing queued) and queue it."""
        validate = getattr(self.engine, "validate", None)
        if callable(validate):
            validate(request)
        else:
            request.validate()
        return self._enqueue(Job("generate", request=request, save=save, source=source))

    def submit_extras(self, request: Any, save: bool = True, source: str = "ui", store: Any = None) -> Job:
        """Validate an ``ExtrasRequest`` now (``RequestError`` to the caller: a bad size, an unknown upscaler) and
        queue it; each output is saved to ``extras-images`` (A1111's folder) when ``save``, in ``store`` (an
        ``OutputStore``: "Batch from Directory"'s output folder) or else the queue's own. The worker saves, so the
        pictures are kept even when the page that asked for them is closed."""
        validate = getattr(self.engine, "validate_extras", None)
        if callable(validate):
            validate(request)
        else:
            request.validate()
        return self._enqueue(Job("extras", extras=request, save=save, source=source, store=store))

    def submit_script(self, plan: Any, save: bool = True, source: str = "ui", save_grid: bool | None = None) -> Job:
        """Queue a ``ScriptPlan`` (already validated cell by cell when it was planned) as one job: one place in
        the queue, one Interrupt for the whole grid. The worker saves the cells (when the plan keeps them) with
        ``save`` and the grids with ``save_grid`` (default: as ``save``), as they are made."""
        return self._enqueue(Job("script", script=plan, save=save, source=source, label=plan.title,
                                 save_grid=save if save_grid is None else save_grid))

    def submit_call(self, fn: Callable[[], Any], label: str = "", source: str = "ui", force: bool = False) -> Job:
        """Run ``fn()`` on the worker, after the jobs already queued (model loads, runtime changes).

        ``force`` skips the bound: for the start-up load, which must never be refused.
        """
        return self._enqueue(Job("call", fn=fn, source=source, label=label or getattr(fn, "__name__", "call")),
                             force=force)

    def _enqueue(self, job: Job, force: bool = False) -> Job:
        self.start()
        with self._cond:
            if self._closed:
                raise RuntimeError("the job queue is closed")
            if not force and len(self._waiting) >= self.max_queue:
                self.refused_full += 1
                raise QueueFullError(len(self._waiting), self.max_queue, self._retry_after_locked())
            job._queue = self
            self._waiting.append(job)
            self._cond.notify_all()
        return job

    def _retry_after_locked(self) -> int:
        average = (sum(self._recent_seconds) / len(self._recent_seconds)) if self._recent_seconds \
            else DEFAULT_JOB_SECONDS
        # The running job (about half left on average) plus one waiting job must finish before a slot frees.
        return max(1, math.ceil(average * 1.5))

    def _cancel(self, job: Job) -> bool:
        with self._cond:
            if job in self._waiting:
                self._waiting.remove(job)
                job._finish(CANCELLED, error=JobCancelledError(f"job {job.id} was cancelled before it started"))
                self.jobs_finished[CANCELLED] += 1
                return True
        return False

    # ------------------------------------------------------------------------------------------ reading
    @property
    def depth(self) -> int:
        """Jobs waiting to start (the running one not counted)."""
        with self._cond:
            return len(self._waiting)

    @property
    def job_count(self) -> int:
        with self._cond:
            return len(self._waiting) + (1 if self._running is not None else 0)

    @property
    def running(self) -> Job | None:
        return self._running

    def progress(self, job: Job | None = None) -> ProgressState:
        """A copy of the current progress. With ``job`` still waiting: its own view (state "queued", text, and
        ``queue_position``, the number of jobs ahead of it) instead of the running job's steps."""
        with self._cond:
            waiting = list(self._waiting)
            running = self._running
        with self._progress_lock:
            state = replace(self._progress)
        state.queued = len(waiting)
        state.job_count = len(waiting) + (1 if running is not None else 0)
        if running is None:
            state = ProgressState(job_count=state.job_count, queued=state.queued, preview=state.preview,
                                  preview_id=state.preview_id)
        if job is not None and job in waiting:
            # Seen by a job still waiting: its place in line, not the running job's steps and preview.
            ahead = waiting.index(job) + (1 if running is not None else 0)
            return ProgressState(job_count=state.job_count, queued=state.queued, job_id=job.id, job_kind=job.kind,
                                 state=QUEUED, text="Waiting in the queue…", queue_position=ahead)
        return state

    # ------------------------------------------------------------------------------------------ control
    def interrupt(self) -> bool:
        """Stop the running generation after its current step (finished images are kept). False when idle.

        The press goes to the running job's own control, so it counts even while that job is still starting.
        """
        job = self._running
        if job is None or job.kind not in ("generate", "extras", "script"):
            return False
        job.interrupted = True
        job.control.interrupt()
        with self._progress_lock:
            self._progress.interrupted = True
            self._progress.text = "Interrupting…"
        return True

    def skip(self) -> bool:
        """Abandon the running generation's current batch and go on with the next. False when idle.

        Pressed between two batches, it skips the next one.
        """
        job = self._running
        if job is None or job.kind not in ("generate", "script"):
            return False
        job.skipped = True
        job.control.skip()
        with self._progress_lock:
            self._progress.skipped = True
        return True

    # ------------------------------------------------------------------------------------------ the worker
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed and not self._waiting:
                    return
                job = self._waiting.popleft()
                self._running = job
            try:
                self._run(job)
            except BaseException as exc:  # noqa: BLE001 - the worker must outlive any job
                log.exception("job %s failed outside its own handler", job.id)
                if not job.done():
                    job._finish(FAILED, error=exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            finally:
                with self._cond:
                    self._running = None
                self._notify(job)

    def _run(self, job: Job) -> None:
        job.state, job.started = RUNNING, time.time()
        kind_text = {"generate": "Generating…", "extras": "Upscaling…"}.get(job.kind, f"{job.label or 'Working'}…")
        if job.kind == "script":
            total_steps, batch_count = 0, len(job.script.cells)
        else:
            total_steps = job.request.denoising_steps() if job.request is not None else 0
            batch_count = job.request.batch_count if job.request is not None else 0
        with self._progress_lock:
            self._progress = ProgressState(
                job_id=job.id, job_kind=job.kind, state="running", text=kind_text,
                job_timestamp=datetime.fromtimestamp(job.started).strftime("%Y%m%d%H%M%S"),
                total_steps=total_steps, batch_count=batch_count,
                preview=self._progress.preview, preview_id=self._progress.preview_id,
            )
        try:
            if job.kind == "call":
                assert job.fn is not None
                value = job.fn()
                job._finish(DONE, result=value)
                return
            if job.kind == "extras":
                self._run_extras(job)
                return
            if job.kind == "script":
                self._run_script(job)
                return
            assert job.request is not None
            result: GenerationResult = self.engine.generate(job.request, on_progress=self._on_progress,
                                                            control=job.control)
            if job.save and self.store is not None:
                self._save(job, result)
            self.images_generated += len(result.images)
            self._recent_seconds.append(time.time() - job.started)
            self._record_timing(result)
            job._finish(INTERRUPTED if result.interrupted else DONE, result=result)
        except Exception as exc:  # noqa: BLE001 - becomes the job's error; the worker goes on
            if _is_user_error(exc):
                log.info("job %s (%s) failed: %s", job.id, job.source, exc)
            else:
                log.exception("job %s (%s) failed", job.id, job.source)
            job._finish(FAILED, error=exc)

    def recent_runs(self) -> list[RunTiming]:
        """The last finished generations' timings, oldest first (interrupted runs are left out: partial)."""
        return list(self._recent_runs)

    def _record_timing(self, result: GenerationResult) -> None:
        seconds = (getattr(result, "timings", None) or {}).get("generate")
        request = getattr(result, "request", None)
        if getattr(result, "interrupted", False) or not seconds or request is None:
            return  # fake engines in tests may return less than a GenerationResult
        self._recent_runs.append(RunTiming(model_name=getattr(result, "model_name", ""), seconds=float(seconds),
                                           steps=request.steps, width=request.width, height=request.height,
                                           images=request.batch_size * request.batch_count))

    def _save(self, job: Job, result: GenerationResult) -> None:
        """Save every image; a failed save keeps the image in the result and adds a warning (nothing is lost).

        The folder is the request's ``output_kind`` (A1111's ``txt2img`` or ``img2img``; inpainting goes with
        img2img), so scripts written for A1111's outputs folder find sdlocal's images where they expect them.
        """
        kind = job.request.output_kind if job.request is not None else "txt2img"
        for image in result.images:
            try:
                job.saved_paths.append(Path(self.store.save(image.image, image.infotext, image.seed, kind=kind)))
            except Exception as exc:  # noqa: BLE001 - a full disk must not lose the images already made
                log.exception("could not save image with seed %s", image.seed)
                result.warnings.append(f"Could not save the image with seed {image.seed}: {exc}")

    def _on_progress(self, update: Progress) -> None:
        try:
            with self._progress_lock:
                state = self._progress
                state.step, state.total_steps = update.step, update.total_steps
                state.batch_index, state.batch_count = update.batch_index, update.batch_count
                state.job_no = update.batch_index
                state.eta_seconds = update.eta_seconds
                state.fraction = update.fraction
                state.textinfo = f"Step {update.step}/{update.total_steps}"
                if update.batch_count > 1:
                    state.textinfo += f", batch {update.batch_index + 1}/{update.batch_count}"
                if update.preview is not None:
                    state.preview = update.preview
                    state.preview_id = next(self._previews)
        except Exception:  # noqa: BLE001 - progress is cosmetic; never stop a generation for it
            log.exception("progress update failed")

    def _notify(self, job: Job) -> None:
        if job.state in self.jobs_finished:
            self.jobs_finished[job.state] += 1
        for listener in list(self.listeners):
            try:
                listener(job)
            except Exception:  # noqa: BLE001
                log.exception("job listener failed")


def _is_user_error(exc: BaseException) -> bool:
    """Errors that are about the request or the machine (shown as they are), not bugs worth a traceback."""
    from sdlocal.engine.request import EngineError, RequestError

    return isinstance(exc, (RequestError, EngineError))
