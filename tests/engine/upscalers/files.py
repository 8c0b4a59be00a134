"""Tiny random-weight upscaler files in the layouts people download: Real-ESRGAN's RRDBNet keys (wrapped in
``params_ema`` as its releases are), the original ESRGAN ``model.N`` keys, x2plus, and the compact model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sdlocal.engine.upscalers import rrdbnet, srvgg
from sdlocal.engine.upscalers.rrdbnet import RRDBConfig
from sdlocal.engine.upscalers.srvgg import SRVGGConfig


def tiny_rrdb(blocks: int = 2, features: int = 8, growth: int = 4, upsamples: int = 2, unshuffle: int = 1,
              seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return rrdbnet.build(RRDBConfig(3, 3, features, growth, blocks, upsamples, unshuffle)).eval()


def tiny_compact(convs: int = 2, features: int = 8, scale: int = 4, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return srvgg.build(SRVGGConfig(3, 3, features, convs, scale)).eval()


def new_to_old(state: dict[str, Any], blocks: int, upsamples: int) -> dict[str, Any]:
    """Real-ESRGAN key names -> the original ESRGAN ``model.N`` names (upsample convs at 3, 6, ...)."""
    tops = {"conv_first": 0, **{f"conv_up{i + 1}": 3 + 3 * i for i in range(upsamples)}}
    tops["conv_hr"] = 3 + 3 * upsamples - 1 if upsamples else 3
    tops["conv_last"] = tops["conv_hr"] + 2
    old: dict[str, Any] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "body":
            old[f"model.1.sub.{parts[1]}.{parts[2].upper()}.{parts[3]}.0.{parts[4]}"] = value
        elif parts[0] == "conv_body":
            old[f"model.1.sub.{blocks}.{parts[1]}"] = value
        else:
            old[f"model.{tops[parts[0]]}.{parts[1]}"] = value
    return old


def save(state: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path
