"""The job queue: FIFO on one worker, bounded, progress, interrupt/skip, saving, and a worker that never dies.

A scripted engine stands in for the real one so these tests are about the queue alone and run in milliseconds;
the API tests run the same queue against a real tiny model.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from sdlocal.engine.request import (
    EngineError,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    Progress,
    RequestError,
)
from sdlocal.jobs import CANCELLED, DONE, FAILED, INTERRUPTED, JobCancelledError, JobQueue, QueueFullError


class ScriptedEngine:
    """Runs ``steps`` fake steps per batch; with ``tokens`` set, each step takes one (tests hand them out)."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.threads: set[str] = set()
        self.tokens: threading.Semaphore | None = None
        self.fail_with: BaseException | None = None
        self._stop = threading.Event()
        self._skip = threading.Event()
        self.running = threading.Event()

    def validate(self, request: GenerationRequest) -> GenerationRequest:
        return request.validate()

    def generate(self, request: GenerationRequest, on_progress=None) -> GenerationResult:
        self.threads.add(threading.current_thread().name)
        self.order.append(request.prompt)
        self._stop.clear()
        self.running.set()
        try:
            if self.fail_with is not None:
                raise self.fail_with
            images = []
            for batch in range(request.batch_count):
                self._skip.clear()
                for step in range(1, request.steps + 1):
                    if self.tokens is not None:
                        self.tokens.acquire(timeout=5)
                    if self._stop.is_set() or self._skip.is_set():
                        break
                    if on_progress:
                        on_progress(Progress(step, request.steps, batch, request.batch_count, 0.5,
                                             preview=Image.new("RGB", (8, 8))))
                if self._stop.is_set():
                    break
                if self._skip.is_set():
                    continue
                seed = 100 + batch
                images.append(GeneratedImage(Image.new("RGB", (8, 8), (batch, 0, 0)), seed, f"{request.prompt}\n"
                                             f"Steps: {request.steps}, Seed: {seed}, Size: 8x8", batch))
            return GenerationResult(images=images, request=request, model_name="m", model_hash="",
                                    seeds=[i.seed for i in images], interrupted=self._stop.is_set())
        finally:
            self.running.clear()

    def interrupt(self) -> None:
        self._stop.set()

    def skip(self) -> None:
        self._skip.set()


class MemoryStore:
    def __init__(self, fail: bool = False) -> None:
        self.saved: list[tuple[str, int]] = []
        self.fail = fail

    def save(self, image, parameters: str, seed: int, kind: str = "txt2img") -> Path:
        if self.fail:
            raise OSError("No space left on device")
        self.saved.append((parameters, seed))
        return Path(f"/out/{len(self.saved):05d}-{seed}.png")


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture
def queue(engine: ScriptedEngine):
    q = JobQueue(engine, MemoryStore(), max_queue=2)
    yield q
    if engine.tokens is not None:
        engine.tokens.release(1000)
    q.close()


def req(prompt: str = "p", **values) -> GenerationRequest:
    values = {"steps": 3, "width": 64, "height": 64, **values}
    return GenerationRequest(prompt=prompt, **values)


def test_jobs_run_in_submission_order_on_one_worker_thread(queue: JobQueue, engine: ScriptedEngine) -> None:
    engine.tokens = threading.Semaphore(0)  # "a" holds the worker until the tokens are handed out
    jobs = [queue.submit(req("a"))]
    assert engine.running.wait(5)  # "a" left the line, so "b" and "c" fit its two waiting places
    jobs += [queue.submit(req(name)) for name in ("b", "c")]
    engine.tokens.release(1000)
    results = [job.wait(10) for job in jobs]
    assert engine.order == ["a", "b", "c"]
    assert engine.threads == {"sdlocal-worker"}
    assert all(job.state == DONE for job in jobs) and results[2].request.prompt == "c"


def test_images_are_saved_with_their_parameters_and_paths_kept(queue: JobQueue) -> None:
    job = queue.submit(req("saved", batch_count=2))
    job.wait(10)
    assert queue.store.saved == [("saved\nSteps: 3, Seed: 100, Size: 8x8", 100),
                                 ("saved\nSteps: 3, Seed: 101, Size: 8x8", 101)]
    assert [p.name for p in job.saved_paths] == ["00001-100.png", "00002-101.png"] and job.paths == job.saved_paths
    assert queue.images_generated == 2
    unsaved = queue.submit(req("not saved"), save=False)
    unsaved.wait(10)
    assert unsaved.saved_paths == [] and len(queue.store.saved) == 2


def test_a_failed_save_keeps_the_images_and_warns(engine: ScriptedEngine) -> None:
    q = JobQueue(engine, MemoryStore(fail=True))
    try:
        result = q.submit(req("disk full")).wait(10)
        assert len(result.images) == 1 and "No space left" in result.warnings[0]
    finally:
        q.close()


def test_a_bad_request_is_refused_at_submit_and_nothing_is_queued(queue: JobQueue, engine: ScriptedEngine) -> None:
    with pytest.raises(RequestError) as caught:
        queue.submit(req(width=100))
    assert caught.value.field == "width"
    assert queue.depth == 0 and engine.order == []


def test_past_the_bound_submit_raises_queue_full_with_retry_after(queue: JobQueue, engine: ScriptedEngine) -> None:
    engine.tokens = threading.Semaphore(0)
    running = queue.submit(req("running"))
    assert engine.running.wait(5)
    waiting = [queue.submit(req(f"w{i}")) for i in range(2)]
    with pytest.raises(QueueFullError) as caught:
        queue.submit(req("one too many"))
    assert caught.value.retry_after >= 1 and caught.value.max_queue == 2
    assert queue.depth == 2 and queue.job_count == 3
    engine.tokens.release(1000)
    for job in (running, *waiting):
        job.wait(10)
    assert queue.submit(req("room again")).wait(10) is not None


