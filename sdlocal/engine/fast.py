"""Fast mode: speed-ups that change how a loaded pipeline runs, never what it computes beyond rounding.

Off by default (diffusers' own rule: usability first, speed when asked). Each candidate is kept only where a
benchmark showed it helps (``bench/gpu.py`` on CUDA, ``bench/cpu.py`` and ``bench/gpu.py --tiny`` on the CPU;
figures in docs/benchmarks.md):

- ``channels_last``: UNet and VAE weights in NHWC, the layout cuDNN's fp16 convolutions (and oneDNN's on the
  CPU) run fastest in.
- ``fuse_qkv``: one matmul for the query, key and value projections of each self-attention (key and value for
  cross-attention), in the UNet and the VAE. diffusers keeps the unfused weights too, so the attention weights
  take about twice their memory (SD 1.5 UNet: +0.2 GB in fp16). Only with PyTorch SDPA attention: fusing swaps
  the attention processors, which would undo xformers or attention slicing.
- ``compile``: ``torch.compile`` of the UNet's forward (the part that runs once per step). The first run at a
  new size compiles (tens of seconds on a GPU); later runs at that size are faster. Needs triton.

On the CPU (fp32, real-size SD 1.5, 2-core EPYC without native bf16) only channels-last helped, a little:
3-4% off the median image time, 5 of 6 interleaved pairs faster, at most 1/255 pixel difference. Fused QKV was
slower there (+9% median), and torch.compile took 150 s to compile the tiny model's UNet for a 15% gain per
image, paid again at every new size: not worth it for a UI. So on the CPU fast mode is channels-last only.
The preview decoder is already cheap (a 4x3 latent-to-RGB map, ``generate.latent_preview``), so fast mode
leaves it alone.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

CANDIDATES: tuple[str, ...] = ("channels_last", "fuse_qkv", "compile")
# What fast mode applies per device type, from the benchmarks (see the module docstring).
PLAN: dict[str, tuple[str, ...]] = {"cuda": ("channels_last", "fuse_qkv", "compile"), "cpu": ("channels_last",),
                                    "mps": ()}
COMPILE_MODE = "default"  # "max-autotune" tunes each GEMM: minutes of compiling per size for a few percent


def plan_for(device: str) -> tuple[str, ...]:
    """The candidates fast mode applies on ``device`` ("cuda", "cuda:1", "cpu", "mps")."""
    return PLAN.get(device.split(":", 1)[0], ())


def apply_fast_mode(pipe: Any, device: str, only: Iterable[str] | None = None) -> list[str]:
    """Apply the fast-mode changes for ``device`` to a pipeline already on it; returns what was applied.

    ``only`` picks candidates by name regardless of the device's plan (the benchmarks time each one alone).
    Call it after the pipeline is placed (device, dtype, attention choice) and before the first generation.
    """
    wanted = tuple(only) if only is not None else plan_for(device)
    unknown = [name for name in wanted if name not in CANDIDATES]
    if unknown:
        raise ValueError(f"fast mode: unknown option(s) {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}")
    applied: list[str] = []
    if "channels_last" in wanted:
        applied.extend(_channels_last(pipe))
    if "fuse_qkv" in wanted:
        applied.extend(_fuse_qkv(pipe))
    if "compile" in wanted:
        applied.extend(_compile(pipe, device))
    return applied


def _channels_last(pipe: Any) -> list[str]:
    import torch

    done = []
    for name in ("unet", "vae"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.to(memory_format=torch.channels_last)
            done.append(name)
    return [f"channels-last memory format ({', '.join(done)})"] if done else []


def _uses_sdpa_only(module: Any) -> bool:
    from diffusers.models.attention_processor import AttnProcessor2_0

    processors = getattr(module, "attn_processors", {})
    return bool(processors) and all(type(p) is AttnProcessor2_0 for p in processors.values())


def _fuse_qkv(pipe: Any) -> list[str]:
    done = []
    for name in ("unet", "vae"):
        module = getattr(pipe, name, None)
        if module is None or not hasattr(module, "fuse_qkv_projections"):
            continue
        if not _uses_sdpa_only(module):
            log.info("fast mode: QKV fusion skipped for the %s (its attention is not plain PyTorch SDPA)", name)
            continue
        module.fuse_qkv_projections()
        done.append(name)
    return [f"fused QKV projections ({', '.join(done)})"] if done else []


def _compile(pipe: Any, device: str) -> list[str]:
    import torch

    unet = getattr(pipe, "unet", None)
    if unet is None or not hasattr(torch, "compile"):
        return []
    if device.startswith("cuda") and importlib.util.find_spec("triton") is None:
        log.warning("fast mode: torch.compile skipped: it needs the triton package on NVIDIA GPUs")
        return []
    unet.compile(mode=COMPILE_MODE, fullgraph=False)
    return [f"torch.compile(UNet, mode={COMPILE_MODE})"]
