"""The job queue: FIFO on one worker, bounded, progress, interrupt/skip, saving, and a worker that never dies.

A scripted engine stands in for the real one so these tests are about the queue alone and run in milliseconds;
the API tests run the same queue against a real tiny model.
"""

from __future__ import annotations

import threading
from datetime import date
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
from sdlocal.outputs import OutputStore


class ScriptedEngine:
    """Runs ``steps`` fake steps per batch; with ``tokens`` set, each step takes one (tests hand them out).

    It honours the run's ``RunControl`` as the real engine does (an interrupt stops, a skip abandons the batch
    it lands in or, pending at a batch's start, skips that batch), and ``wait_for`` lets a test wait for a
    given step without polling. With ``hold`` set, each run waits on it before its first batch, which is the
    moment between the queue starting the job and the engine's run being under way.
    """

    def __init__(self) -> None:
        self.order: list[str] = []
        self.threads: set[str] = set()
        self.tokens: threading.Semaphore | None = None
        self.fail_with: BaseException | None = None
        self.hold: threading.Event | None = None
        self.running = threading.Event()
        self._reached: set[tuple[str, int, int]] = set()
        self._cond = threading.Condition()

    def validate(self, request: GenerationRequest) -> GenerationRequest:
        return request.validate()

    def wait_for(self, prompt: str, batch: int, step: int, timeout: float = 5) -> bool:
        """Wait until the run of ``prompt`` has reported ``step`` of ``batch``."""
        with self._cond:
            return self._cond.wait_for(lambda: (prompt, batch, step) in self._reached, timeout)

    def generate(self, request: GenerationRequest, on_progress=None, control=None) -> GenerationResult:
        assert control is not None, "the queue hands every run its job's control"
        self.threads.add(threading.current_thread().name)
        self.order.append(request.prompt)
        self.running.set()
        try:
            if self.hold is not None:
                assert self.hold.wait(5)
            if self.fail_with is not None:
                raise self.fail_with
            images = []
            for batch in range(request.batch_count):
                if control.interrupted:
                    break
                if control.take_skip():
                    continue
                abandoned = False
                for step in range(1, request.steps + 1):
                    if self.tokens is not None:
                        self.tokens.acquire(timeout=5)
                    if control.interrupted or control.take_skip():
                        abandoned = True
                        break
                    if on_progress:
                        on_progress(Progress(step, request.steps, batch, request.batch_count, 0.5,
                                             preview=Image.new("RGB", (8, 8))))
                    with self._cond:
                        self._reached.add((request.prompt, batch, step))
                        self._cond.notify_all()
                if abandoned:
                    continue
                seed = 100 + batch
                images.append(GeneratedImage(Image.new("RGB", (8, 8), (batch, 0, 0)), seed, f"{request.prompt}\n"
                                             f"Steps: {request.steps}, Seed: {seed}, Size: 8x8", batch))
            return GenerationResult(images=images, request=request, model_name="m", model_hash="",
                                    seeds=[i.seed for i in images], interrupted=control.interrupted)
        finally:
            self.running.clear()


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


def test_each_image_is_saved_in_its_requests_outputs_folder(engine: ScriptedEngine, tmp_path: Path) -> None:
    """A1111's layout: txt2img in txt2img/YYYY-MM-DD/, img2img and inpainting both in img2img/YYYY-MM-DD/."""
    init = Image.new("RGB", (64, 64), (10, 20, 30))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    q = JobQueue(engine, OutputStore(tmp_path), max_queue=4)
    try:
        jobs = [q.submit(req("text")), q.submit(req("picture", source={"images": [init]})),
                q.submit(req("repaint", batch_count=2, source={"images": [init], "mask": {"image": mask}}))]
        for job in jobs:
            job.wait(10)
    finally:
        q.close()
    assert [job.request.mode for job in jobs] == ["txt2img", "img2img", "inpaint"]
    today = date.today().isoformat()
    folders = [[path.parent.relative_to(tmp_path).as_posix() for path in job.saved_paths] for job in jobs]
    assert folders == [[f"txt2img/{today}"], [f"img2img/{today}"], [f"img2img/{today}"] * 2]
    assert all(path.is_file() for job in jobs for path in job.saved_paths)


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
    engine.tokens.release(1)
    assert engine.wait_for("slow", 0, 1)  # step 1 reported; step 2 waits for a token
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
    engine.tokens.release(3)  # the first batch (2 steps) and one step of the second
    assert engine.wait_for("stop me", 1, 1)
    assert queue.interrupt()
    engine.tokens.release(1000)
    result = job.wait(10)
    assert job.state == INTERRUPTED and result.interrupted and [im.seed for im in result.images] == [100]
    assert not queue.interrupt()  # idle: nothing to interrupt


