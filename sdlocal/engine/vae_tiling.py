"""Automatic VAE tiling: a decode (or encode) that would not fit in memory is tiled instead of failing.

Hires fix makes pictures 2x to 4x the first pass's area, and the VAE's activations at full resolution are what
runs out of memory first (an SDXL 2x hires decode of a 1024 picture is several GiB in fp32). Before each decode
or encode the memory it needs is estimated as bytes per output pixel x pixels x images; when that is more than
``HEADROOM`` of what is free (CUDA: ``torch.cuda.mem_get_info``; CPU: the RAM available), diffusers' tiled
decode/encode is switched on for that call only and a warning says so. A request that asked for tiling keeps it.

The constant is measured by ``bench/vae_tiling.py``: the peak memory above the weights of an SDXL-shaped VAE
decoding one latent, untiled, divided by the picture's pixels, at several sizes. Tiling uses the VAE's own
tile size (diffusers: its config's ``sample_size``, 1024 px for SDXL, 512 for SD 1.x), so a tiled decode peaks
at about one tile's untiled figure plus the output, whatever the picture's size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sdlocal.engine.fit import available_ram, free_gpu_memory

log = logging.getLogger(__name__)

# Peak bytes above the weights per decoded pixel, fp32, untiled: bench/vae_tiling.py, SDXL's VAE config, CPU
# (2 cores, December 2026): 256 px 5 350 (334 MiB, mostly fixed overhead), 512 px 4 230 (1 057 MiB), 1024 px
# 3 870 (3 866 MiB) bytes / px; tiled (256 px tiles) 1024 px took 407 MiB. The 512 px figure rounded up: where
# tiling matters (large pictures) it over-estimates a little, which tiles a little early rather than too late.
DECODE_BYTES_PER_PIXEL_FP32 = 4300
HEADROOM = 0.8  # leave a fifth of what is free to everything else


def needed_bytes(vae: Any, width: int, height: int, images: int) -> int:
    """Estimated peak bytes of decoding (or encoding) ``images`` pictures of ``width`` x ``height`` at once."""
    import torch

    element = torch.finfo(vae.dtype).bits // 8 if vae.dtype.is_floating_point else 4
    return int(DECODE_BYTES_PER_PIXEL_FP32 * element / 4 * width * height * images)


def free_bytes(device: Any) -> int | None:
    """Free memory where the VAE runs: CUDA free memory, else the RAM available; None when unknown (MPS...)."""
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        return free_gpu_memory(str(device))
    if kind == "cpu":
        return available_ram()
    return None


def should_tile(vae: Any, width: int, height: int, images: int, free: int | None) -> bool:
    """True when the VAE is not tiling already and the estimate exceeds ``HEADROOM`` of ``free``."""
    if not hasattr(vae, "use_tiling") or getattr(vae, "use_tiling", False) or free is None:
        return False
    return needed_bytes(vae, width, height, images) > free * HEADROOM


@contextmanager
def auto_tiling(vae: Any, width: int, height: int, images: int, warnings: list[str],
                free: int | None = None) -> Iterator[bool]:
    """Tile the VAE for the body when the picture would not fit (True is yielded then); restored afterwards.

    ``free`` overrides the measured free memory (tests fake a small machine with it).
    """
    free = free_bytes(vae.device) if free is None else free
    if not should_tile(vae, width, height, images, free):
        yield False
        return
    needed = needed_bytes(vae, width, height, images)
    message = (f"The VAE was tiled for {images} x {width}x{height} (about {needed / 2**30:.1f} GiB needed, "
               f"{free / 2**30:.1f} GiB free): seams are blended, slower than a plain decode.")
    log.info(message)
    if message not in warnings:
        warnings.append(message)
    vae.enable_tiling()
    try:
        yield True
    finally:
        vae.disable_tiling()
