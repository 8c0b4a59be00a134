"""Extras jobs on the queue: validated at submit, progress per image, interrupt keeps what is done, A1111's folder,
names and PNG chunks, and the gallery lists them."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sdlocal.engine.extras import ExtrasImage, ExtrasRequest, run_extras
from sdlocal.engine.request import RequestError
from sdlocal.jobs import DONE, INTERRUPTED, JobQueue
from sdlocal.outputs import OutputStore, read_image_info


class ExtrasEngine:
    """The engine's Extras part over a Lanczos "upscaler"; ``gate`` holds each picture until a test releases it."""

    def __init__(self) -> None:
        self.gate: threading.Semaphore | None = None
        self.started = threading.Event()
        self.progress: list[tuple[int, int, int, int]] = []
        self.second = threading.Event()  # set once the queue has seen the second picture start

    def validate_extras(self, request: ExtrasRequest) -> ExtrasRequest:
        request.validate()
        for name in (request.upscaler_1, request.upscaler_2):
            if name not in ("None", "Lanczos"):
                raise RequestError("upscaler_1" if name == request.upscaler_1 else "upscaler_2", name,
                                   "must be one of: None, Lanczos")
        return request

    def upscale(self, image: Any, name: str, width: int, height: int, control: Any = None,
                on_progress: Any = None, field: str = "") -> Any:
        self.started.set()
        if self.gate is not None:
            assert self.gate.acquire(timeout=5)
        if on_progress is not None:
            on_progress(1, 2)
            on_progress(2, 2)
        return image.resize((width, height), Image.Resampling.LANCZOS)

    def postprocess(self, request: ExtrasRequest, on_progress: Any = None, control: Any = None) -> Any:
        self.validate_extras(request)

        def record(*update: int) -> None:
            self.progress.append(update)
            on_progress(*update)
            if update[0] == 1:
                self.second.set()

        return run_extras(request, self.upscale, on_progress=record, control=control)


@pytest.fixture
def engine() -> ExtrasEngine:
    return ExtrasEngine()


@pytest.fixture
def store(tmp_path: Path) -> OutputStore:
    return OutputStore(tmp_path / "outputs")


@pytest.fixture
def queue(engine: ExtrasEngine, store: OutputStore):
    jobs = JobQueue(engine, store=store)
    yield jobs
    jobs.close()


def _request(count: int = 1, **fields: Any) -> ExtrasRequest:
    images = [ExtrasImage(Image.new("RGB", (16, 16), (i * 40, 0, 0)), name=f"s{i}.png",
                          parameters=f"a cat {i}\nSteps: 20, Sampler: Euler, Seed: {i}") for i in range(count)]
    return ExtrasRequest(images=images, **{"upscaler_1": "Lanczos", "scale": 2, **fields})


def test_outputs_are_saved_as_a1111_names_them_with_the_sources_parameters(queue: JobQueue,
                                                                          store: OutputStore) -> None:
    job = queue.submit_extras(_request(2))
    result = job.wait(10)
    assert job.state == DONE and [out.image.size for out in result.images] == [(32, 32), (32, 32)]
    assert [path.parent.parent.name for path in job.saved_paths] == ["extras-images", "extras-images"]
    assert [path.name for path in job.saved_paths] == ["00000.png", "00001.png"]
    parameters, items = read_image_info(job.saved_paths[1])
    assert parameters == "a cat 1\nSteps: 20, Sampler: Euler, Seed: 1"
    assert items["extras"] == items["postprocessing"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    listed = store.list(kind="extras-images")
    assert [item.path.name for item in listed] == ["00001.png", "00000.png"] and listed[0].seed is None
    assert store.read_parameters(listed[0].relpath) == parameters


def test_numbers_follow_the_days_other_images_and_never_overwrite(queue: JobQueue, store: OutputStore) -> None:
    first = store.save(Image.new("RGB", (8, 8)), "x\nSteps: 1, Seed: 5, Size: 8x8", 5)
    job = queue.submit_extras(_request(1))
    job.wait(10)
    assert first.name == "00000-5.png" and job.saved_paths[0].name == "00001.png"
    again = queue.submit_extras(_request(1))
    again.wait(10)
    assert again.saved_paths[0].name == "00002.png" and job.saved_paths[0].exists()


def test_not_saving_keeps_the_outputs_in_the_result_only(queue: JobQueue, store: OutputStore) -> None:
    job = queue.submit_extras(_request(1), save=False)
    assert len(job.wait(10).images) == 1 and job.saved_paths == [] and store.count() == 0


def test_a_bad_request_is_refused_at_submit_naming_the_field(queue: JobQueue) -> None:
    with pytest.raises(RequestError) as caught:
        queue.submit_extras(_request(1, upscaler_1="4x-Missing"))
    assert caught.value.field == "upscaler_1"
    with pytest.raises(RequestError) as caught:
        queue.submit_extras(_request(1, scale=20))
    assert caught.value.field == "upscaling_resize"
    assert queue.depth == 0


def test_progress_says_which_image_and_interrupt_keeps_the_finished_ones(queue: JobQueue,
                                                                        engine: ExtrasEngine) -> None:
    engine.gate = threading.Semaphore(0)
    job = queue.submit_extras(_request(3))
    assert engine.started.wait(5)
    engine.gate.release()  # the first picture finishes
    assert engine.second.wait(5)
    state = queue.progress()
    assert state.job_kind == "extras" and state.text == "Upscaling image 2/3"
    assert queue.interrupt()
    engine.gate.release()  # the second one may finish its call; the third never starts
    job.join(10)
    assert job.state == INTERRUPTED and job.result.interrupted
    assert 1 <= len(job.result.images) <= 2 and len(job.saved_paths) == len(job.result.images)
    assert all(update[0] < 2 for update in engine.progress)


def test_a_full_disk_keeps_the_pictures_and_warns(engine: ExtrasEngine) -> None:
    class FullStore:
        def save(self, *args: Any, **kwargs: Any) -> Path:
            raise OSError("No space left on device")

    jobs = JobQueue(engine, store=FullStore())
    try:
        job = jobs.submit_extras(_request(1))
        result = job.wait(10)
    finally:
        jobs.close()
    assert len(result.images) == 1 and "No space left" in result.warnings[0]


def test_an_extras_job_saves_into_the_store_it_was_given(tmp_path):
    """Batch from Directory's output folder: the worker saves there, not in the queue's own outputs."""
    from PIL import Image

    from sdlocal.engine.extras import ExtrasImage, ExtrasRequest
    from sdlocal.jobs import JobQueue
    from sdlocal.outputs import OutputStore

    class Engine:
        def postprocess(self, request, on_progress=None, control=None):
            from sdlocal.engine.extras import run_extras

            return run_extras(request, lambda image, name, w, h, **_: image.resize((w, h)), control=control)

    own, chosen = OutputStore(tmp_path / "outputs"), OutputStore(tmp_path / "chosen")
    queue = JobQueue(Engine(), own)
    try:
        request = ExtrasRequest(images=[ExtrasImage(Image.new("RGB", (16, 16)), "a.png", "a cat\nSteps: 4")],
                                upscaler_1="Lanczos")
        job = queue.submit_extras(request, store=chosen)
        job.wait(60)
        assert [path.parent.parent for path in job.saved_paths] == [tmp_path / "chosen" / "extras-images"]
        assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("*.png"))
    finally:
        queue.close()
