"""One tiler for every upscaler network: the picture is cut into overlapping tiles, each tile is upscaled on its
own, and the tiles are blended back with weights that fade out towards each tile's inner edges.

Why: an RRDBNet at 4x keeps about 4 KB of activations per input pixel in fp32, so a 1024x1024 picture in one
piece needs several GB; in tiles the peak is one tile's activations plus the output. The outer quarter of each
overlap (where a tile lacks the context its neighbour has) gets almost no weight, and the rest of the overlap a
linear ramp, so there is no seam and the result matches an untiled run to within rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

MIN_WEIGHT = 1e-4  # keeps the weight sum positive where only a tile's faded border covers a pixel


class TilingInterrupted(Exception):
    """The run's control asked to stop between two tiles."""


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels that cover ``length`` with at least ``overlap`` shared."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _ramp(size: int, fade: int, start_open: bool, end_open: bool) -> Any:
    """Per-pixel weights along one axis: 1 inside, fading over ``fade`` pixels at a side with a neighbour."""
    import torch

    weights = torch.ones(size)
    if fade <= 0:
        return weights
    distance = torch.arange(size, dtype=torch.float32)
    dead = fade / 4  # the outermost quarter: the context that only the neighbouring tile has
    ramp = ((distance - dead) / (fade / 2)).clamp(MIN_WEIGHT, 1.0)
    if start_open:
        weights = torch.minimum(weights, ramp)
    if end_open:
        weights = torch.minimum(weights, ramp.flip(0))
    return weights


def run_tiled(fn: Callable[[Any], Any], image: Any, scale: int, tile: int, overlap: int,
              should_stop: Callable[[], bool] | None = None,
              on_progress: Callable[[int, int], None] | None = None) -> Any:
    """``fn`` over ``image`` ((1, C, H, W), values 0..1) in tiles -> (1, C, H*scale, W*scale) float32 on the CPU.

    ``fn`` takes and returns tensors on its own device; each tile's result comes back to the CPU at once, so
    the device holds one tile at a time. ``should_stop`` is asked before every tile.
    """
    import torch

    _, channels, height, width = image.shape
    tile = max(tile, 2 * overlap + 8)
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    out = torch.zeros((1, channels, height * scale, width * scale), dtype=torch.float32)
    total_weight = torch.zeros((1, 1, height * scale, width * scale), dtype=torch.float32)
    done, total = 0, len(ys) * len(xs)
    for y in ys:
        for x in xs:
            if should_stop is not None and should_stop():
                raise TilingInterrupted
            th, tw = min(tile, height - y), min(tile, width - x)
            with torch.inference_mode():
                result = fn(image[:, :, y:y + th, x:x + tw]).to("cpu", torch.float32)
            if result.shape[-2:] != (th * scale, tw * scale):
                raise ValueError(f"the network made {tuple(result.shape[-2:])} from a {th}x{tw} tile, "
                                 f"not x{scale}")
            fade = overlap * scale
            weight = (_ramp(th * scale, fade, y > 0, y + th < height)[:, None]
                      * _ramp(tw * scale, fade, x > 0, x + tw < width)[None, :])
            region = (slice(None), slice(None), slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale))
            out[region] += result * weight
            total_weight[region] += weight
            done += 1
            if on_progress is not None:
                on_progress(done, total)
    return out.div_(total_weight)
