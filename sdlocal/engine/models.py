"""Model discovery: which files and folders are models, what family each is, and their A1111 short hash.

(Being written: discovery, detection and the hash cache follow below this shared type.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ModelFormat = Literal["diffusers", "safetensors", "ckpt"]


@dataclass
class ModelEntry:
    """One model found on disk, supported or not.

    ``name`` is the path relative to the models folder it was found in, without extension (A1111's
    model name, e.g. ``sd15/v1-5-pruned-emaonly``); ``title`` is A1111's ``name [hash]`` once the hash is
    known. Unsupported entries keep ``reason`` so the UI can grey them out with an explanation.
    """

    name: str
    path: Path
    format: ModelFormat
    family: str | None  # "sd1", "sd2", "sdxl", or None when unsupported
    inpainting: bool
    supported: bool
    reason: str  # why unsupported; "" when supported
    size: int
    mtime: float
    short_hash: str | None = None  # first 10 hex of sha256, None until computed
    prediction_type: str | None = None  # "epsilon" / "v_prediction" where it matters (SD 2.x)
    config_dir: Path | None = None  # diffusers config folder used to load a single file

    @property
    def title(self) -> str:
        return f"{self.name} [{self.short_hash}]" if self.short_hash else self.name
