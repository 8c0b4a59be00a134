"""LoRA patches are merged into the weights and taken out exactly.

The Deltas here are this file's own (a fixed fp32 change, a low-rank ``up @ down``): the patcher only needs the
``Delta`` protocol, so what is tested is the merge and its restore, whatever the format. Models are the tiny ones,
loaded by the real loader (streamed, so originals are read back from the file; the .ckpt keeps CPU copies).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from sdlocal.engine.networks.lora import Patch
from sdlocal.engine.networks.originals import FileOriginals, MemoryOriginals
from sdlocal.engine.networks.patching import patcher_for
from sdlocal.engine.request import EngineError
from tests.engine.networks.test_originals import load

PATCHED = ("unet", "text_encoder", "text_encoder_2")


@dataclass(eq=False)
class Fixed:
    """A change given outright (fp32), counting how often it is computed."""

    change: torch.Tensor
    calls: int = 0

    @property
    def nbytes(self) -> int:
        return self.change.numel() * 4

    def updown(self, weight: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.change


@dataclass(eq=False)
class LowRank:
    """``scale * up @ down``, flat (out, in * kernel): the patcher reshapes it to the weight (a conv's 4 dims)."""

    up: torch.Tensor
    down: torch.Tensor
    scale: float = 1.0
    calls: int = 0

    @property
    def nbytes(self) -> int:
        return (self.up.numel() + self.down.numel()) * 4

    def updown(self, weight: torch.Tensor) -> torch.Tensor:
        assert weight.dtype == torch.float32  # computed from the fp32 original
        self.calls += 1
        return (self.up @ self.down) * self.scale


def low_rank(weight: torch.Tensor, seed: int, rank: int = 2, scale: float = 0.5) -> LowRank:
    generator = torch.Generator().manual_seed(seed)
    out = weight.shape[0]
    rest = weight.numel() // out
    return LowRank(torch.randn(out, rank, generator=generator), torch.randn(rank, rest, generator=generator), scale)


def targets(pipe: Any) -> list[tuple[str, str]]:
    """The modules a LoRA patches: every linear and convolution of the UNet and the text encoders."""
    found = []
    for component in PATCHED:
        model = getattr(pipe, component, None)
        if model is None:
            continue
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                found.append((component, name))
    return found


def weight_of(pipe: Any, component: str, module: str) -> torch.Tensor:
    return getattr(pipe, component).get_submodule(module).weight


def snapshot(pipe: Any) -> dict[str, torch.Tensor]:
    return {f"{component}.{name}": tensor.detach().clone() for component in PATCHED
            if getattr(pipe, component, None) is not None
            for name, tensor in getattr(pipe, component).state_dict().items()}


def differing(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    """Names whose bits differ (signs of zero included: torch.equal counts -0.0 == 0.0)."""
    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        return torch.equal(a, b) and (not a.is_floating_point() or torch.equal(torch.signbit(a), torch.signbit(b)))

    return {name for name in before if not same(before[name], after[name])}


def patch(pipe: Any, component: str, module: str, seed: int, multiplier: float = 1.0) -> Patch:
    return Patch(component, module, low_rank(weight_of(pipe, component, module), seed), multiplier, f"lora{seed}")


@pytest.fixture
def sd1(tiny_models_dir: Path, tmp_path: Path) -> Any:
    return load(tiny_models_dir, tmp_path, "tiny-sd1-safetensors")


# ----------------------------------------------------------------------------------------------- merge
def test_apply_changes_exactly_the_patched_modules_by_multiplier_times_updown(sd1: Any) -> None:
    pipe = sd1.pipe
    before = snapshot(pipe)
    chosen = [("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"), ("unet", "conv_in"),
              ("text_encoder", "encoder.layers.0.self_attn.q_proj")]
    patches = [patch(pipe, component, module, seed, multiplier=0.7) for seed, (component, module) in enumerate(chosen)]
    patcher = patcher_for(sd1)
    patcher.apply(patches)
    assert patcher.active and patcher.patched == set(chosen)
    assert differing(before, snapshot(pipe)) == {f"{c}.{m}.weight" for c, m in chosen}
    for item in patches:
        weight = weight_of(pipe, item.component, item.module)
        original = before[f"{item.component}.{item.module}.weight"]
        expected = original + 0.7 * item.delta.updown(original).reshape(original.shape)
        torch.testing.assert_close(weight.detach(), expected)


def test_two_patches_on_one_module_add_and_a_multiplier_of_zero_is_no_patch(sd1: Any) -> None:
    pipe = sd1.pipe
    module = "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2"
    original = weight_of(pipe, "unet", module).detach().clone()
    first, second = patch(pipe, "unet", module, 1, 0.5), patch(pipe, "unet", module, 2, -1.5)
    patcher = patcher_for(sd1)
    patcher.apply([first, second, patch(pipe, "unet", "conv_in", 3, 0.0)])
    expected = original + 0.5 * first.delta.updown(original) - 1.5 * second.delta.updown(original)
    torch.testing.assert_close(weight_of(pipe, "unet", module).detach(), expected)
    assert patcher.patched == {("unet", module)}


def test_the_same_patch_set_again_in_any_order_does_no_work(sd1: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = sd1.pipe
    patches = [patch(pipe, "unet", "conv_in", 1), patch(pipe, "unet", "conv_in", 2, 0.3),
               patch(pipe, "text_encoder", "encoder.layers.1.mlp.fc1", 3)]
    patcher = patcher_for(sd1)
    patcher.apply(patches)
    once = snapshot(pipe)
    reads: list[str] = []
    for method in ("read", "read_into"):
        monkeypatch.setattr(patcher.originals, method, lambda *args: reads.append(args[1]))
    patcher.apply(list(reversed(patches)))
    assert [item.delta.calls for item in patches] == [1, 1, 1] and reads == []
    assert differing(once, snapshot(pipe)) == set()
    assert patcher_for(sd1) is patcher and sd1.patcher is patcher


def test_a_change_of_set_touches_only_the_modules_whose_patches_changed(sd1: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = sd1.pipe
    kept, dropped, added = (patch(pipe, "unet", "conv_in", 1), patch(pipe, "unet", "conv_out", 2),
                            patch(pipe, "text_encoder", "encoder.layers.0.mlp.fc2", 3))
    patcher = patcher_for(sd1)
    patcher.apply([kept, dropped])
    real_read = patcher.originals.read_into
    reads: list[str] = []
    monkeypatch.setattr(patcher.originals, "read_into",
                        lambda c, n, out: reads.append(f"{c}.{n}") or real_read(c, n, out))
    patcher.apply([kept, added])
    assert reads == ["unet.conv_out.weight"]  # restored from the file; conv_in untouched, fc2 was original
    assert (kept.delta.calls, added.delta.calls) == (1, 1)
    assert patcher.patched == {("unet", "conv_in"), ("text_encoder", "encoder.layers.0.mlp.fc2")}


# --------------------------------------------------------------------------------------------- restore
@pytest.mark.parametrize(("name", "precision"), [
    ("tiny-sd1-safetensors", "fp32"), ("tiny-sd1-diffusers", "fp32"), ("tiny-sdxl-safetensors", "fp32"),
    ("tiny-sd1-ckpt", "fp32"), ("tiny-sd1-safetensors", "bf16"), ("tiny-sdxl-safetensors", "fp16"),
])
def test_fifty_changes_of_patch_set_then_restore_give_back_the_loaded_bits(
        no_network, tiny_models_dir: Path, tmp_path: Path, name: str, precision: str) -> None:
    """No drift: every state along the way equals the same set applied to the untouched model, and the end the
    start, in fp32 and in half precision (where subtracting what was added would not give the weights back)."""
    loaded = load(tiny_models_dir, tmp_path, name, precision)
    pipe = loaded.pipe
    start = snapshot(pipe)
    rng = random.Random(f"{name}-{precision}")
    modules = rng.sample(targets(pipe), 12)
    pool = [Patch(c, m, low_rank(weight_of(pipe, c, m), seed), 1.0, f"lora{seed}")
            for seed, (c, m) in enumerate(modules + modules[:6])]  # six modules have two deltas each
    patcher = patcher_for(loaded)
    kept = {}  # two states along the way, to compare with the same sets applied to the restored model
    for turn in range(50):
        chosen = [Patch(p.component, p.module, p.delta, rng.choice((-1.0, 0.35, 0.8, 1.0, 2.5)), p.network)
                  for p in rng.sample(pool, rng.randint(1, len(pool)))]
        patcher.apply(chosen)
        if turn in (7, 31):
            kept[turn] = (chosen, snapshot(pipe))
    assert differing(start, snapshot(pipe))  # the patches changed something
    patcher.restore()
    assert not patcher.active and patcher.patched == set()
    assert differing(start, snapshot(pipe)) == set()
    for chosen, state in kept.values():
        patcher.apply(chosen)  # from the original: exactly the state it gave in the middle of the history
        assert differing(state, snapshot(pipe)) == set()
    patcher.restore()
    assert differing(start, snapshot(pipe)) == set()
    if isinstance(loaded.originals, MemoryOriginals):
        assert loaded.originals.nbytes == 0  # copies kept while patched only
    else:
        assert isinstance(loaded.originals, FileOriginals)
        assert loaded.originals._scratch is None  # its read buffer goes with each apply: nothing kept in RAM


def test_a_patch_for_a_missing_module_or_of_the_wrong_size_names_the_module(sd1: Any) -> None:
    pipe = sd1.pipe
    before = snapshot(pipe)
    patcher = patcher_for(sd1)
    with pytest.raises(ValueError, match=r"unet\.down_blocks\.9\.nothing: no such module"):
        patcher.apply([patch(pipe, "unet", "conv_in", 1), Patch("unet", "down_blocks.9.nothing", Fixed(torch.ones(1)),
                                                                 1.0)])
    assert differing(before, snapshot(pipe)) == set() and not patcher.active  # refused before any write
    with pytest.raises(ValueError, match=r"text_encoder\.encoder\.layers\.0\.mlp\.fc1: the LoRA bad gives \[3\]"):
        patcher.apply([Patch("text_encoder", "encoder.layers.0.mlp.fc1", Fixed(torch.ones(3)), 1.0, "bad")])
    assert differing(before, snapshot(pipe)) == set() and not patcher.active


def test_a_failing_patch_after_one_added_in_place_leaves_the_module_original(sd1: Any) -> None:
    from sdlocal.engine.networks.lora_deltas import LoraDelta

    module = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0"
    weight = weight_of(sd1.pipe, "unet", module)
    before = snapshot(sd1.pipe)
    added = LoraDelta(up=torch.randn(weight.shape[0], 2), down=torch.randn(2, weight.shape[1]))
    patcher = patcher_for(sd1)
    with pytest.raises(ValueError, match=rf"unet\.{module}: the LoRA bad gives \[7\]"):
        patcher.apply([Patch("unet", module, added, 1.0), Patch("unet", module, Fixed(torch.ones(7)), 1.0, "bad")])
    assert differing(before, snapshot(sd1.pipe)) == set() and not patcher.active


def test_a_model_file_changed_since_the_load_is_refused_before_any_weight_changes(tmp_path: Path) -> None:
    from sdlocal.engine.synthetic import save_tiny_model

    (tmp_path / "models").mkdir()
    file = save_tiny_model(tmp_path / "models" / "tiny.safetensors", family="sd1", fmt="safetensors")
    loaded = load(tmp_path / "models", tmp_path / "data", "tiny")
    patcher = patcher_for(loaded)
    patcher.apply([patch(loaded.pipe, "unet", "conv_in", 1)])
    patched = snapshot(loaded.pipe)
    stat = file.stat()
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(EngineError, match="tiny changed on disk since it was loaded") as caught:
        patcher.apply([patch(loaded.pipe, "unet", "conv_out", 2)])
    assert caught.value.hint == "Reload the model (pick it again)."
    assert differing(patched, snapshot(loaded.pipe)) == set()
    assert patcher.patched == {("unet", "conv_in")}


# ------------------------------------------------------------------------------------------ run modes
def test_fused_attention_of_fast_mode_follows_the_patches_and_restores_exactly(sd1: Any) -> None:
    from sdlocal.engine.fast import apply_fast_mode

    pipe = sd1.pipe
    assert apply_fast_mode(pipe, "cpu", only=("fuse_qkv",))
    block = "down_blocks.1.attentions.0.transformer_blocks.0"
    self_attn, cross_attn = (pipe.unet.get_submodule(f"{block}.{attn}") for attn in ("attn1", "attn2"))
    assert self_attn.fused_projections and self_attn.to_qkv is not None and cross_attn.to_kv is not None
    x = torch.randn(1, 5, self_attn.to_q.in_features, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 3, cross_attn.to_k.in_features, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = (self_attn.to_qkv(x), cross_attn.to_kv(context))
    patcher = patcher_for(sd1)
    patcher.apply([patch(pipe, "unet", f"{block}.attn1.to_k", 1), patch(pipe, "unet", f"{block}.attn2.to_v", 2)])
    with torch.no_grad():
        during = (self_attn.to_qkv(x), cross_attn.to_kv(context))
    assert torch.equal(self_attn.to_qkv.weight, torch.cat([self_attn.to_q.weight, self_attn.to_k.weight,
                                                           self_attn.to_v.weight]))
    assert torch.equal(cross_attn.to_kv.weight, torch.cat([cross_attn.to_k.weight, cross_attn.to_v.weight]))
    assert not torch.equal(before[0], during[0]) and not torch.equal(before[1], during[1])
    patcher.restore()
    with torch.no_grad():
        after = (self_attn.to_qkv(x), cross_attn.to_kv(context))
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


def test_channels_last_weights_stay_channels_last_and_the_same_parameter_objects(sd1: Any) -> None:
    from sdlocal.engine.fast import apply_fast_mode

    pipe = sd1.pipe
    apply_fast_mode(pipe, "cpu", only=("channels_last",))
    weight = pipe.unet.conv_in.weight
    patcher_for(sd1).apply([patch(pipe, "unet", "conv_in", 1)])
    assert pipe.unet.conv_in.weight is weight and weight.is_contiguous(memory_format=torch.channels_last)


def test_under_medvram_model_offload_the_image_changes_with_a_lora_and_comes_back_bit_identical(sd1: Any) -> None:
    """Model CPU offload keeps real weights in RAM between runs (hooks move whole models): merging works there."""
    import numpy as np

    pipe = sd1.pipe
    pipe.enable_model_cpu_offload(device="cpu")

    def image() -> Any:
        result = pipe("a red cube", num_inference_steps=2, width=64, height=64, output_type="np",
                      generator=torch.Generator().manual_seed(3))
        return np.asarray(result.images[0])

    before = image()
    chosen = [("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v"), ("unet", "conv_in"),
              ("text_encoder", "encoder.layers.1.self_attn.v_proj")]
    patcher = patcher_for(sd1)
    patcher.apply([patch(pipe, component, module, seed, 2.0) for seed, (component, module) in enumerate(chosen)])
    assert not np.array_equal(image(), before)
    patcher.restore()
    assert np.array_equal(image(), before)


def test_lowvram_sequential_offload_is_refused_with_the_fix(sd1: Any) -> None:
    """--lowvram: accelerate keeps every weight in its hooks and leaves meta tensors on the modules."""
    sd1.pipe.enable_sequential_cpu_offload(device="cpu")
    assert sd1.pipe.unet.conv_in.weight.device.type == "meta"
    with pytest.raises(EngineError) as caught:
        patcher_for(sd1).apply([Patch("unet", "conv_in", Fixed(torch.ones(1)), 1.0)])
    assert caught.value.message == "LoRAs cannot be merged while --lowvram offloads every layer."
    assert caught.value.hint == "Start without --lowvram (use --medvram)."
    assert not sd1.patcher.active


def test_a_model_without_recorded_originals_keeps_cpu_copies_while_patched() -> None:
    layer = torch.nn.Linear(3, 2).to(torch.float16)
    original = layer.weight.detach().clone()
    loaded = SimpleNamespace(pipe=SimpleNamespace(unet=torch.nn.Sequential(layer)), originals=None, patcher=None,
                             entry=SimpleNamespace(name="fake"))
    patcher = patcher_for(loaded)
    patcher.apply([Patch("unet", "0", Fixed(torch.full((6,), 1 / 3)), 1.0)])
    assert isinstance(patcher.originals, MemoryOriginals) and patcher.originals.nbytes == original.numel() * 2
    assert not torch.equal(layer.weight, original) and layer.weight.dtype == torch.float16
    patcher.apply([Patch("unet", "0", Fixed(torch.full((6,), 1 / 7)), 3.0)])
    patcher.restore()
    assert torch.equal(layer.weight, original) and patcher.originals.nbytes == 0


# ------------------------------------------------------------------------------------- the real formats
@pytest.mark.parametrize("fmt", ["lora", "locon", "loha", "lokr", "dora", "peft"])
@pytest.mark.parametrize("name", ["tiny-sd1-safetensors", "tiny-sdxl-safetensors"])
def test_each_format_merges_its_own_change_and_comes_out_exactly(no_network, tiny_models_dir: Path, tmp_path: Path,
                                                                 name: str, fmt: str) -> None:
    from sdlocal.engine.networks.lora_formats import build_patches, read_lora_tensors
    from sdlocal.engine.networks.lora_synthetic import write_lora

    loaded = load(tiny_models_dir, tmp_path, name)
    pipe = loaded.pipe
    start = snapshot(pipe)
    file = write_lora(pipe, tmp_path / f"{fmt}.safetensors", fmt=fmt, conv=True, seed=5)
    patches = build_patches(read_lora_tensors(file), pipe, 0.8, 1.0, fmt).patches
    assert {p.component for p in patches} >= {"unet", "text_encoder"}
    patcher = patcher_for(loaded)
    patcher.apply(patches)
    assert differing(start, snapshot(pipe)) == {f"{p.component}.{p.module}.weight" for p in patches}
    for item in patches:
        original = start[f"{item.component}.{item.module}.weight"]
        expected = original + item.multiplier * item.delta.updown(original.clone()).reshape(original.shape)
        torch.testing.assert_close(weight_of(pipe, item.component, item.module).detach(), expected,
                                   rtol=1e-5, atol=1e-5)
    patcher.restore()
    assert differing(start, snapshot(pipe)) == set()


def test_a_plain_lora_adds_itself_in_place_and_a_dora_on_the_same_module_sees_the_original(
        sd1: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sdlocal.engine.networks.lora_deltas import LoraDelta
    from sdlocal.engine.networks.lora_formats import build_patches, read_lora_tensors
    from sdlocal.engine.networks.lora_synthetic import write_lora

    pipe = sd1.pipe
    by_format = {fmt: build_patches(read_lora_tensors(write_lora(pipe, tmp_path / f"{fmt}.safetensors", fmt=fmt,
                                                                 components=("unet",), seed=seed)),
                                    pipe, 1.0, 1.0, fmt).patches for seed, fmt in enumerate(("lora", "dora"))}
    module = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    lora, dora = (next(p for p in by_format[fmt] if p.module == module) for fmt in ("lora", "dora"))
    original = weight_of(pipe, "unet", module).detach().clone()
    expected = original + 0.6 * lora.delta.updown(original) + 0.9 * dora.delta.updown(original)

    def no_updown(weight: Any) -> Any:
        raise AssertionError("a plain LoRA on an fp32 linear weight is added with add_to, not updown")

    assert isinstance(lora.delta, LoraDelta)
    monkeypatch.setattr(lora.delta, "updown", no_updown)  # this one only: the DoRA's inner LoRA still computes
    patcher_for(sd1).apply([Patch("unet", module, lora.delta, 0.6), Patch("unet", module, dora.delta, 0.9)])
    torch.testing.assert_close(weight_of(pipe, "unet", module).detach(), expected, rtol=1e-5, atol=1e-5)