def test_skip_drops_the_current_batch_and_goes_on(queue: JobQueue, engine: ScriptedEngine) -> None:
    engine.tokens = threading.Semaphore(0)
    job = queue.submit(req("skip", batch_count=2, steps=2))
    engine.tokens.release(1)
    assert engine.wait_for("skip", 0, 1)  # inside batch 0: step 2 waits for a token
    assert queue.skip()
    engine.tokens.release(1000)
    result = job.wait(10)
    assert job.state == DONE and [img.seed for img in result.images] == [101]


def test_skip_between_batches_skips_the_next_one(queue: JobQueue, engine: ScriptedEngine) -> None:
    engine.tokens = threading.Semaphore(0)
    job = queue.submit(req("between", batch_count=3, steps=2))
    engine.tokens.release(2)
    assert engine.wait_for("between", 0, 2)  # batch 0's last step is done: the press lands between batches
    assert queue.skip()
    engine.tokens.release(1000)
    assert [img.seed for img in job.wait(10).images] == [100, 102]


def test_interrupt_while_a_job_starts_stops_that_job_and_not_the_next(queue: JobQueue,
                                                                      engine: ScriptedEngine) -> None:
    engine.hold = threading.Event()
    first = queue.submit(req("starting", batch_count=2))
    assert engine.running.wait(5)  # the job is running, its engine run not yet under way
    assert queue.interrupt()
    engine.hold.set()
    result = first.wait(10)
    assert first.state == INTERRUPTED and result.interrupted and result.images == []
    second = queue.submit(req("next"))
    assert second.wait(10).interrupted is False and second.state == DONE and len(second.result.images) == 1


def test_skip_while_a_job_starts_skips_its_first_batch(queue: JobQueue, engine: ScriptedEngine) -> None:
    engine.hold = threading.Event()
    job = queue.submit(req("starting", batch_count=2))
    assert engine.running.wait(5)
    assert queue.skip()
    engine.hold.set()
    assert [img.seed for img in job.wait(10).images] == [101]


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
    heard = threading.Event()
    queue.listeners.append(lambda job: 1 / 0)
    queue.listeners.append(lambda job: seen.append((job.kind, job.state, job.duration is not None)) or heard.set())
    queue.submit(req("x")).wait(10)
    assert heard.wait(5)  # listeners run on the worker after the job is marked done
    assert seen == [("generate", DONE, True)]


def test_a_closed_queue_cancels_waiting_jobs_and_interrupts_the_running_one(engine: ScriptedEngine) -> None:
    engine.tokens = threading.Semaphore(0)
    q = JobQueue(engine, None, max_queue=4)
    running = q.submit(req("running", batch_count=2))
    engine.tokens.release(1)
    assert engine.wait_for("running", 0, 1)  # the worker is held inside "running": "waiting" cannot start
    waiting = q.submit(req("waiting"))
    q.close(timeout=0)
    assert waiting.state == CANCELLED and running.interrupted
    with pytest.raises(RuntimeError, match="closed"):
        q.submit(req("late"))
    engine.tokens.release(1000)
    assert running.wait(10).interrupted and running.state == INTERRUPTED and running.result.images == []
    q._thread.join(10)
    assert not q._thread.is_alive() and engine.order == ["running"]


def test_progress_counts_the_steps_an_img2img_run_takes(queue: JobQueue, engine: ScriptedEngine) -> None:
    """Before its first step, an img2img job at strength 0.5 says 5 of 10 steps will run, not 10."""
    engine.hold = threading.Event()
    job = queue.submit(req("vary", steps=10, source={"images": [Image.new("RGB", (64, 64))],
                                                     "denoising_strength": 0.5}))
    try:
        assert engine.running.wait(5)
        assert queue.progress().total_steps == 5
    finally:
        engine.hold.set()
    job.wait(10)
