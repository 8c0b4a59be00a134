"""SRVGGNetCompact: Real-ESRGAN's small model (realesr-general-x4v3, realesr-animevideov3...).

Written from the published definition (Real-ESRGAN, Wang et al. 2021): a 3x3 conv to ``features`` channels and a
PReLU, ``convs`` more 3x3 conv + PReLU pairs, a last 3x3 conv to ``out * scale^2`` channels, a pixel shuffle by
``scale``, plus the input resized by nearest neighbour. Keys ``body.N``: even N convs, odd N PReLU weights
(one per channel); the last conv's output channels give the scale.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sdlocal.engine.upscalers.detection import NotThisArchitecture

_BODY = re.compile(r"^body\.(\d+)\.weight$")


@dataclass(frozen=True)
class SRVGGConfig:
    in_channels: int
    out_channels: int
    features: int
    convs: int  # the body's middle convs (the first and the last not counted)
    scale: int

    @property
    def label(self) -> str:
        return f"Real-ESRGAN compact (SRVGGNetCompact, {self.convs} convs, {self.features} features)"


def detect(shapes: Mapping[str, Sequence[int]]) -> SRVGGConfig:
    """The config of an SRVGGNetCompact state dict; ``NotThisArchitecture`` when it is not one."""
    layers = sorted((int(m.group(1)), list(shape)) for k, shape in shapes.items() if (m := _BODY.match(k)))
    convs = [shape for _, shape in layers if len(shape) == 4]
    prelus = [shape for _, shape in layers if len(shape) == 1]
    if len(convs) < 2 or not prelus or any(k.startswith(("conv_first", "model.")) for k in shapes):
        raise NotThisArchitecture("not an SRVGGNetCompact (no body.N convs with PReLUs)")
    if any(index != i for i, (index, _) in enumerate(layers)) or len(prelus) != len(convs) - 1:
        raise NotThisArchitecture("not an SRVGGNetCompact (its body is not conv/PReLU pairs and a last conv)")
    in_channels, features = int(convs[0][1]), int(convs[0][0])
    out_total = int(convs[-1][0])
    scale = math.isqrt(out_total // in_channels) if out_total % in_channels == 0 else 0
    if scale < 1 or scale * scale * in_channels != out_total:
        raise NotThisArchitecture(f"an SRVGGNetCompact whose last conv gives {out_total} channels, not 3 x scale^2")
    return SRVGGConfig(in_channels, in_channels, features, len(convs) - 2, scale)


def build(config: SRVGGConfig) -> Any:
    """An ``SRVGGNetCompact`` module for ``config``."""
    import torch
    from torch import nn
    from torch.nn import functional

    class SRVGGNetCompact(nn.Module):
        def __init__(self, c: SRVGGConfig) -> None:
            super().__init__()
            self.config = c
            layers: list[nn.Module] = [nn.Conv2d(c.in_channels, c.features, 3, 1, 1), nn.PReLU(c.features)]
            for _ in range(c.convs):
                layers += [nn.Conv2d(c.features, c.features, 3, 1, 1), nn.PReLU(c.features)]
            layers.append(nn.Conv2d(c.features, c.out_channels * c.scale ** 2, 3, 1, 1))
            self.body = nn.ModuleList(layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = x
            for layer in self.body:
                out = layer(out)
            out = functional.pixel_shuffle(out, self.config.scale)
            return out + functional.interpolate(x, scale_factor=self.config.scale, mode="nearest")

    return SRVGGNetCompact(config)