def test_cancel_removes_a_waiting_job_only(queue: JobQueue, engine: ScriptedEngine) -> None:
    engine.tokens = threading.Semaphore(0)
    running = queue.submit(req("running"))
    assert engine.running.wait(5)
    waiting = queue.submit(req("cancel me"))
    seen_by_waiting = queue.progress(waiting)
    assert seen_by_waiting.queue_position == 1 and seen_by_waiting.state == "queued" and seen_by_waiting.step == 0
    assert queue.progress(running).job_id == running.id and queue.progress().queue_position == 0
    assert waiting.cancel() and waiting.state == CANCELLED
    assert not running.cancel()
    with pytest.raises(JobCancelledError):
        waiting.wait(1)
    engine.tokens.release(1000)
    running.wait(10)
    assert engine.order == ["running"]


def test_progress_reports_steps_preview_and_job_count(queue: JobQueue, engine: ScriptedEngine) -> None:
    engine.tokens = threading.Semaphore(0)
    job = queue.submit(req("slow", steps=4))
    assert engine.running.wait(5)
    engine.tokens.release(1)
    deadline = time.monotonic() + 5
    state = queue.progress()
    while state.step == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
        state = queue.progress()
    assert state.job_id == job.id and state.job_count == 1 and state.total_steps == 4
    assert state.step >= 1 and 0 < state.fraction < 1 and state.preview is not None and state.preview_id > 0
    assert state.textinfo.startswith("Step ") and state.job_timestamp
    engine.tokens.release(1000)
    job.wait(10)
    idle = queue.progress()
    assert idle.job_count == 0 and idle.job_id is None and idle.step == 0


def test_interrupt_keeps_finished_images_and_marks_the_job(queue: JobQueue, engine: ScriptedEngine) -> None:
    engine.tokens = threading.Semaphore(0)
    job = queue.submit(req("stop me", batch_count=3, steps=2))
    assert engine.running.wait(5)
    engine.tokens.release(3)  # the first batch (2 steps) and one step of the second
    deadline = time.monotonic() + 5
    while (queue.progress().batch_index, queue.progress().step) != (1, 1) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert queue.interrupt()
    engine.tokens.release(1000)
    result = job.wait(10)
    assert job.state == INTERRUPTED and result.interrupted and 1 <= len(result.images) < 3
    assert not queue.interrupt()  # idle: nothing to interrupt


def test_skip_drops_the_current_batch_and_goes_on(queue: JobQueue, engine: ScriptedEngine) -> None:
    engine.tokens = threading.Semaphore(0)
    job = queue.submit(req("skip", batch_count=2, steps=2))
    assert engine.running.wait(5)
    assert queue.skip()
    engine.tokens.release(1000)
    result = job.wait(10)
    assert job.state == DONE and [img.seed for img in result.images] == [101]


def test_the_worker_survives_failures_and_runs_the_next_job(queue: JobQueue, engine: ScriptedEngine) -> None:
    engine.fail_with = ZeroDivisionError("boom")
    broken = queue.submit(req("broken"))
    with pytest.raises(ZeroDivisionError):
        broken.wait(10)
    assert broken.state == FAILED and isinstance(broken.error, ZeroDivisionError)
    engine.fail_with = EngineError("Out of memory.", "Try a smaller size.")
    with pytest.raises(EngineError, match="smaller size"):
        queue.submit(req("oom")).wait(10)
    engine.fail_with = None
    assert queue.submit(req("fine")).wait(10).request.prompt == "fine"
    assert queue.jobs_finished[FAILED] == 2 and queue.jobs_finished[DONE] == 1


def test_calls_run_on_the_worker_in_order_with_generations(queue: JobQueue, engine: ScriptedEngine) -> None:
    seen: list[str] = []
    first = queue.submit(req("gen"))
    call = queue.submit_call(lambda: seen.append(threading.current_thread().name) or "loaded", label="Loading")
    assert call.wait(10) == "loaded" and seen == ["sdlocal-worker"]
    assert first.done() and first.finished <= call.started
    failing = queue.submit_call(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.wait(10)
    assert queue.submit(req("after")).wait(10) is not None


def test_wait_times_out_while_join_just_reports(queue: JobQueue, engine: ScriptedEngine) -> None:
    engine.tokens = threading.Semaphore(0)
    job = queue.submit(req("slow"))
    assert job.join(0.05) is False
    with pytest.raises(TimeoutError):
        job.wait(0.05)
    engine.tokens.release(1000)
    assert job.join(10) is True


def test_listeners_see_each_finished_job_and_a_failing_listener_is_ignored(queue: JobQueue) -> None:
    seen = []
    queue.listeners.append(lambda job: 1 / 0)
    queue.listeners.append(lambda job: seen.append((job.kind, job.state, job.duration is not None)))
    queue.submit(req("x")).wait(10)
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [("generate", DONE, True)]


def test_a_closed_queue_cancels_waiting_jobs(engine: ScriptedEngine) -> None:
    engine.tokens = threading.Semaphore(0)
    q = JobQueue(engine, None, max_queue=4)
    q.submit(req("running"))
    assert engine.running.wait(5)
    waiting = q.submit(req("waiting"))
    engine.tokens.release(1000)
    q.close()
    assert waiting.state == CANCELLED
    with pytest.raises(RuntimeError, match="closed"):
        q.submit(req("late"))
