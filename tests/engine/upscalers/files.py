"""Tiny upscaler files with random weights, in the key layouts real files use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sdlocal.engine.upscalers.rrdbnet import RRDBNet, RrdbShape
from sdlocal.engine.upscalers.srvgg import CompactShape, SRVGGNetCompact


def tiny_rrdb(blocks: int = 2, features: int = 8, growth: int = 4, upsamples: int = 2, unshuffle: int = 1,
              seed: int = 0) -> RRDBNet:
    torch.manual_seed(seed)
    return RRDBNet(RrdbShape(in_channels=3, out_channels=3, features=features, growth=growth, blocks=blocks,
                             upsamples=upsamples, unshuffle=unshuffle)).eval()


def new_layout(model: RRDBNet) -> dict[str, Any]:
    """Real-ESRGAN/BasicSR key names (``conv_up1``...)."""
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("upconvs."):
            index, kind = key.split(".")[1:]
            key = f"conv_up{int(index) + 1}.{kind}"
        state[key] = value.clone()
    return state


def old_layout(model: RRDBNet) -> dict[str, Any]:
    """Original ESRGAN key names (``model.0``, ``model.1.sub.N.RDB1.conv1.0``...)."""
    shape = model.shape
    last = 3 * shape.upsamples + 4
    top = {"conv_first": 0, "conv_hr": last - 2, "conv_last": last}
    state = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "body":
            key = f"model.1.sub.{parts[1]}.RDB{parts[2][-1]}.{parts[3]}.0.{parts[4]}"
        elif parts[0] == "conv_body":
            key = f"model.1.sub.{shape.blocks}.{parts[1]}"
        elif parts[0] == "upconvs":
            key = f"model.{3 * (int(parts[1]) + 1)}.{parts[2]}"
        else:
            key = f"model.{top[parts[0]]}.{parts[1]}"
        state[key] = value.clone()
    return state


def tiny_compact(convs: int = 2, features: int = 8, scale: int = 4, seed: int = 0) -> SRVGGNetCompact:
    torch.manual_seed(seed)
    return SRVGGNetCompact(CompactShape(in_channels=3, out_channels=3, features=features, convs=convs,
                                        scale=scale)).eval()


def save(state: dict[str, Any], path: Path, wrap: str | None = None) -> Path:
    """As a ``.safetensors`` or a ``.pth`` (optionally inside ``{"params_ema": ...}``, as Real-ESRGAN ships)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    else:
        torch.save({wrap: state} if wrap else state, str(path))
    return path
