"""The job queue's plain data: job states, the progress snapshot, a run's timing, the queue's two errors.

Kept apart from ``jobs.py`` so the worker's code reads in one sitting; ``sdlocal.jobs`` re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
INTERRUPTED, CANCELLED = "interrupted", "cancelled"
FINISHED_STATES = (DONE, FAILED, INTERRUPTED, CANCELLED)
DEFAULT_JOB_SECONDS = 10.0  # the first Retry-After guess, before any job has been timed


@dataclass(frozen=True)
class RunTiming:
    """One finished generation's measured time and size, from which the UI estimates the time per image here."""

    model_name: str
    seconds: float  # the engine's sampling + decoding time (``timings["generate"]``), without the model load
    steps: int
    width: int
    height: int
    images: int  # batch_size x batch_count


class QueueFullError(RuntimeError):
    """The queue already holds ``max_queue`` waiting jobs; ``retry_after`` is a whole-second estimate."""

    def __init__(self, waiting: int, max_queue: int, retry_after: int) -> None:
        self.waiting = waiting
        self.max_queue = max_queue
        self.retry_after = retry_after
        super().__init__(f"{waiting} jobs are already waiting (the limit is {max_queue}); "
                         f"try again in about {retry_after} s")


class JobCancelledError(RuntimeError):
    """The job was cancelled before it started."""


@dataclass
class ProgressState:
    """A snapshot of what the worker is doing, safe to read from any thread (a copy, never shared).

    ``eta_seconds``/``eta_relative`` are seconds left in the running job; ``fraction`` goes 0 to 1 across all
    batches; ``preview`` is the engine's latest small PIL preview (or None); ``preview_id`` changes whenever it
    does, so a poller can tell a new preview from the one it already has.
    """

    job_count: int = 0  # running + queued
    queued: int = 0
    job_id: str | None = None
    job_kind: str = ""  # "generate", "extras" or "call"
    job_no: int = 0  # A1111's job_no: batch index of the running job
    job_timestamp: str = ""  # A1111 style: YYYYmmddHHMMSS when the running job started
    state: str = "idle"  # idle / running
    text: str = ""  # one line for people: "Generating…", "Loading model…"
    textinfo: str = ""
    step: int = 0
    total_steps: int = 0
    batch_index: int = 0
    batch_count: int = 0
    eta_seconds: float | None = None
    fraction: float = 0.0
    preview: Any = None
    preview_id: int = 0
    interrupted: bool = False
    skipped: bool = False
    queue_position: int = 0  # for progress(job): jobs ahead of it

    @property
    def eta_relative(self) -> float:
        return float(self.eta_seconds or 0.0)
