"""Generation behaves like A1111: reproducible seeds, batch seeds, progress, interrupt and skip, clear failures."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from sdlocal.engine import EngineError, RequestError
from sdlocal.engine.generate import RANDOM_SEED_LIMIT, resolve_seeds
from tests.engine.conftest import make_engine, pixels


def test_same_request_same_image(engine, request_for) -> None:
    first = engine.generate(request_for(sampler="Euler a", seed=77))
    second = engine.generate(request_for(sampler="Euler a", seed=77))
    assert np.array_equal(pixels(first.images[0].image), pixels(second.images[0].image))
    other = engine.generate(request_for(sampler="Euler a", seed=78))
    assert not np.array_equal(pixels(first.images[0].image), pixels(other.images[0].image))


def test_same_request_same_image_in_a_new_engine(engine, request_for, tiny_models_dir: Path, tmp_path: Path) -> None:
    fresh = make_engine(tiny_models_dir, tmp_path, device="cpu", precision="fp32")
    ours = engine.generate(request_for(sampler="DPM++ 2M SDE", schedule="Karras", seed=5))
    theirs = fresh.generate(request_for(sampler="DPM++ 2M SDE", schedule="Karras", seed=5))
    assert np.array_equal(pixels(ours.images[0].image), pixels(theirs.images[0].image))


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ SDE", "DDIM"])
@pytest.mark.parametrize("model", ["tiny-sd1-diffusers", "tiny-sdxl-diffusers"])
def test_third_image_of_a_batch_equals_a_single_run_with_seed_plus_two(engine, request_for, sampler: str,
                                                                       model: str) -> None:
    batch = engine.generate(request_for(model=model, sampler=sampler, seed=1000, batch_size=3, steps=3))
    assert batch.seeds == [1000, 1001, 1002] and [im.seed for im in batch.images] == [1000, 1001, 1002]
    single = engine.generate(request_for(model=model, sampler=sampler, seed=1002, steps=3))
    difference = np.abs(pixels(batch.images[2].image) - pixels(single.images[0].image))
    assert difference.max() <= 2, f"max pixel difference {difference.max()}"  # batched matmuls may round apart
    assert "Seed: 1002," in batch.images[2].infotext


def test_batch_count_continues_the_seeds(engine, request_for) -> None:
    result = engine.generate(request_for(seed=10, batch_size=2, batch_count=2))
    assert result.seeds == [10, 11, 12, 13]
    assert [im.index for im in result.images] == [0, 1, 2, 3]


def test_random_seed_is_in_a1111_range(engine, request_for) -> None:
    result = engine.generate(request_for(seed=-1, batch_size=2))
    base = result.seeds[0]
    assert 0 <= base < RANDOM_SEED_LIMIT and result.seeds == [base, base + 1]
    assert f"Seed: {base}," in result.images[0].infotext
    assert len({resolve_seeds(-1, 1)[0] for _ in range(20)}) > 1


def test_result_has_timings_and_infotext(engine, request_for) -> None:
    result = engine.generate(request_for(clip_skip=2))
    assert set(result.timings) == {"load", "networks", "generate", "total"}  # networks: merging LoRAs
    assert result.timings["total"] >= result.timings["generate"] > 0
    text = result.images[0].infotext
    assert text.startswith("a red cube on a table\nNegative prompt: blurry\nSteps: 2, Sampler: Euler, ")
    assert "Clip skip: 2" in text and "Size: 64x64" in text and f"Model hash: {result.model_hash}" in text


def test_clip_skip_changes_the_image_and_is_bounded_by_the_model(engine, request_for) -> None:
    one = engine.generate(request_for(clip_skip=1)).images[0].image
    two = engine.generate(request_for(clip_skip=2)).images[0].image
    assert not np.array_equal(pixels(one), pixels(two))
    with pytest.raises(RequestError) as caught:
        engine.generate(request_for(clip_skip=3))  # the tiny text encoder has 2 layers
    assert caught.value.field == "clip_skip" and "1 to 2" in caught.value.allowed


def _tome_blocks(engine) -> int:
    unet = engine._cache._models[str(engine.current_model.path)].pipe.unet
    return sum(type(module).__name__ == "ToMeBlock" for module in unet.modules())


@pytest.fixture(scope="module")
def tome_engine(tmp_path_factory):
    """A tiny SD 1.x model with attention at full resolution, where token merging acts (as in real SD 1.5)."""
    from sdlocal.engine.synthetic import build_tiny_pipeline

    models = tmp_path_factory.mktemp("tome-models")
    build_tiny_pipeline("sd1", top_attention=True).save_pretrained(str(models / "tiny-sd1-diffusers"))
    return make_engine(models, tmp_path_factory.mktemp("tome-data"), device="cpu", precision="fp32")


def test_token_merging_is_applied_and_removed(tome_engine, request_for) -> None:
    engine = tome_engine
    plain = pixels(engine.generate(request_for(width=128, height=128)).images[0].image)
    merged = engine.generate(request_for(width=128, height=128, token_merging_ratio=0.5))
    assert "Token merging ratio: 0.5" in merged.images[0].infotext
    assert _tome_blocks(engine) > 0
    assert not np.array_equal(plain, pixels(merged.images[0].image)), "merging tokens changes the computation"
    repeat = engine.generate(request_for(width=128, height=128, token_merging_ratio=0.5))
    assert np.array_equal(pixels(repeat.images[0].image), pixels(merged.images[0].image)), "same seed and ratio"
    again = pixels(engine.generate(request_for(width=128, height=128)).images[0].image)
    assert _tome_blocks(engine) == 0
    assert np.array_equal(plain, again)


def test_vae_tiling_per_request(engine, request_for) -> None:
    result = engine.generate(request_for(vae_tiling=True, width=128, height=128))
    loaded = engine._cache._models[str(engine.current_model.path)]
    assert loaded.pipe.vae.use_tiling and result.images[0].image.size == (128, 128)
    engine.generate(request_for(vae_tiling=False))
    assert not loaded.pipe.vae.use_tiling


def test_progress_reports_steps_eta_and_previews(engine, request_for, monkeypatch) -> None:
    from sdlocal.engine import generate as gen

    monkeypatch.setattr(gen, "PREVIEW_INTERVAL_S", 0.0)
    reports = []
    engine.generate(request_for(steps=4, batch_count=2), on_progress=reports.append)
    assert [(p.batch_index, p.step) for p in reports] == [(b, s) for b in range(2) for s in range(1, 5)]
    assert all(p.total_steps == 4 and p.batch_count == 2 and p.eta_seconds >= 0 for p in reports)
    assert reports[-1].fraction == 1.0
    previews = [p.preview for p in reports if p.preview is not None]
    assert previews and previews[0].mode == "RGB" and max(previews[0].size) <= 256


def test_interrupt_returns_the_finished_images(engine, request_for) -> None:
    def on_progress(progress) -> None:
        if progress.batch_index == 1 and progress.step == 1:
            engine.interrupt()

    result = engine.generate(request_for(steps=3, batch_count=3, seed=50), on_progress=on_progress)
    assert result.interrupted
    assert [im.seed for im in result.images] == [50]  # batch 2's half-done latents are not an image
    assert not engine.generate(request_for()).interrupted  # the flag does not stick


def test_skip_abandons_only_the_current_batch(engine, request_for) -> None:
    def on_progress(progress) -> None:
        if progress.batch_index == 0 and progress.step == 1:
            engine.skip()

    result = engine.generate(request_for(steps=3, batch_count=3, seed=50), on_progress=on_progress)
    assert not result.interrupted
    assert [im.seed for im in result.images] == [51, 52]


def test_interrupt_from_another_thread(engine, request_for) -> None:
    started = threading.Event()

    def on_progress(_progress) -> None:
        started.set()

    results = []
    worker = threading.Thread(target=lambda: results.append(
        engine.generate(request_for(steps=30, batch_count=20), on_progress=on_progress)))
    worker.start()
    assert started.wait(60)
    assert engine.capabilities().device == "cpu" and engine.models()  # not blocked by the run
    engine.interrupt()
    worker.join(60)
    assert results and results[0].interrupted and len(results[0].images) < 20


def _loaded(engine):
    return engine._cache._models[str(engine.current_model.path)]


@pytest.mark.parametrize("module", ["unet", "text_encoder"])  # while sampling, and while encoding the prompt
def test_out_of_memory_is_an_engine_error_and_the_engine_survives(engine, request_for, monkeypatch,
                                                                 module: str) -> None:
    import torch

    engine.generate(request_for())
    target = getattr(_loaded(engine).pipe, module)

    def explode(*_args, **_kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(target, "forward", explode)
    with pytest.raises(EngineError) as caught:
        engine.generate(request_for(prompt="a cat BREAK a dog", width=512, height=512, batch_size=4))
    assert "Out of memory" in caught.value.message
    assert "512x512" in caught.value.message and "batch size 4" in caught.value.message
    assert "VAE tiling" in caught.value.hint and "attention slicing" in caught.value.hint
    assert "--medvram" in caught.value.hint
    monkeypatch.undo()
    assert engine.generate(request_for()).images


@pytest.mark.parametrize("message", ["CUDA out of memory. Tried to allocate 2.00 GiB",
                                     "DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"])
def test_out_of_memory_frees_the_failed_calls_tensors(engine, request_for, monkeypatch, message: str) -> None:
    """free_memory() runs after the except block, when the traceback no longer keeps the failing frames alive."""
    import weakref

    import torch

    from sdlocal.engine import generate as gen

    engine.generate(request_for())
    unet = _loaded(engine).pipe.unet
    held: list[weakref.ref] = []

    def explode(*_args, **_kwargs):
        activations = torch.zeros(1024, 1024)  # referenced from this frame only, as a real allocation would be
        held.append(weakref.ref(activations))
        raise RuntimeError(message)

    freed_at_call: list[bool] = []
    real_free = gen.free_memory

    def checking_free() -> None:
        freed_at_call.append(all(ref() is None for ref in held))
        real_free()

    monkeypatch.setattr(unet, "forward", explode)
    monkeypatch.setattr(gen, "free_memory", checking_free)
    with pytest.raises(EngineError, match="Out of memory") as caught:
        engine.generate(request_for(batch_size=2))
    assert held and freed_at_call == [True]
    assert caught.value.__context__ is None and caught.value.__cause__ is None  # no traceback kept
    monkeypatch.undo()
    assert len(engine.generate(request_for()).images) == 1


def test_nan_from_the_unet_is_reported(engine, request_for, monkeypatch) -> None:
    engine.generate(request_for())
    unet = _loaded(engine).pipe.unet
    real = unet.forward

    def nan_forward(*args, **kwargs):
        out = real(*args, **kwargs)
        out[0].fill_(float("nan")) if isinstance(out, tuple) else out.sample.fill_(float("nan"))
        return out

    monkeypatch.setattr(unet, "forward", nan_forward)
    with pytest.raises(EngineError, match="NaN") as caught:
        engine.generate(request_for())
    assert "fp32" in caught.value.hint


def test_black_image_gives_a_no_half_vae_warning(engine, request_for, monkeypatch) -> None:
    import torch

    engine.generate(request_for())
    vae = _loaded(engine).pipe.vae
    real = vae.decode

    def black(latents, return_dict=True, **kwargs):
        image = real(latents, return_dict=False, **kwargs)[0]
        return (torch.full_like(image, -1.0),)

    monkeypatch.setattr(vae, "decode", black)
    result = engine.generate(request_for(batch_size=2))
    assert len(result.images) == 2
    assert sum("--no-half-vae" in w for w in result.warnings) == 2


def test_bf16_on_cpu_is_close_to_fp32(tiny_models_dir: Path, tmp_path: Path, request_for) -> None:
    """Documented bound: mean absolute pixel difference under 4 of 255 on the tiny model (measured ~1), no warnings."""
    fp32 = make_engine(tiny_models_dir, tmp_path / "a", device="cpu", precision="fp32")
    bf16 = make_engine(tiny_models_dir, tmp_path / "b", device="cpu", precision="bf16")
    for model in ("tiny-sd1-safetensors", "tiny-sdxl-diffusers"):
        a = fp32.generate(request_for(model=model, steps=4, width=128, height=128))
        b = bf16.generate(request_for(model=model, steps=4, width=128, height=128))
        assert not b.warnings
        diff = np.abs(pixels(a.images[0].image) - pixels(b.images[0].image)).mean()
        assert diff < 4, f"{model}: mean pixel difference {diff:.2f}"


def test_skip_pressed_between_batches_skips_the_next_batch(engine, request_for) -> None:
    def on_progress(progress) -> None:
        # Reported after the step's own Skip check: the batch's last step is done, so this press lands
        # between batch 0 and batch 1.
        if progress.batch_index == 0 and progress.step == progress.total_steps:
            engine.skip()

    result = engine.generate(request_for(steps=2, batch_count=3, seed=50), on_progress=on_progress)
    assert [im.seed for im in result.images] == [50, 52] and not result.interrupted


def test_a_control_pressed_before_the_run_applies_to_that_run_only(engine, request_for) -> None:
    from sdlocal.engine.request import RunControl

    stopped = RunControl()
    stopped.interrupt()
    result = engine.generate(request_for(batch_count=2), control=stopped)
    assert result.interrupted and result.images == []
    skipped = RunControl()
    skipped.skip()
    assert [im.seed for im in engine.generate(request_for(batch_count=2, seed=7), control=skipped).images] == [8]
    assert len(engine.generate(request_for(batch_count=2)).images) == 2


def test_queue_interrupt_while_the_job_is_starting_stops_it_and_not_the_next(engine, request_for,
                                                                             monkeypatch) -> None:
    """The press comes after the queue started the job and before the engine's run exists."""
    from sdlocal.jobs import DONE, INTERRUPTED, JobQueue

    entered, release = threading.Event(), threading.Event()
    real_find = engine.find_model

    def find_model_held(name: str):
        if not entered.is_set():
            entered.set()
            assert release.wait(30)
        return real_find(name)

    monkeypatch.setattr(engine, "find_model", find_model_held)
    queue = JobQueue(engine, None)
    try:
        first = queue.submit(request_for(batch_count=2))
        assert entered.wait(30) and engine._control is None
        assert queue.interrupt()
        release.set()
        result = first.wait(60)
        assert first.state == INTERRUPTED and result.interrupted and result.images == []
        second = queue.submit(request_for())
        assert not second.wait(60).interrupted and second.state == DONE and len(second.result.images) == 1
    finally:
        release.set()
        queue.close()
