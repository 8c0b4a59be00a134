"""Tiny embedding files of every format A1111 users have, written the way their tools write them.

Real widths are cheap on disk ([1, 768] is 3 KB), so family detection is tested on real shapes; the tiny test
models' widths ((32,), and (32, 48) for SDXL) make embeddings a tiny model can use.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file


def vectors(count: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed))


def a1111_pt(path: Path, tensor: torch.Tensor, **notes: Any) -> Path:
    """A1111's own format: ``string_to_param['*']`` (an ``nn.Parameter``, as its trainer saves it) plus notes."""
    data = {"string_to_token": {"*": 265}, "string_to_param": {"*": torch.nn.Parameter(tensor.clone())},
            "name": path.stem, **notes}
    return _save(path, data)


def single_tensor(path: Path, tensor: torch.Tensor, token: str = "<cat-toy>") -> Path:
    """diffusers' ``learned_embeds.bin`` / ``.safetensors``: one tensor keyed by its token."""
    if path.suffix == ".safetensors":
        return _save_safetensors(path, {token: tensor})
    return _save(path, {token: tensor.clone()})


def emb_params(path: Path, tensor: torch.Tensor) -> Path:
    return _save_safetensors(path, {"emb_params": tensor})


def sdxl(path: Path, clip_l: torch.Tensor, clip_g: torch.Tensor) -> Path:
    if path.suffix == ".safetensors":
        return _save_safetensors(path, {"clip_l": clip_l, "clip_g": clip_g})
    return _save(path, {"clip_l": clip_l.clone(), "clip_g": clip_g.clone()})


def lora(path: Path) -> Path:
    return _save_safetensors(path, {"lora_unet_down_blocks_0_attn.lora_down.weight": torch.zeros(4, 32),
                                    "lora_unet_down_blocks_0_attn.lora_up.weight": torch.zeros(32, 4)})


def checkpoint(path: Path) -> Path:
    return _save_safetensors(path, {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4),
                                    "first_stage_model.decoder.conv_in.weight": torch.zeros(4, 4)})


def truncated_safetensors(path: Path) -> Path:
    emb_params(path, vectors(2, 768))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    return path


def garbage(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(range(256)) * 4)
    return path


def header_only(path: Path, header: bytes) -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path


class RunsCode:
    """Pickles as a call to ``os.system``: loading it unrestricted would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.marker}",)


def malicious_pt(path: Path, marker: Path) -> Path:
    """An A1111-looking ``.pt`` that also holds code: weights_only must refuse it without running it."""
    return _save(path, {"string_to_param": {"*": vectors(1, 768)}, "payload": RunsCode(marker)})


def _save(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return path


def _save_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def lock_folder(monkeypatch: Any, name: str) -> None:
    """Make every folder called ``name`` unlistable (PermissionError from os.scandir), as a folder of another user's
    would be, without needing a non-root user to run the tests."""
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        if Path(path).name == name:
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
