"""Fast mode: what it applies per device, that it leaves the image as it was (within rounding), and when it skips.

Tolerance: fp32 on the CPU, fast-mode changes only reorder arithmetic (NHWC convolutions, one fused matmul
instead of three), so an image may differ by rounding: at most 2 levels of 255 in any pixel and under 0.05 on
average (measured on these tiny models: max 1, mean 0.0001).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from sdlocal.engine import fast
from sdlocal.engine.fast import CANDIDATES, apply_fast_mode, plan_for

MAX_PIXEL_DIFFERENCE = 2
MAX_MEAN_DIFFERENCE = 0.05


def _pipe():
    from sdlocal.engine.synthetic import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd1", seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _image(pipe) -> np.ndarray:
    import torch

    image = pipe(prompt="a red cube", num_inference_steps=4, height=64, width=64, guidance_scale=7.0,
                 generator=torch.Generator("cpu").manual_seed(7)).images[0]
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return _image(_pipe())


def test_the_cpu_plan_is_channels_last_only_and_keeps_the_image(reference: np.ndarray) -> None:
    pipe = _pipe()
    assert plan_for("cpu") == ("channels_last",)
    applied = apply_fast_mode(pipe, "cpu")
    assert applied == ["channels-last memory format (unet, vae)"]
    difference = np.abs(_image(pipe) - reference)
    assert difference.max() <= MAX_PIXEL_DIFFERENCE
    assert difference.mean() <= MAX_MEAN_DIFFERENCE


def test_nothing_is_applied_where_nothing_was_measured_to_help(reference: np.ndarray) -> None:
    pipe = _pipe()
    assert apply_fast_mode(pipe, "mps") == []  # the plan is empty: the pipeline is left exactly as it was
    assert np.array_equal(_image(pipe), reference)


def test_plans_per_device_type() -> None:
    assert plan_for("cuda") == plan_for("cuda:1")
    assert "compile" in plan_for("cuda")
    assert plan_for("mps") == ()
    assert plan_for("something-else") == ()


@pytest.mark.parametrize("options", [["channels_last"], ["fuse_qkv"], ["channels_last", "fuse_qkv"]])
def test_each_option_keeps_the_image_within_rounding(options: list[str], reference: np.ndarray) -> None:
    pipe = _pipe()
    applied = apply_fast_mode(pipe, "cpu", only=options)
    assert len(applied) == len(options)
    assert any("channels-last" in a for a in applied) == ("channels_last" in options)
    assert any("fused QKV" in a for a in applied) == ("fuse_qkv" in options)
    difference = np.abs(_image(pipe) - reference)
    assert difference.max() <= MAX_PIXEL_DIFFERENCE
    assert difference.mean() <= MAX_MEAN_DIFFERENCE


def test_channels_last_really_changes_the_layout() -> None:
    import torch

    pipe = _pipe()
    apply_fast_mode(pipe, "cpu", only=["channels_last"])
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_qkv_fusion_is_skipped_when_attention_is_not_plain_sdpa() -> None:
    pipe = _pipe()
    pipe.enable_attention_slicing()  # sliced processors would be replaced (and slicing lost) by fusing
    assert apply_fast_mode(pipe, "cpu", only=["fuse_qkv"]) == ["fused QKV projections (vae)"]
    assert not any(type(p).__name__.startswith("Fused") for p in pipe.unet.attn_processors.values())


def test_compile_on_nvidia_needs_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    real = fast.importlib.util.find_spec
    monkeypatch.setattr(fast.importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name))
    pipe = _pipe()
    assert apply_fast_mode(pipe, "cuda", only=["compile"]) == []
    assert getattr(pipe.unet, "_compiled_call_impl", None) is None


def test_compile_wraps_the_unet_in_place_without_running_it() -> None:
    pipe = _pipe()
    unet = pipe.unet
    applied = apply_fast_mode(pipe, "cpu", only=["compile"])
    assert applied and "torch.compile" in applied[0]
    assert pipe.unet is unet  # the same module (config, dtype, device still readable); only its call is compiled
    assert getattr(pipe.unet, "_compiled_call_impl", None) is not None


def test_unknown_options_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="turbo"):
        apply_fast_mode(_pipe(), "cpu", only=["turbo"])
    assert set(CANDIDATES) == {"channels_last", "fuse_qkv", "compile"}
