"""One tiler for every upscaler network: overlapping tiles, feathered seams, bounded memory.

The picture is cut into ``tile`` x ``tile`` windows that overlap by ``overlap`` pixels. Each window's output is
weighted by a ramp that is zero over the outer quarter of the overlap on every side that has a neighbour (those
pixels lack context), rises linearly over the middle half and is one inside; the two ramps of neighbouring
windows add up to one, so the blend is exact where both agree and the seam is invisible where they do not.
Only one window's activations live at a time, plus the output and weight sums.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Input pixels per tile side. On the CPU a 128 tile keeps RRDBNet x4plus's largest activations (64 channels at
# 4x the tile) near 64 MiB each, so a 4x upscale of 1024x1024 stays well under 1 GiB above the model (measured in
# bench/upscalers.py); a GPU has the memory for larger tiles, which keep it busier.
DEFAULT_TILE = 128
GPU_TILE = 256
DEFAULT_OVERLAP = 32


def tile_for(device: str) -> int:
    """The tile side for ``device``: larger on a GPU."""
    return GPU_TILE if device.startswith("cuda") else DEFAULT_TILE


def starts(length: int, tile: int, overlap: int) -> list[int]:
    """Window starts along one axis: every ``tile - overlap`` pixels, the last window ending at ``length``."""
    if length <= tile:
        return [0]
    step = tile - overlap
    found = list(range(0, length - tile, step))
    return [*found, length - tile]


def ramp(size: int, overlap: int, lead: bool, trail: bool) -> Any:
    """Weights along one window of ``size`` output pixels; ``lead``/``trail``: a neighbour on that side."""
    import torch

    weights = torch.ones(size)
    if overlap <= 0:
        return weights
    position = torch.arange(size, dtype=torch.float32)
    rise = ((position + 0.5 - overlap / 4) / (overlap / 2)).clamp(0, 1)
    if lead:
        weights = torch.minimum(weights, rise)
    if trail:
        weights = torch.minimum(weights, rise.flip(0))
    return weights


def tile_count(height: int, width: int, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP) -> int:
    return len(starts(height, tile, overlap)) * len(starts(width, tile, overlap))


def run_tiled(network: Callable[[Any], Any], picture: Any, scale: int, tile: int = DEFAULT_TILE,
              overlap: int = DEFAULT_OVERLAP, before_tile: Callable[[int, int], None] | None = None) -> Any:
    """``network`` over ``picture`` (1 x C x H x W, on the network's device) window by window -> the float32 CPU
    output (1 x C x sH x sW). ``before_tile(done, total)`` runs before each window (and once at the end): it may
    raise to stop (an interrupt)."""
    import torch

    if overlap * 2 > tile:
        raise ValueError(f"overlap {overlap} must be at most half the tile size {tile}")
    _, channels, height, width = picture.shape
    rows, cols = starts(height, tile, overlap), starts(width, tile, overlap)
    out = torch.zeros(1, channels, height * scale, width * scale)
    total = torch.zeros(height * scale, width * scale)
    done, count = 0, len(rows) * len(cols)
    for top in rows:
        for left in cols:
            if before_tile is not None:
                before_tile(done, count)
            window = picture[:, :, top:top + tile, left:left + tile]
            with torch.inference_mode():
                result = network(window).float().cpu()
            h, w = result.shape[-2:]
            wy = ramp(h, overlap * scale, top > 0, top + tile < height)
            wx = ramp(w, overlap * scale, left > 0, left + tile < width)
            weight = wy[:, None] * wx[None, :]
            y, x = top * scale, left * scale
            out[:, :, y:y + h, x:x + w] += result * weight
            total[y:y + h, x:x + w] += weight
            done += 1
    if before_tile is not None:
        before_tile(done, count)
    return out.div_(total.clamp_min_(1e-8))  # in place: the 4x output is the largest tensor here
