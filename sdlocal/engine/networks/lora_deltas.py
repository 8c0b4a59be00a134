"""The change each LoRA format makes to one module's weight, from its factors (one class per format family).

Every class is a ``lora.Delta``: ``updown(weight)`` returns the change at multiplier 1, alpha/rank scaling
included, in float32 on the weight's device, shaped like the weight. The factors stay as the file gave them (fp16
files cost their size in memory) and are converted only while a change is computed. ``shape()`` is the change's
shape from the factors' shapes alone, so a file is checked against a model before anything is computed; it raises
``ValueError`` (the reason) when the factors cannot multiply.

Identity is equality (``eq=False``): the patcher recognises "the same patch again" by the same Delta object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# updown[p, q, k, l] = sum_ij core[i, j, k, l] * b[j, q] * a[i, p]: a tucker (CP) core with its two factors.
_TUCKER = "ijkl,jq,ip->pqkl"


def shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(n) for n in shape) + "]"


def _f32(tensor: Any, device: Any) -> Any:
    import torch

    return tensor.to(device=device, dtype=torch.float32)


def _bytes(*tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _scale(alpha: float | None, rank: int | None) -> float:
    """alpha / rank; a file without alpha means alpha = rank (scale 1)."""
    return 1.0 if alpha is None or not rank else alpha / rank


class ModuleDelta:
    """What every format's delta has: a label for messages, its rank and scale, its factors' size."""

    kind = ""
    rank: int | None
    scale: float
    nbytes: int

    def shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def updown(self, weight: Any) -> Any:
        raise NotImplementedError


@dataclass(eq=False)
class LoraDelta(ModuleDelta):
    """kohya LoRA / LoCon and diffusers/PEFT ``lora_A``/``lora_B``: up @ down; with ``mid`` (tucker LoCon)
    up[p, i] * mid[i, j, k, l] * down[j, q]."""

    up: Any  # [out, r] or [out, r, 1, 1]
    down: Any  # [r, in] or [r, in, kh, kw] ([r, in, 1, 1] with mid)
    mid: Any = None  # [r, r, kh, kw]
    alpha: float | None = None
    kind = "LoRA"

    def __post_init__(self) -> None:
        self.rank = int(self.down.shape[0])
        self.scale = _scale(self.alpha, self.rank)
        self.nbytes = _bytes(self.up, self.down, self.mid)

    def shape(self) -> tuple[int, ...]:
        up, down = tuple(self.up.shape), tuple(self.down.shape)
        if len(up) < 2 or len(down) < 2 or math.prod(up[1:]) != down[0]:
            raise ValueError(f"its factors do not multiply (up {shape_text(up)}, down {shape_text(down)})")
        if self.mid is None:
            return (up[0], *down[1:])
        mid = tuple(self.mid.shape)
        if len(mid) != 4 or mid[0] != up[1] or mid[1] != down[0]:
            raise ValueError(f"its tucker core {shape_text(mid)} does not fit up {shape_text(up)} and "
                             f"down {shape_text(down)}")
        return (up[0], down[1], *mid[2:])

    def updown(self, weight: Any) -> Any:
        import torch

        up = _f32(self.up, weight.device).flatten(1) * self.scale  # scaling the small factor saves a full pass
        down = _f32(self.down, weight.device).flatten(1)
        if self.mid is None:
            change = up @ down
        else:
            change = torch.einsum("pi,ijkl,jq->pqkl", up, _f32(self.mid, weight.device), down)
        return change.reshape(weight.shape)

    def add_to(self, weight: Any, multiplier: float) -> bool:
        """``weight += multiplier * updown`` in place (fp32, as one ``addmm_``), when it can be: no change-sized
        temporary, so the merge costs the matmul alone. False (nothing done) for a tucker LoCon or a weight
        that cannot be seen as [out, in] without a copy (a channels-last convolution); then use ``updown``."""
        import torch

        if self.mid is not None or weight.dtype != torch.float32:
            return False
        try:
            rows = weight.view(weight.shape[0], -1)
        except RuntimeError:
            return False
        down = _f32(self.down, weight.device).flatten(1)
        if rows.shape[1] != down.shape[1]:
            return False
        rows.addmm_(_f32(self.up, weight.device).flatten(1), down, alpha=multiplier * self.scale)
        return True


@dataclass(eq=False)
class LohaDelta(ModuleDelta):
    """LyCORIS LoHa: (w1_a @ w1_b) * (w2_a @ w2_b), elementwise; with ``t1``/``t2`` each side is the tucker
    product t[i, j, k, l] * w_b[j, q] * w_a[i, p] (w_a [r, out], w_b [r, in] then)."""

    w1_a: Any
    w1_b: Any
    w2_a: Any
    w2_b: Any
    t1: Any = None
    t2: Any = None
    alpha: float | None = None
    kind = "LoHa"

    def __post_init__(self) -> None:
        self.rank = int(self.w1_b.shape[0])
        self.scale = _scale(self.alpha, self.rank)
        self.nbytes = _bytes(self.w1_a, self.w1_b, self.w2_a, self.w2_b, self.t1, self.t2)

    @staticmethod
    def _side_shape(a: Any, b: Any, t: Any) -> tuple[int, ...]:
        a_shape, b_shape = tuple(a.shape), tuple(b.shape)
        if t is None:
            if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[1] != b_shape[0]:
                raise ValueError(f"its LoHa factors do not multiply ({shape_text(a_shape)} @ {shape_text(b_shape)})")
            return a_shape[0], b_shape[1]
        t_shape = tuple(t.shape)
        if len(t_shape) != 4 or len(a_shape) != 2 or len(b_shape) != 2 or (a_shape[0], b_shape[0]) != t_shape[:2]:
            raise ValueError(f"its LoHa tucker core {shape_text(t_shape)} does not fit {shape_text(a_shape)} and "
                             f"{shape_text(b_shape)}")
        return (a_shape[1], b_shape[1], *t_shape[2:])

    def shape(self) -> tuple[int, ...]:
        first = self._side_shape(self.w1_a, self.w1_b, self.t1)
        second = self._side_shape(self.w2_a, self.w2_b, self.t2)
        if first != second:
            raise ValueError(f"its two LoHa products differ in shape ({shape_text(first)}, {shape_text(second)})")
        return first

    @staticmethod
    def _side(a: Any, b: Any, t: Any, device: Any, scale: float = 1.0) -> Any:
        import torch

        if t is None:
            return (_f32(a, device) * scale) @ _f32(b, device)
        return torch.einsum(_TUCKER, _f32(t, device), _f32(b, device), _f32(a, device) * scale)

    def updown(self, weight: Any) -> Any:
        first = self._side(self.w1_a, self.w1_b, self.t1, weight.device, self.scale)
        second = self._side(self.w2_a, self.w2_b, self.t2, weight.device)
        return (first.mul_(second)).reshape(weight.shape)


@dataclass(eq=False)
class LokrDelta(ModuleDelta):
    """LyCORIS LoKr: kron(w1, w2), each side given whole (``lokr_w1``) or as two factors (``_a @ _b``), the
    second also as a tucker product with ``lokr_t2``. For a convolution w1 [o1, i1] acts as [o1, i1, 1, 1] and
    w2 is [o2, i2, kh, kw]. The rank (for alpha) is that of the first factored side; none factored: scale 1."""

    w1: Any = None
    w1_a: Any = None
    w1_b: Any = None
    w2: Any = None
    w2_a: Any = None
    w2_b: Any = None
    t2: Any = None
    alpha: float | None = None
    kind = "LoKr"

    def __post_init__(self) -> None:
        factored = self.w1_b if self.w1 is None else (self.w2_b if self.w2 is None else None)
        self.rank = int(factored.shape[0]) if factored is not None else None
        self.scale = _scale(self.alpha, self.rank)
        self.nbytes = _bytes(self.w1, self.w1_a, self.w1_b, self.w2, self.w2_a, self.w2_b, self.t2)

    def _w1_shape(self) -> tuple[int, ...]:
        if self.w1 is not None:
            return tuple(self.w1.shape)
        a, b = tuple(self.w1_a.shape), tuple(self.w1_b.shape)
        if len(a) != 2 or len(b) != 2 or a[1] != b[0]:
            raise ValueError(f"its lokr_w1 factors do not multiply ({shape_text(a)} @ {shape_text(b)})")
        return a[0], b[1]

    def _w2_shape(self) -> tuple[int, ...]:
        if self.w2 is not None:
            return tuple(self.w2.shape)
        return LohaDelta._side_shape(self.w2_a, self.w2_b, self.t2)

    def shape(self) -> tuple[int, ...]:
        w1, w2 = self._w1_shape(), self._w2_shape()
        if len(w1) != 2:
            raise ValueError(f"its lokr_w1 is {shape_text(w1)}, not a matrix")
        return w1[0] * w2[0], w1[1] * math.prod(w2[1:])

    def updown(self, weight: Any) -> Any:
        import torch

        device = weight.device
        w1 = _f32(self.w1, device) if self.w1 is not None else _f32(self.w1_a, device) @ _f32(self.w1_b, device)
        w1 = w1 * self.scale  # the smaller side carries the scaling
        if self.w2 is not None:
            w2 = _f32(self.w2, device)
        elif self.t2 is not None:
            w2 = torch.einsum(_TUCKER, _f32(self.t2, device), _f32(self.w2_b, device), _f32(self.w2_a, device))
        else:
            w2 = _f32(self.w2_a, device) @ _f32(self.w2_b, device)
        if weight.dim() == 4:
            w1 = w1.reshape(*w1.shape[:2], 1, 1)
            if w2.dim() == 2:
                w2 = w2.reshape(w2.shape[0], -1, *weight.shape[2:])
        return torch.kron(w1.contiguous(), w2.contiguous()).reshape(weight.shape)


@dataclass(eq=False)
class DoraDelta(ModuleDelta):
    """DoRA: another format's change D, then the sum's norm set to ``dora_scale``: M = W + D,
    change = M * dora_scale / |M| - W. |M| is per output row when ``dora_scale`` holds one value per output
    ([out, 1, ...]), else per input column ([1, in, ...])."""

    inner: ModuleDelta
    dora_scale: Any
    kind = "DoRA"

    def __post_init__(self) -> None:
        self.rank = self.inner.rank
        self.scale = self.inner.scale
        self.nbytes = self.inner.nbytes + _bytes(self.dora_scale)

    def shape(self) -> tuple[int, ...]:
        shape = self.inner.shape()
        scale = tuple(self.dora_scale.shape)
        rows = bool(scale) and scale[0] == shape[0] and math.prod(scale) == shape[0]
        columns = len(scale) >= 2 and scale[0] == 1 and len(shape) >= 2 and math.prod(scale) <= math.prod(shape[1:])
        if not (rows or columns):
            raise ValueError(f"its dora_scale {shape_text(scale)} fits neither the outputs nor the inputs of "
                             f"{shape_text(shape)}")
        return shape

    def updown(self, weight: Any) -> Any:
        import torch

        merged = weight + self.inner.updown(weight)
        scale = _f32(self.dora_scale, weight.device)
        per_row = scale.shape[0] == weight.shape[0] and scale.numel() == weight.shape[0]
        keep = 0 if per_row else 1
        norm = torch.linalg.vector_norm(merged, dim=tuple(d for d in range(merged.dim()) if d != keep), keepdim=True)
        return merged * (scale.reshape(norm.shape) / norm) - weight
