"""The CPU banner's time per image: measured from the queue's finished runs, scaled, with few-step presets."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from sdlocal.engine.request import GenerationRequest, GenerationResult
from sdlocal.jobs import JobQueue, RunTiming
from sdlocal.presets import PresetStore, builtin_presets_dir
from sdlocal.services import cpu_speed_text, estimate_seconds_per_image, few_step_presets


def run(seconds: float, steps: int = 20, side: int = 512, images: int = 1, model: str = "m") -> RunTiming:
    return RunTiming(model_name=model, seconds=seconds, steps=steps, width=side, height=side, images=images)


def builtin_presets() -> list:
    return list(PresetStore(builtin_presets_dir()).presets.values())


def test_estimate_scales_steps_pixels_and_images_to_the_reference() -> None:
    # 10 s for 4 steps at 256x256 is 2.5 s a step at a quarter of the pixels: 20 steps at 512x512 is 200 s.
    assert estimate_seconds_per_image([run(10, steps=4, side=256)], "sd1") == pytest.approx(200)
    # A batch of 4 at 512x512, 20 steps, in 160 s: 40 s an image.
    assert estimate_seconds_per_image([run(160, images=4)], "sd1") == pytest.approx(40)
    # SDXL's reference is 1024x1024: 4x the pixels of the 512x512 run.
    assert estimate_seconds_per_image([run(30)], "sdxl") == pytest.approx(120)


def test_estimate_takes_the_median_so_one_slow_run_does_not_move_it() -> None:
    assert estimate_seconds_per_image([run(40), run(42), run(400)], "sd1") == pytest.approx(42)
    assert estimate_seconds_per_image([run(40), run(44)], "sd1") == pytest.approx(42)


def test_no_measurement_yet_says_the_first_image_will_tell() -> None:
    assert estimate_seconds_per_image([], "sd1") is None
    text = cpu_speed_text([], "sd2", builtin_presets())
    assert text == "Running on the CPU: the first image will tell how long one takes here."


def test_text_gives_the_measured_time_and_the_familys_few_step_presets() -> None:
    presets = builtin_presets()
    text = cpu_speed_text([run(40), run(44, images=2)], "sd1", presets)  # 40 and 22 s an image: 31
    assert text.startswith("Running on the CPU: about 31 s per 512x512 image at 20 steps here "
                           "(measured from your last 3 images).")
    assert "try the preset 'SD 1.5 LCM (few steps)' (6 steps)" in text
    assert "SD 1.5 fast draft" not in text  # 15 steps is not a few-step preset
    sdxl = cpu_speed_text([run(100, side=1024)], "sdxl", presets)
    assert "about 1 min 40 s per 1024x1024 image" in sdxl and "(measured from your last image)" in sdxl
    assert "'SDXL Turbo (few steps)' (4 steps)" in sdxl and "LCM" not in sdxl
    assert "preset" not in cpu_speed_text([run(40)], "sd2", presets)  # no few-step preset for SD 2.x


def test_few_step_presets_only_of_the_family() -> None:
    presets = [SimpleNamespace(name="A", family="sd1", steps=4), SimpleNamespace(name="B", family="sdxl", steps=4),
               SimpleNamespace(name="C", family="sd1", steps=25), SimpleNamespace(name="D", family="sd1", steps=2)]
    assert [p.name for p in few_step_presets(presets, "sd1")] == ["D", "A"]


class TimedEngine:
    """Returns results with the engine's timings, as ``Engine.generate`` does."""

    def generate(self, request: GenerationRequest, on_progress=None, control=None) -> GenerationResult:
        return GenerationResult(images=[], request=request, model_name="tiny", model_hash="", seeds=[],
                                timings={"load": 5.0, "generate": 8.0, "total": 13.0},
                                interrupted=request.prompt == "stop")


def test_queue_records_each_finished_runs_timing_without_the_load(tmp_path: Path) -> None:
    queue = JobQueue(TimedEngine(), store=None)
    queue.start()
    try:
        queue.submit(GenerationRequest(prompt="a", steps=4, width=256, height=192, batch_size=2), save=False).wait(10)
        queue.submit(GenerationRequest(prompt="stop", steps=4), save=False).wait(10)
    finally:
        queue.close()
    assert queue.recent_runs() == [RunTiming(model_name="tiny", seconds=8.0, steps=4, width=256, height=192,
                                             images=2)], "interrupted runs are partial and left out"
