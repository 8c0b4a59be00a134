"""Textual-inversion embeddings: found in the embeddings folders, recognised from their tensors, used by name.

The trigger is the file name without its extension (as in A1111), whatever folder the file is in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Embedding:
    """One embedding file, as discovery found it.

    ``widths`` is the vector width per text encoder (SD 1.x (768,), SD 2.x (1024,), SDXL (768, 1280)): an
    embedding fits a model whose text encoders have exactly those widths. ``family`` names the family those
    widths are ("sd1", "sd2", "sdxl"), None for other widths or when the file could not be read (then
    ``reason`` says why). ``vectors`` is how many token slots it takes. ``shape`` is A1111's: the total
    width (768 + 1280 = 2048 for SDXL).
    """

    name: str
    path: Path
    widths: tuple[int, ...] = ()
    family: str | None = None
    vectors: int = 0
    shape: int = 0
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    reason: str = ""  # why it is skipped or unsupported; "" when usable
    _tensors: dict[int, Any] | None = field(default=None, repr=False, compare=False)
