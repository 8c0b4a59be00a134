"""LoRA and LyCORIS: the data that discovery, the prompt, the file readers and the weight patcher share.

A LoRA file is a set of per-module low-rank (or Hadamard, or Kronecker) factors. sdlocal turns each module's
factors into a ``Patch`` (which module, the ``Delta`` that computes its change, the multiplier) and merges the sum
of the patches into the weights before a run, so a step costs what it costs without LoRAs. Every format is one
``Delta`` class; the merge and its exact restore are one mechanism (``patching``), not code per format.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

# The formats told apart from tensor names (and, for LoCon, from the kernel size of a ``lora_down``).
LORA_FORMATS: tuple[str, ...] = ("lora", "locon", "loha", "lokr", "dora", "peft")
FORMAT_LABELS: dict[str, str] = {"lora": "LoRA", "locon": "LoCon", "loha": "LoHa", "lokr": "LoKr", "dora": "DoRA",
                                 "peft": "diffusers/PEFT LoRA"}
FAMILY_LABELS: dict[str, str] = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}

# Tensor names are "<module key>.<suffix>" (kohya and LyCORIS layout) or "<module path>.<suffix>" (diffusers/PEFT).
LORA_SUFFIXES: tuple[str, ...] = ("lora_up.weight", "lora_down.weight", "lora_mid.weight")
LOHA_SUFFIXES: tuple[str, ...] = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
LOKR_SUFFIXES: tuple[str, ...] = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
PEFT_SUFFIXES: tuple[str, ...] = ("lora_A.weight", "lora_B.weight", "lora.down.weight", "lora.up.weight")
ALPHA_SUFFIX = "alpha"
DORA_SUFFIX = "dora_scale"

# The pipeline components a LoRA patches, and which multiplier of ``<lora:name:te:unet>`` each one takes.
COMPONENTS: tuple[str, ...] = ("text_encoder", "text_encoder_2", "unet")
TEXT_COMPONENTS: tuple[str, ...] = ("text_encoder", "text_encoder_2")


@dataclass
class LoraFile:
    """One file in a LoRA folder, as discovery read it from the safetensors header alone.

    ``name`` is the path below its folder without the suffix, with ``/`` between folders (as checkpoint names);
    ``alias`` is the kohya ``ss_output_name`` when there is one, else the file's stem. ``family`` is "sd1", "sd2",
    "sdxl", or None when the shapes name no real family (the tiny test models) or the file could not be read.
    ``rank`` is the largest rank among its modules. ``reason`` says why a file cannot be used ("" when it can).
    """

    name: str
    path: Path
    alias: str
    format: str = ""  # one of LORA_FORMATS; "" when unsupported
    family: str | None = None
    rank: int | None = None
    modules: int = 0  # how many modules (layers) it patches
    text_encoder: bool = False  # it patches a text encoder (a te multiplier changes something)
    unet: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)  # the header's __metadata__, JSON values parsed
    trigger_words: tuple[str, ...] = ()  # the most frequent training tags (ss_tag_frequency), most frequent first
    preview: Path | None = None  # name.preview.png / name.png (.jpg, .jpeg, .webp) beside the file
    reason: str = ""

    @property
    def usable(self) -> bool:
        return not self.reason and bool(self.format)

    @cached_property
    def shorthash(self) -> str:
        """The kohya / A1111 "Lora hashes" value: sha256 of the bytes after the 8-byte length and the JSON header,
        first 12 hex digits (a ``.pt`` file, which has no such header, is hashed whole). Computed once."""
        return kohya_hash(self.path)[:12]


def kohya_hash(path: Path) -> str:
    """sha256 of a safetensors file's tensor data (everything after its header), as kohya's and A1111's
    "addnet" hash; of the whole file for other formats. Reads the file in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        start = 0
        if Path(path).suffix.lower() == ".safetensors":
            head = fh.read(8)
            if len(head) == 8:
                start = 8 + struct.unpack("<Q", head)[0]
        fh.seek(start)
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class Delta(Protocol):
    """One module's change at multiplier 1, in one format's factors.

    ``updown(weight)`` gets the module's original weight (float32, on the device the merge runs on) and returns
    the change to add to it: float32, the same number of elements as ``weight`` (the patcher reshapes, so a
    linear LoRA fits a 1x1 convolution), alpha/rank scaling included. DoRA needs the weight itself; the others
    ignore it. ``nbytes`` is the factors' size, for the memory figures.
    """

    nbytes: int

    def updown(self, weight: Any) -> Any: ...


@dataclass(frozen=True)
class Patch:
    """Add ``multiplier * delta.updown(W)`` to the weight of ``component``'s module ``module`` (diffusers names:
    ``unet`` ``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``, ``text_encoder``
    ``encoder.layers.0.self_attn.q_proj``). ``network`` names the LoRA it comes from, for messages."""

    component: str
    module: str
    delta: Delta
    multiplier: float
    network: str = ""
