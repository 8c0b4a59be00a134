"""RRDBNet, the network of ESRGAN and Real-ESRGAN, written from its published definition (see NOTICE).

Two key layouts exist in the wild and both are read here:

* the Real-ESRGAN/BasicSR layout (``conv_first``, ``body.N.rdb1.conv1``, ``conv_body``, ``conv_up1``,
  ``conv_up2``, ``conv_hr``, ``conv_last``): RealESRGAN_x4plus (23 blocks), the 6-block anime model, x2plus;
* the original ESRGAN layout (``model.0``, ``model.1.sub.N.RDB1.conv1.0``, ...), which most community models
  (4x-UltraSharp, 4x_foolhardy_Remacri, ...) use: the upsampling convs sit at ``model.3``, ``model.6``... and the
  number of them gives the scale.

Both are mapped onto one module whose shape (blocks, features, growth, channels, upsampling steps, input
pixel-unshuffle) is read from the state dict, never from the file name.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional

NEW_BLOCK = re.compile(r"^body\.(\d+)\.rdb([123])\.conv([1-5])\.(weight|bias)$")
OLD_BLOCK = re.compile(r"^model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)$")
OLD_TOP = re.compile(r"^model\.(\d+)\.(weight|bias)$")


@dataclass(frozen=True)
class RrdbShape:
    """What an RRDBNet state dict says about its network."""

    in_channels: int
    out_channels: int
    features: int
    growth: int
    blocks: int
    upsamples: int  # x2 nearest-neighbour + conv steps
    unshuffle: int  # the input is pixel-unshuffled by this (Real-ESRGAN's x2plus: 2, x1: 4)

    @property
    def scale(self) -> float:
        return 2 ** self.upsamples / self.unshuffle


class DenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the input and every earlier output; the result is scaled by 0.2 and added."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        for i in range(1, 5):
            setattr(self, f"conv{i}", nn.Conv2d(features + (i - 1) * growth, growth, 3, 1, 1))
        self.conv5 = nn.Conv2d(features + 4 * growth, features, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        for i in range(1, 5):
            conv = getattr(self, f"conv{i}")
            outputs.append(functional.leaky_relu(conv(torch.cat(outputs, 1)), 0.2))
        return self.conv5(torch.cat(outputs, 1)) * 0.2 + x


class Rrdb(nn.Module):
    """Three dense blocks in a row with a scaled residual around them (residual-in-residual)."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.rdb1 = DenseBlock(features, growth)
        self.rdb2 = DenseBlock(features, growth)
        self.rdb3 = DenseBlock(features, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """The generator: features, a trunk of RRDBs, nearest-neighbour x2 steps, two convs to RGB."""

    def __init__(self, shape: RrdbShape) -> None:
        super().__init__()
        self.shape = shape
        self.conv_first = nn.Conv2d(shape.in_channels * shape.unshuffle ** 2, shape.features, 3, 1, 1)
        self.body = nn.Sequential(*(Rrdb(shape.features, shape.growth) for _ in range(shape.blocks)))
        self.conv_body = nn.Conv2d(shape.features, shape.features, 3, 1, 1)
        self.upconvs = nn.ModuleList(nn.Conv2d(shape.features, shape.features, 3, 1, 1)
                                     for _ in range(shape.upsamples))
        self.conv_hr = nn.Conv2d(shape.features, shape.features, 3, 1, 1)
        self.conv_last = nn.Conv2d(shape.features, shape.out_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shape.unshuffle > 1:
            x = functional.pixel_unshuffle(x, self.shape.unshuffle)
        features = self.conv_first(x)
        features = features + self.conv_body(self.body(features))
        for conv in self.upconvs:
            features = functional.leaky_relu(conv(functional.interpolate(features, scale_factor=2, mode="nearest")),
                                             0.2)
        return self.conv_last(functional.leaky_relu(self.conv_hr(features), 0.2))


def _blocks(shapes: dict[str, Any], pattern: re.Pattern[str]) -> int:
    found = {int(m.group(1)) for m in map(pattern.match, shapes) if m}
    return max(found) + 1 if found else 0


def new_layout_shape(shapes: dict[str, list[int]]) -> RrdbShape:
    """The network a Real-ESRGAN/BasicSR-layout state dict describes (``conv_up3`` makes an x8)."""
    first, last = shapes["conv_first.weight"], shapes["conv_last.weight"]
    upsamples = sum(1 for i in range(1, 5) if f"conv_up{i}.weight" in shapes)
    out_channels = last[0]
    packed = first[1]
    unshuffle = next((u for u in (1, 2, 4) if packed == out_channels * u * u), 0)
    if not unshuffle:
        unshuffle, in_channels = 1, packed
    else:
        in_channels = packed // (unshuffle * unshuffle)
    return RrdbShape(in_channels=in_channels, out_channels=out_channels, features=first[0],
                     growth=shapes["body.0.rdb1.conv1.weight"][0], blocks=_blocks(shapes, NEW_BLOCK),
                     upsamples=upsamples, unshuffle=unshuffle)


def old_layout_indices(shapes: dict[str, list[int]]) -> list[int]:
    """The ``model.N`` indices of the top-level convs (the first conv, the upsampling convs, HR and last)."""
    return sorted({int(m.group(1)) for m in map(OLD_TOP.match, shapes) if m and m.group(2) == "weight"})


def old_layout_shape(shapes: dict[str, list[int]]) -> RrdbShape:
    """The network an original-ESRGAN-layout state dict describes: convs at 0, 3, 6, ..., HR at 3n+2, last 3n+4."""
    indices = old_layout_indices(shapes)
    last = indices[-1]
    upsamples = (last - 4) // 3
    if upsamples < 0 or (last - 4) % 3 or indices != [0, *(3 * (i + 1) for i in range(upsamples)), last - 2, last]:
        raise ValueError(f"an ESRGAN layout with convs at model.{indices} is not one this reader knows")
    blocks = _blocks(shapes, OLD_BLOCK)
    first = shapes["model.0.weight"]
    return RrdbShape(in_channels=first[1], out_channels=shapes[f"model.{last}.weight"][0], features=first[0],
                     growth=shapes["model.1.sub.0.RDB1.conv1.0.weight"][0], blocks=blocks, upsamples=upsamples,
                     unshuffle=1)


def convert_old_layout(state: dict[str, Any], shape: RrdbShape) -> dict[str, Any]:
    """Original-ESRGAN keys -> this module's keys."""
    last = 3 * shape.upsamples + 4
    top = {0: "conv_first", last - 2: "conv_hr", last: "conv_last"}
    top.update({3 * (i + 1): f"upconvs.{i}" for i in range(shape.upsamples)})
    converted: dict[str, Any] = {}
    for key, value in state.items():
        block = OLD_BLOCK.match(key)
        if block:
            index, rdb, conv, kind = block.groups()
            converted[f"body.{index}.rdb{rdb}.conv{conv}.{kind}"] = value
            continue
        if key.startswith(f"model.1.sub.{shape.blocks}."):
            converted[f"conv_body.{key.rsplit('.', 1)[1]}"] = value
            continue
        match = OLD_TOP.match(key)
        if match and int(match.group(1)) in top:
            converted[f"{top[int(match.group(1))]}.{match.group(2)}"] = value
    return converted


def convert_new_layout(state: dict[str, Any]) -> dict[str, Any]:
    """Real-ESRGAN/BasicSR keys -> this module's keys (only the upsampling convs are renamed)."""
    converted = {}
    for key, value in state.items():
        match = re.match(r"^conv_up(\d)\.(weight|bias)$", key)
        converted[f"upconvs.{int(match.group(1)) - 1}.{match.group(2)}" if match else key] = value
    return converted


def describe(shape: RrdbShape) -> str:
    scale = shape.scale
    shown = int(scale) if float(scale).is_integer() else scale
    return f"ESRGAN (RRDBNet, {shape.blocks} blocks, {shape.features} features, x{shown})"


def is_power_of_two(value: float) -> bool:
    return value >= 1 and math.log2(value).is_integer()
