"""LoRAs merged into the weights, and taken out again exactly.

Why merge: a LoRA left beside its layer (PEFT's way) costs an extra low-rank product in every layer at every step
(~13% per step measured); merged, a step costs what it costs without LoRAs. Merging covers every format the same
way (LoRA, LoCon, LoHa, LoKr, DoRA, PEFT): each format is a ``Delta`` whose ``updown`` gives the change, and this
module only adds changes to weights. diffusers' PEFT path knows no LoHa or LoKr.

Why exact: a module's weight is always computed from its ORIGINAL, ``original + sum(multiplier * updown)`` in
fp32, then cast once, never by subtracting the previous LoRAs (in fp16/bf16 ``(W + d) - d`` drifts from ``W``).
The original of a module not patched now is its weight as it is; the original of a module patched now is read
back from the checkpoint file (``originals``), so no copy of the patched weights is kept in RAM.

Weights are written in place (``param.data.copy_``): the Parameter objects stay, so a channels-last layout,
accelerate's model-offload hooks and the img2img/inpaint pipelines over the same modules all stay valid. Only the
modules whose patch list changed are touched, one at a time (one module's fp32 temporaries in memory at once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sdlocal.engine.networks.lora import Patch
from sdlocal.engine.networks.originals import MemoryOriginals, Originals
from sdlocal.engine.request import EngineError

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (component, module name in that component)


class NetworkPatcher:
    """The LoRA patches merged into one loaded model's weights; one per LoadedModel (``patcher_for``)."""

    def __init__(self, loaded: Any) -> None:
        self.loaded = loaded
        label = getattr(getattr(loaded, "entry", None), "name", "the model")
        self.originals: Originals = getattr(loaded, "originals", None) or MemoryOriginals(label)
        self._applied: dict[Key, tuple[Patch, ...]] = {}
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Whether any weight differs from the loaded model's now."""
        return bool(self._applied)

    @property
    def patched(self) -> set[Key]:
        """The (component, module) pairs whose weight holds patches now."""
        return set(self._applied)

    def restore(self) -> None:
        """Every weight back to its original, bit for bit."""
        self.apply([])

    def apply(self, patches: Sequence[Patch]) -> None:
        """Make each patched module's weight ``original + sum(multiplier * delta.updown(original))``, and every
        module patched before but not now its original again; the same patch set again does nothing."""
        import torch

        wanted = _by_module(patches)
        with self._lock, torch.no_grad():
            changed = sorted(key for key in wanted.keys() | self._applied.keys()
                             if not _same(wanted.get(key, ()), self._applied.get(key, ())))
            if not changed:
                return
            started = time.perf_counter()
            modules = {key: self._module(key) for key in changed}  # every name checked before any weight changes
            if any(key in self._applied for key in changed):
                self.originals.check()  # refused before the first write, not half-way through
            scratch = _Scratch()
            try:
                for key in changed:
                    self._merge(key, modules[key], wanted.get(key, ()), scratch)
            finally:
                self.originals.done()
                _refresh_fused(self.loaded.pipe, changed)
                del scratch
                _give_back_freed_memory()
            log.info("LoRA patches: %d modules changed in %.2f s (%d patched now)", len(changed),
                     time.perf_counter() - started, len(self._applied))

    def _module(self, key: Key) -> Any:
        component, name = key
        model = getattr(self.loaded.pipe, component, None)
        if model is None:
            raise ValueError(f"{component}.{name}: the loaded model has no {component} to patch")
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{component}.{name}: no such module in the loaded model") from None
        weight = getattr(module, "weight", None)
        if weight is None or not hasattr(weight, "data"):
            raise ValueError(f"{component}.{name}: the module has no weight to patch")
        if weight.device.type == "meta":  # sequential offload: the weights live in accelerate's hooks
            raise EngineError("LoRAs cannot be merged while --lowvram offloads every layer.",
                              "Start without --lowvram (use --medvram).")
        return module

    def _merge(self, key: Key, module: Any, patches: tuple[Patch, ...], scratch: _Scratch) -> None:
        """One module: back to its original, then the patches computed from it and summed onto it in fp32."""
        import torch

        component, name = key
        param = f"{name}.weight"
        weight = module.weight
        if key in self._applied:  # every merge starts from the original, never from the patched weight
            self.originals.read_into(component, param, weight.data)
            del self._applied[key]
        if not patches:
            self.originals.forget(component, param)
            return
        self.originals.remember(component, param, weight.detach())
        in_place = weight.dtype == torch.float32  # fp32: the weight is its own fp32 original
        base = weight.detach() if in_place else scratch.fp32(weight).copy_(weight.detach())
        try:
            _add_all(key, patches, base)
        except Exception:
            if in_place:  # some patches may be in already: the weight goes back to its original
                self.originals.read_into(component, param, weight.data)
            self.originals.forget(component, param)
            raise
        if not in_place:
            weight.data.copy_(base)  # the one cast to the weight's dtype, in its own memory format
        self._applied[key] = patches


