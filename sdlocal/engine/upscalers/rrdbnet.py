"""RRDBNet: the network of ESRGAN and Real-ESRGAN (x4plus, the 6-block anime model, x2plus, 4x-UltraSharp...).

Written from the published definition (ESRGAN, Wang et al. 2018; Real-ESRGAN, Wang et al. 2021): a 3x3 conv to
``features`` channels, ``blocks`` residual-in-residual dense blocks (three dense blocks of five 3x3 convs each,
the k-th conv seeing the input plus ``growth`` new channels per earlier conv, LeakyReLU 0.2, residuals scaled by
0.2), a 3x3 conv added back to the first features, then per 2x step a nearest-neighbour 2x resize and a 3x3 conv,
then two 3x3 convs to the output. Real-ESRGAN's x2 and x1 models first fold 2x2 (4x4) pixels into channels
(pixel-unshuffle), so the same 4x body gives 2x (1x).

Two key styles exist: Real-ESRGAN's (``conv_first``, ``body.N.rdb1.conv1``, ``conv_body``, ``conv_up1``,
``conv_hr``, ``conv_last``) and the original ESRGAN's (``model.0``, ``model.1.sub.N.RDB1.conv1.0``,
``model.1.sub.<blocks>``, then the upsample convs, the HR conv and the last conv at growing ``model.K``).
``old_to_new`` maps the second onto the first; the shapes say everything else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sdlocal.engine.upscalers.detection import NotThisArchitecture

_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_TOP = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_NEW_BLOCK = re.compile(r"^body\.(\d+)\.rdb1\.conv1\.weight$")


@dataclass(frozen=True)
class RRDBConfig:
    """What the shapes say: channels in/out, features, growth, blocks, 2x upsample steps, pixel-unshuffle."""

    in_channels: int
    out_channels: int
    features: int
    growth: int
    blocks: int
    upsamples: int
    unshuffle: int  # 1: none; 2 or 4: Real-ESRGAN's x2 / x1 input folding

    @property
    def scale(self) -> int:
        return (2 ** self.upsamples) // self.unshuffle

    @property
    def label(self) -> str:
        return f"ESRGAN (RRDBNet, {self.blocks} blocks, {self.features} features)"


def old_to_new(keys: Sequence[str]) -> dict[str, str]:
    """Original ESRGAN key -> Real-ESRGAN key, for a state dict in the ``model.N`` style."""
    blocks = {int(m.group(1)) for k in keys if (m := _OLD_RDB.match(k))}
    tops = sorted({int(m.group(1)) for k in keys if (m := _OLD_TOP.match(k))} - {0})
    mapping: dict[str, str] = {}
    for key in keys:
        if m := _OLD_RDB.match(key):
            mapping[key] = f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"
        elif key.startswith(f"model.1.sub.{len(blocks)}."):
            mapping[key] = "conv_body." + key.rsplit(".", 1)[1]
    names = {0: "conv_first"}
    if len(tops) >= 2:
        *ups, hr, last = tops
        names.update({index: f"conv_up{i + 1}" for i, index in enumerate(ups)})
        names.update({hr: "conv_hr", last: "conv_last"})
    for key in keys:
        if (m := _OLD_TOP.match(key)) and int(m.group(1)) in names:
            mapping[key] = f"{names[int(m.group(1))]}.{m.group(2)}"
    return mapping


def detect(shapes: Mapping[str, Sequence[int]]) -> tuple[RRDBConfig, dict[str, str] | None]:
    """The config of an RRDBNet state dict (either key style) and the old->new key map (None: already new);
    ``NotThisArchitecture`` when it is not one."""
    mapping: dict[str, str] | None = None
    if "model.0.weight" in shapes and any(_OLD_RDB.match(k) for k in shapes):
        mapping = old_to_new(list(shapes))
        shapes = {mapping[k]: v for k, v in shapes.items() if k in mapping}
    needed = ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_hr.weight",
              "conv_last.weight")
    if not all(k in shapes for k in needed):
        raise NotThisArchitecture("not an RRDBNet (no conv_first/body/conv_hr/conv_last weights)")
    first, last = list(shapes["conv_first.weight"]), list(shapes["conv_last.weight"])
    blocks = len({m.group(1) for k in shapes if (m := _NEW_BLOCK.match(k))})
    upsamples = len({k for k in shapes if re.match(r"^conv_up\d+\.weight$", k)})
    out_channels, in_channels = int(last[0]), int(first[1])
    folded = in_channels // max(out_channels, 1)
    unshuffle = math.isqrt(folded) if in_channels % max(out_channels, 1) == 0 else 0
    if unshuffle < 1 or unshuffle * unshuffle != folded or (2 ** upsamples) % unshuffle:
        raise NotThisArchitecture(f"an RRDBNet with {in_channels} input and {out_channels} output channels, "
                                  "which no known variant has")
    config = RRDBConfig(in_channels // (unshuffle * unshuffle), out_channels, int(first[0]),
                        int(shapes["body.0.rdb1.conv1.weight"][0]), blocks, upsamples, unshuffle)
    return config, mapping


def build(config: RRDBConfig) -> Any:
    """An ``RRDBNet`` module for ``config`` (torch imported here, not at discovery)."""
    import torch
    from torch import nn
    from torch.nn import functional

    def conv(cin: int, cout: int) -> nn.Conv2d:
        return nn.Conv2d(cin, cout, 3, 1, 1)

    class DenseBlock(nn.Module):
        def __init__(self, nf: int, gc: int) -> None:
            super().__init__()
            self.conv1, self.conv2, self.conv3 = conv(nf, gc), conv(nf + gc, gc), conv(nf + 2 * gc, gc)
            self.conv4, self.conv5 = conv(nf + 3 * gc, gc), conv(nf + 4 * gc, nf)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen = [x]
            for layer in (self.conv1, self.conv2, self.conv3, self.conv4):
                seen.append(functional.leaky_relu(layer(torch.cat(seen, 1)), 0.2))
            return self.conv5(torch.cat(seen, 1)) * 0.2 + x

    class RRDB(nn.Module):
        def __init__(self, nf: int, gc: int) -> None:
            super().__init__()
            self.rdb1, self.rdb2, self.rdb3 = DenseBlock(nf, gc), DenseBlock(nf, gc), DenseBlock(nf, gc)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x

    class RRDBNet(nn.Module):
        def __init__(self, c: RRDBConfig) -> None:
            super().__init__()
            nf = c.features
            self.config = c
            self.conv_first = conv(c.in_channels * c.unshuffle ** 2, nf)
            self.body = nn.Sequential(*(RRDB(nf, c.growth) for _ in range(c.blocks)))
            self.conv_body = conv(nf, nf)
            for i in range(c.upsamples):
                setattr(self, f"conv_up{i + 1}", conv(nf, nf))
            self.conv_hr, self.conv_last = conv(nf, nf), conv(nf, c.out_channels)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.config.unshuffle > 1:
                x = functional.pixel_unshuffle(x, self.config.unshuffle)
            feat = self.conv_first(x)
            feat = feat + self.conv_body(self.body(feat))
            for i in range(self.config.upsamples):
                up = getattr(self, f"conv_up{i + 1}")
                feat = functional.leaky_relu(up(functional.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
            return self.conv_last(functional.leaky_relu(self.conv_hr(feat), 0.2))

    return RRDBNet(config)
