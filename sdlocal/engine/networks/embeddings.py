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

    ``family`` is the model family its vector width fits ("sd1" 768, "sd2" 1024, "sdxl" 768 + 1280), or None
    when the file could not be read (then ``reason`` says why). ``vectors`` is how many token slots it takes.
    ``shape`` is A1111's: the vector width (768 + 1280 = 2048 for SDXL).
    """

    name: str
    path: Path
    family: str | None = None
    vectors: int = 0
    shape: int = 0
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    reason: str = ""  # why it is skipped or unsupported; "" when usable
    _tensors: dict[int, Any] | None = field(default=None, repr=False, compare=False)
