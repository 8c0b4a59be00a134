"""SRVGGNetCompact, Real-ESRGAN's small "general" network (realesr-general-x4v3, realesr-animevideov3), written
from its published definition (see NOTICE): a plain stack of 3x3 convs with PReLUs at the input size, a pixel
shuffle to the output size, and the nearest-neighbour upscaled input added back.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

BODY = re.compile(r"^body\.(\d+)\.weight$")


@dataclass(frozen=True)
class CompactShape:
    in_channels: int
    out_channels: int
    features: int
    convs: int  # the convs between the first and the last
    scale: int


class SRVGGNetCompact(nn.Module):
    def __init__(self, shape: CompactShape) -> None:
        super().__init__()
        self.shape = shape
        layers: list[nn.Module] = [nn.Conv2d(shape.in_channels, shape.features, 3, 1, 1),
                                   nn.PReLU(num_parameters=shape.features)]
        for _ in range(shape.convs):
            layers += [nn.Conv2d(shape.features, shape.features, 3, 1, 1), nn.PReLU(num_parameters=shape.features)]
        layers.append(nn.Conv2d(shape.features, shape.out_channels * shape.scale ** 2, 3, 1, 1))
        self.body = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = functional.pixel_shuffle(out, self.shape.scale)
        return out + functional.interpolate(x, scale_factor=self.shape.scale, mode="nearest")


def compact_shape(shapes: dict[str, list[int]]) -> CompactShape:
    """The network a ``body.N`` state dict describes; raises ValueError when it is not this network's pattern."""
    indices = sorted(int(m.group(1)) for m in map(BODY.match, shapes) if m)
    convs = [i for i in indices if len(shapes[f"body.{i}.weight"]) == 4]
    prelus = [i for i in indices if len(shapes[f"body.{i}.weight"]) == 1]
    if len(convs) < 2 or convs != list(range(0, 2 * len(convs) - 1, 2)) or prelus != [c + 1 for c in convs[:-1]]:
        raise ValueError("its body is not SRVGGNetCompact's alternating convs and PReLUs")
    first, last = shapes["body.0.weight"], shapes[f"body.{convs[-1]}.weight"]
    in_channels = first[1]
    scale = math.isqrt(last[0] // in_channels) if last[0] % in_channels == 0 else 0
    if scale < 1 or scale * scale * in_channels != last[0]:
        raise ValueError(f"its last conv has {last[0]} outputs, not {in_channels} x a square scale")
    return CompactShape(in_channels=in_channels, out_channels=in_channels, features=first[0], convs=len(convs) - 2,
                        scale=scale)


def describe(shape: CompactShape) -> str:
    return f"Real-ESRGAN compact (SRVGGNetCompact, {shape.convs} convs, {shape.features} features, x{shape.scale})"