def _add_all(key: Key, patches: tuple[Patch, ...], base: Any) -> None:
    """``base += sum(multiplier * updown(original))`` in place, ``base`` (fp32) holding the original on entry.

    The changes of Deltas that may read the weight (DoRA's norm) are computed first, from the untouched original;
    a Delta with ``add_to`` (a plain LoRA: one ``addmm_``, no change-sized temporary) then adds itself, and the
    ones whose ``add_to`` declines give their ``updown`` (which, for those, does not read the weight's values).
    Each is added in the order given, so the same patches give the same bits.
    """
    early = {index: _change(key, patch, base) for index, patch in enumerate(patches)
             if not callable(getattr(patch.delta, "add_to", None))}
    for index, patch in enumerate(patches):
        multiplier = float(patch.multiplier)
        change = early.pop(index, None)
        if change is None:
            if patch.delta.add_to(base, multiplier):
                continue
            change = _change(key, patch, base)
        base.add_(change, alpha=multiplier)
        del change


def _change(key: Key, patch: Patch, base: Any) -> Any:
    """``patch.delta.updown(base)`` checked and shaped as the weight."""
    import torch

    change = patch.delta.updown(base)
    if change.numel() != base.numel():
        source = f"the LoRA {patch.network}" if patch.network else "the LoRA"
        raise ValueError(f"{key[0]}.{key[1]}: {source} gives {list(change.shape)} ({change.numel()} values), "
                         f"the weight is {list(base.shape)} ({base.numel()} values)")
    return change.to(device=base.device, dtype=torch.float32).reshape(base.shape)


class _Scratch:
    """One fp32 buffer per device, reused by every module of an apply (fresh memory per module would cost a page
    fault per page: measured slower than the arithmetic itself); dropped with the apply."""

    def __init__(self) -> None:
        self.buffers: dict[Any, Any] = {}

    def fp32(self, like: Any) -> Any:
        import torch

        buffer = self.buffers.get(like.device)
        if buffer is None or buffer.numel() < like.numel():
            buffer = self.buffers[like.device] = torch.empty(like.numel(), dtype=torch.float32, device=like.device)
        return buffer[:like.numel()].view(like.shape)


def _by_module(patches: Sequence[Patch]) -> dict[Key, tuple[Patch, ...]]:
    """The patches per module, in the order given; a multiplier of 0 changes nothing and is left out."""
    grouped: dict[Key, list[Patch]] = {}
    for patch in patches:
        if float(patch.multiplier) != 0.0:
            grouped.setdefault((patch.component, patch.module), []).append(patch)
    return {key: tuple(group) for key, group in grouped.items()}


def _same(new: tuple[Patch, ...], old: tuple[Patch, ...]) -> bool:
    """The same Delta objects at the same multipliers, in any order (Deltas hold tensors: compared by identity)."""
    def signature(group: tuple[Patch, ...]) -> Counter[tuple[int, float]]:
        return Counter((id(patch.delta), float(patch.multiplier)) for patch in group)

    return len(new) == len(old) and signature(new) == signature(old)


def _refresh_fused(pipe: Any, changed: list[Key]) -> None:
    """Fast mode's fused attention projections rebuilt from the patched q/k/v, as diffusers' ``fuse_projections``
    builds them (the weights one after the other along dim 0): once fused, the fused layer is the one that runs."""
    owners = {(component, name.rpartition(".")[0]) for component, name in changed
              if name.rpartition(".")[2] in ("to_q", "to_k", "to_v")}
    for component, owner in sorted(owners):
        attn = getattr(pipe, component).get_submodule(owner)
        if not getattr(attn, "fused_projections", False):
            continue
        if not getattr(attn, "is_cross_attention", False) and getattr(attn, "to_qkv", None) is not None:
            _copy_rows(attn.to_qkv.weight, (attn.to_q.weight, attn.to_k.weight, attn.to_v.weight))
        elif getattr(attn, "to_kv", None) is not None:
            _copy_rows(attn.to_kv.weight, (attn.to_k.weight, attn.to_v.weight))


def _copy_rows(fused: Any, parts: tuple[Any, ...]) -> None:
    """Each part into its rows of the fused weight, in place (no concatenated temporary)."""
    start = 0
    for part in parts:
        fused.data[start:start + part.shape[0]].copy_(part.data)
        start += part.shape[0]


def _give_back_freed_memory() -> None:
    """The freed buffers and factor conversions back to the OS (glibc keeps freed blocks under its mmap threshold
    in the heap): measured on a real-size SD 1.5 with a rank-64 LoRA, resident memory grew 63 MB per change
    without this, 19 MB with it (the file is 75 MB)."""
    from sdlocal.engine.loader import _trim_heap

    _trim_heap()


def patcher_for(loaded: Any) -> NetworkPatcher:
    """The loaded model's patcher, made on first use and kept on it (its record of what is merged lives there)."""
    patcher = getattr(loaded, "patcher", None)
    if patcher is None:
        patcher = NetworkPatcher(loaded)
        loaded.patcher = patcher
    return patcher
