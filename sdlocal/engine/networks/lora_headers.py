"""What a LoRA/LyCORIS file is, from its tensor names and shapes alone: the format, the model family it was
trained for, its rank, which parts of the model it patches, and the kohya training notes.

A ``.safetensors`` file is described from its JSON header (no torch, no tensor data read: a folder of hundreds of
LoRAs is listed in the time it takes to read their first kilobytes). ``.pt``/``.ckpt``/``.bin`` files are pickles,
opened with ``torch.load(weights_only=True)`` so one that needs anything but tensors is refused before any of it
runs. Every problem is a ``NotALora`` whose message is the reason shown to the user, saying what to do.

The family comes from shapes before metadata: a file's ``ss_base_model_version`` is whatever the training script
was told, while the cross-attention width is what the file can actually be applied to.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdlocal.engine.headers import HeaderError, read_safetensors_header
from sdlocal.engine.networks.library import pickle_reason
from sdlocal.engine.networks.lora import (
    ALPHA_SUFFIX,
    DORA_SUFFIX,
    LOHA_SUFFIXES,
    LOKR_SUFFIXES,
    LORA_SUFFIXES,
    PEFT_SUFFIXES,
)

DOWNLOAD_AGAIN = "download it again"
REMOVE = "remove it from the LoRA folder"
TRIGGER_WORDS = 20  # the most frequent training tags listed as trigger words
# Cross-attention key/value input width (the text-encoder output the UNet attends to) and text-encoder width.
CONTEXT_FAMILIES = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
TEXT_FAMILIES = {768: "sd1", 1024: "sd2"}  # CLIP-L, OpenCLIP-H
SDXL_PREFIXES = ("lora_te1_", "lora_te2_", "text_encoder_2.")  # only SDXL has a second text encoder
TEXT_PREFIXES = ("lora_te", "text_encoder")
UNET_PREFIXES = ("lora_unet", "unet.", "down_blocks.", "mid_block.", "up_blocks.")
# Tensor suffixes after the module's base key, longest first so "lora_down.weight" is not read as ".weight".
MODULE_SUFFIXES = tuple(sorted(LORA_SUFFIXES + LOHA_SUFFIXES + LOKR_SUFFIXES + PEFT_SUFFIXES + (DORA_SUFFIX,),
                               key=len, reverse=True))
ALL_SUFFIXES = MODULE_SUFFIXES + (ALPHA_SUFFIX,)
# kohya's metadata names for the base model, and the modelspec architecture prefixes.
METADATA_FAMILIES = (("sdxl", "sdxl"), ("sd_v2", "sd2"), ("sd_v1", "sd1"))
ARCHITECTURE_FAMILIES = (("stable-diffusion-xl", "sdxl"), ("stable-diffusion-v2", "sd2"),
                         ("stable-diffusion-v1", "sd1"))


class NotALora(Exception):
    """The file cannot be used as a LoRA; the message is the reason shown to the user."""


@dataclass
class LoraInfo:
    """What a header says about a LoRA file (``LoraFile`` adds the name, path, alias and preview)."""

    format: str
    family: str | None
    rank: int | None
    modules: int
    text_encoder: bool
    unet: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    trigger_words: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------------ any file
def read_lora_info(path: Path) -> LoraInfo:
    """What a LoRA file holds; ``NotALora`` (its message the reason) or ``OSError`` otherwise."""
    if path.suffix.lower() == ".safetensors":
        try:
            header = read_safetensors_header(path)
        except HeaderError as exc:
            raise NotALora(_damaged(str(exc))) from None
        return describe_header(header)
    return describe_shapes(read_pickle_shapes(path), {})


def describe_header(header: Mapping[str, Any]) -> LoraInfo:
    """Describe a safetensors header (``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}``)."""
    shapes: dict[str, list[int]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise NotALora(_damaged(f"damaged safetensors header (tensor {name!r} has no valid shape)"))
        shapes[name] = shape
    raw = header.get("__metadata__")
    return describe_shapes(shapes, parse_metadata(raw if isinstance(raw, dict) else {}))


def describe_shapes(shapes: Mapping[str, Sequence[int]], metadata: dict[str, Any]) -> LoraInfo:
    """The format, family, rank and modules from tensor names and shapes; ``NotALora`` when it is no LoRA."""
    fmt = format_of(shapes)
    if not fmt:
        raise NotALora(not_a_lora(list(shapes)))
    bases = {base for base in (base_key(name) for name in shapes) if base is not None}
    return LoraInfo(format=fmt, family=family_of(shapes, metadata),
                    rank=rank_of(shapes), modules=len(bases),
                    text_encoder=any(base.startswith(TEXT_PREFIXES) for base in bases),
                    unet=any(base.startswith(UNET_PREFIXES) for base in bases),
                    metadata=metadata, trigger_words=trigger_words(metadata))


def _damaged(message: str) -> str:
    """A header problem as a reason: what is wrong, then what to do (the reader's words may already say it)."""
    if DOWNLOAD_AGAIN in message:
        return message
    if message == "the file is empty":
        return f"{message}: {DOWNLOAD_AGAIN}"
    return f"{message}: it is damaged or not a LoRA; {DOWNLOAD_AGAIN}"


# ------------------------------------------------------------------------------------------ names
def base_key(name: str) -> str | None:
    """The module a tensor belongs to (``lora_unet_..._to_k`` of ``lora_unet_..._to_k.lora_down.weight``), or
    None for a tensor of no LoRA module (``alpha`` alone does not make a module)."""
    for suffix in MODULE_SUFFIXES:
        if name.endswith("." + suffix):
            return name[: -len(suffix) - 1]
    return None


def _split(name: str) -> tuple[str, str]:
    for suffix in ALL_SUFFIXES:
        if name.endswith("." + suffix):
            return name[: -len(suffix) - 1], suffix
    return name, ""


def format_of(shapes: Mapping[str, Sequence[int]]) -> str:
    """One of ``LORA_FORMATS`` from the tensor names (and for LoCon the kernel size), "" when none applies.

    LyCORIS formats are checked first: their files may also carry plain ``lora_down`` modules.
    """
    suffixes = {_split(name)[1] for name in shapes}
    if "hada_w1_a" in suffixes:
        return "loha"
    if suffixes & set(LOKR_SUFFIXES):
        return "lokr"
    if DORA_SUFFIX in suffixes:
        return "dora"
    if suffixes & set(PEFT_SUFFIXES):
        return "peft"
    if "lora_down.weight" not in suffixes:
        return ""
    if "lora_mid.weight" in suffixes or any(_is_spatial(shape) for name, shape in shapes.items()
                                            if name.endswith(".lora_down.weight")):
        return "locon"
    return "lora"


def _is_spatial(shape: Sequence[int]) -> bool:
    """A 4-D ``lora_down`` whose kernel is not 1x1: a convolution patched with its kernel (LoCon)."""
    return len(shape) == 4 and tuple(shape[2:]) != (1, 1)


# ------------------------------------------------------------------------------------------ shapes
def input_width(suffix_shapes: Mapping[str, Sequence[int]]) -> int | None:
    """A module's input width from its factors: ``down``/``lora_A``/``hada_w1_b`` [r, in], LoKr in = i1 * i2."""
    for suffix in ("lora_down.weight", "lora_A.weight", "lora.down.weight", "hada_w1_b"):
        shape = suffix_shapes.get(suffix)
        if shape is not None and len(shape) >= 2:
            return int(shape[1])
    w1 = suffix_shapes.get("lokr_w1") or suffix_shapes.get("lokr_w1_b")
    w2 = suffix_shapes.get("lokr_w2") or suffix_shapes.get("lokr_w2_b")
    if w1 is not None and w2 is not None and len(w1) >= 2 and len(w2) >= 2:
        return int(w1[1]) * int(w2[1])
    return None


def _modules(shapes: Mapping[str, Sequence[int]]) -> dict[str, dict[str, Sequence[int]]]:
    modules: dict[str, dict[str, Sequence[int]]] = {}
    for name, shape in shapes.items():
        base, suffix = _split(name)
        if suffix:
            modules.setdefault(base, {})[suffix] = shape
    return modules


def family_of(shapes: Mapping[str, Sequence[int]], metadata: Mapping[str, Any]) -> str | None:
    """"sd1"/"sd2"/"sdxl": what the file fits, from its shapes; from its metadata only when the shapes say nothing.

    A second text encoder means SDXL. Otherwise the cross-attention key/value input width (768, 1024, 2048) and
    then the text encoder's q_proj input width (768 CLIP-L, 1024 OpenCLIP-H) decide. Widths that are no real
    model's (the tiny test models' 32) give None whatever the metadata claims: the shapes are what counts.
    """
    modules = _modules(shapes)
    if any(base.startswith(SDXL_PREFIXES) for base in modules):
        return "sdxl"
    context = [width for base, factors in modules.items() if re.search(r"attn2[._]to_[kv]$", base)
               and (width := input_width(factors)) is not None]
    text = [width for base, factors in modules.items() if re.search(r"self_attn[._]q_proj$", base)
            and (width := input_width(factors)) is not None]
    for width in context:
        if width in CONTEXT_FAMILIES:
            return CONTEXT_FAMILIES[width]
    for width in text:
        if width in TEXT_FAMILIES:
            return TEXT_FAMILIES[width]
    return None if context or text else family_from_metadata(metadata)


def rank_of(shapes: Mapping[str, Sequence[int]]) -> int | None:
    """The largest rank: ``lora_down``/``lora_A``/``hada_w1_b`` dim 0, factored LoKr's ``lokr_w1_b``/``lokr_w2_b``
    dim 0; None when nothing is factored (a LoKr of full Kronecker factors)."""
    ranks = [int(shape[0]) for name, shape in shapes.items() if len(shape) >= 1 and _split(name)[1] in
             ("lora_down.weight", "lora_A.weight", "lora.down.weight", "hada_w1_b", "lokr_w1_b", "lokr_w2_b")]
    return max(ranks) if ranks else None


# ------------------------------------------------------------------------------------------ metadata
def parse_metadata(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The header's ``__metadata__`` with values that hold JSON objects or arrays parsed (A1111's /loras gives
    ``ss_tag_frequency`` and friends parsed). Values stay JSON-safe: NaN/Infinity stay text, non-strings become
    text, so the API can always answer."""
    parsed: dict[str, Any] = {}
    for key, value in raw.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        parsed[str(key)] = _json_value(text)
    return parsed


def _refuse(constant: str) -> Any:
    raise ValueError(constant)


def _json_value(text: str) -> Any:
    if not text.lstrip().startswith(("{", "[")):
        return text
    try:
        return json.loads(text, parse_constant=_refuse)
    except (ValueError, RecursionError):
        return text


def family_from_metadata(metadata: Mapping[str, Any]) -> str | None:
    """The family the training script was told: kohya ``ss_base_model_version``, ``ss_v2``, or modelspec's
    ``modelspec.architecture``; None when none of them is there or known."""
    version = str(metadata.get("ss_base_model_version", "")).lower()
    for mark, family in METADATA_FAMILIES:
        if version.startswith(mark):
            return family
    architecture = str(metadata.get("modelspec.architecture", "")).lower()
    for mark, family in ARCHITECTURE_FAMILIES:
        if architecture.startswith(mark):
            return family
    if str(metadata.get("ss_v2", "")).lower() == "true":
        return "sd2"
    return None


def trigger_words(metadata: Mapping[str, Any]) -> tuple[str, ...]:
    """The most frequent training tags of ``ss_tag_frequency`` ({dataset: {tag: count}}), counts summed over the
    datasets, most frequent first (ties by name); what the LoRA was trained to respond to."""
    frequency = metadata.get("ss_tag_frequency")
    counts: dict[str, int] = {}
    if isinstance(frequency, dict):
        for tags in frequency.values():
            if not isinstance(tags, dict):
                continue
            for tag, count in tags.items():
                tag = str(tag).strip()
                if tag and isinstance(count, int) and not isinstance(count, bool) and count > 0:
                    counts[tag] = counts.get(tag, 0) + count
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(tag for tag, _ in ranked[:TRIGGER_WORDS])


# ------------------------------------------------------------------------------------------ not a LoRA
def not_a_lora(names: Sequence[str]) -> str:
    """Why a file with these tensors is no LoRA, and where it belongs when it is another kind of model file."""
    if any(name.startswith(("model.diffusion_model.", "conditioner.")) for name in names):
        return "is a model checkpoint, not a LoRA: put it in models/Stable-diffusion"
    if any(name.startswith(("encoder.down.0.", "decoder.up.", "first_stage_model.")) for name in names):
        return "is a VAE, not a LoRA: put it in models/VAE"
    if any(name in ("emb_params", "clip_l", "clip_g", "string_to_param") for name in names):
        return "is a textual-inversion embedding, not a LoRA: put it in embeddings"
    if any(name in ("model.0.weight", "conv_first.weight") or name.startswith("body.") for name in names):
        return f"is an upscaler model, not a LoRA: {REMOVE} (upscalers go in models/ESRGAN)"
    sample = ", ".join(repr(name) for name in list(names)[:3])
    return f"holds no LoRA tensors ({sample}): {REMOVE}" if sample else f"holds no tensors at all: {REMOVE}"


# ------------------------------------------------------------------------------------------ pickles
def read_pickle_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes of a ``.pt``/``.ckpt``/``.bin`` LoRA, loaded with ``weights_only=True`` (memory-mapped when
    the file allows it, so a large file is not copied into RAM); a dict under ``state_dict`` is unwrapped."""
    import torch

    if path.stat().st_size == 0:
        raise NotALora(f"the file is empty: {DOWNLOAD_AGAIN}")
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # a legacy (pre-zip) file cannot be mapped: read it whole
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise NotALora(pickle_reason(str(exc), "a .pt file", "the .safetensors version of this LoRA",
                                     "a LoRA")) from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, ValueError... on damaged files
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise NotALora(f"cannot be read as a PyTorch file ({type(exc).__name__}{': ' + first if first else ''}): "
                       f"it is damaged or not a LoRA; {DOWNLOAD_AGAIN}") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise NotALora(f"holds a {type(data).__name__}, not a dict of tensors: {REMOVE}")
    shapes = {str(key): list(value.shape) for key, value in data.items() if isinstance(value, torch.Tensor)}
    if not shapes:
        raise NotALora(not_a_lora([str(key) for key in data]))
    return shapes

