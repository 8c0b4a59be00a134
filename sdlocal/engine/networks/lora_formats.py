"""LoRA files read into tensors, and their tensors turned into ``Patch`` objects: one ``Delta`` class per format.

Each module's tensors (``<base key>.<suffix>``) are grouped by base key; the suffixes say the format (kohya
LoRA/LoCon, LyCORIS LoHa/LoKr, DoRA's ``dora_scale``, diffusers/PEFT ``lora_A``/``lora_B``), ``lora_keys`` says
which module the base key means. A ``Delta`` keeps the factors as the file gave them (fp16 stays fp16, so a
loaded LoRA costs its file size) and computes the change only when the patcher asks, in float32, on the weight's
device. Modules of formats sdlocal does not know (LyCORIS OFT, full ``diff``, norms, IA3) are reported, not
guessed at: applying part of a module's change would silently give another picture than its author's.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdlocal.engine.networks.lora import (
    ALPHA_SUFFIX,
    DORA_SUFFIX,
    LOHA_SUFFIXES,
    LOKR_SUFFIXES,
    LORA_SUFFIXES,
    PEFT_SUFFIXES,
    TEXT_COMPONENTS,
    Patch,
)
from sdlocal.engine.networks.lora_deltas import (
    DoraDelta,
    LohaDelta,
    LokrDelta,
    LoraDelta,
    ModuleDelta,
    shape_text,
)
from sdlocal.engine.networks.lora_keys import components_of, module_targets
from sdlocal.engine.request import EngineError

KNOWN_SUFFIXES: tuple[str, ...] = tuple(sorted(
    (*LORA_SUFFIXES, *LOHA_SUFFIXES, *LOKR_SUFFIXES, *PEFT_SUFFIXES, ALPHA_SUFFIX, DORA_SUFFIX),
    key=len, reverse=True))  # longest first: "lokr_w1_a" before "lokr_w1"
PICKLE_SUFFIXES = (".pt", ".ckpt", ".bin")
_DOWN = {"lora_down.weight", "lora_A.weight", "lora.down.weight"}
_UP = {"lora_up.weight", "lora_B.weight", "lora.up.weight"}
_NAMED_UNSUPPORTED = {"oft_blocks": "LyCORIS OFT", "oft_diag": "LyCORIS OFT", "diff": "a full weight difference",
                      "diff_b": "a full weight difference", "w_norm": "a norm-layer change",
                      "b_norm": "a norm-layer change", "bias_indices": "a LyCORIS sparse bias",
                      "weight": "IA3 or a full weight", "on_input": "IA3"}


@dataclass
class PatchSet:
    """What ``build_patches`` made of a file for one pipeline.

    ``unmatched`` holds base keys that name no module of this pipeline (another family's LoRA, or a module this
    model lacks), and, as ``"key: reason"``, modules whose tensors are no format sdlocal applies; ``mismatched``
    holds ``"key: LoRA gives [..], module is [..]"`` for modules whose shapes do not fit.
    """

    patches: list[Patch] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ reading
def read_lora_tensors(path: Path | str) -> dict[str, Any]:
    """Every tensor of a LoRA file, on the CPU, in the file's dtypes.

    ``.safetensors`` is read as is; ``.pt``/``.ckpt``/``.bin`` through ``torch.load(weights_only=True)``, which
    refuses any Python object but tensors and plain containers (a pickle can run code when opened); a state dict
    nested under ``"state_dict"`` is unwrapped. Every failure is an ``EngineError`` naming the file and the fix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix in PICKLE_SUFFIXES:
        return _read_pickle(path)
    raise EngineError(f"{path.name}: is not a LoRA file sdlocal reads (a {suffix or 'suffix-less'} file).",
                      "LoRAs are .safetensors (or .pt/.ckpt/.bin) files.")


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except FileNotFoundError:
        raise EngineError(f"{path.name}: the file is gone ({path}).", "Refresh the LoRA list.") from None
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ValueError on damaged files
        raise EngineError(f"{path.name}: cannot be read as a LoRA ({str(exc)[:200]}).",
                          "The file is damaged or incomplete (an interrupted download?): download it again.") from None


def _read_pickle(path: Path) -> dict[str, Any]:
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise EngineError(f"{path.name}: the file is gone ({path}).", "Refresh the LoRA list.") from None
    except pickle.UnpicklingError as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise EngineError(f"{path.name}: contains Python objects other than tensors and was not opened, as a "
                          f"{path.suffix} file can run code when opened ({first}).",
                          "Use the .safetensors version of this LoRA.") from None
    except Exception as exc:  # noqa: BLE001 - RuntimeError, EOFError, ValueError on damaged files
        raise EngineError(f"{path.name}: cannot be read as a LoRA ({type(exc).__name__}: {str(exc)[:200]}).",
                          "The file is damaged or incomplete: download it again.") from None
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping):
        raise EngineError(f"{path.name}: holds a {type(data).__name__}, not a dict of tensors.",
                          "It is not a LoRA: remove it from the LoRA folder.")
    return {str(key): value for key, value in data.items() if isinstance(value, torch.Tensor)}


# ----------------------------------------------------------------------------------------------- grouping
def split_key(key: str) -> tuple[str, str]:
    """``"lora_unet_x.lora_down.weight"`` -> ``("lora_unet_x", "lora_down.weight")``.

    An unknown suffix is what follows the first ``.`` of a kohya-style key (those have no dots in the base),
    else the last dotted part, so a module of an unknown format is still one group.
    """
    for suffix in KNOWN_SUFFIXES:
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], suffix
    if key.startswith(("lora_unet_", "lora_te")) and "." in key:
        base, _, rest = key.partition(".")
        return base, rest
    base, _, last = key.rpartition(".")
    return (base, last) if base else (key, "")


def group_modules(tensors: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Base key -> {suffix: tensor}, in file order."""
    groups: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        base, suffix = split_key(key)
        groups.setdefault(base, {})[suffix] = tensor
    return groups


# ----------------------------------------------------------------------------------------------- deltas
def _alpha(parts: Mapping[str, Any]) -> float | None:
    value = parts.get(ALPHA_SUFFIX)
    if value is None:
        return None
    if value.numel() != 1:
        raise ValueError(f"its alpha has {value.numel()} values, not one")
    return float(value.reshape(()).item())


def _lora(parts: Mapping[str, Any], alpha: float | None) -> LoraDelta:
    down = next((parts[s] for s in _DOWN if s in parts), None)
    up = next((parts[s] for s in _UP if s in parts), None)
    if down is None or up is None:
        raise ValueError("it has only one of the LoRA factors (down and up)")
    return LoraDelta(up=up, down=down, mid=parts.get("lora_mid.weight"), alpha=alpha)


def _loha(parts: Mapping[str, Any], alpha: float | None) -> LohaDelta:
    missing = [s for s in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b") if s not in parts]
    if missing:
        raise ValueError(f"its LoHa factors lack {', '.join(missing)}")
    if ("hada_t1" in parts) != ("hada_t2" in parts):
        raise ValueError("it has only one of the LoHa tucker cores (hada_t1 and hada_t2)")
    return LohaDelta(w1_a=parts["hada_w1_a"], w1_b=parts["hada_w1_b"], w2_a=parts["hada_w2_a"],
                     w2_b=parts["hada_w2_b"], t1=parts.get("hada_t1"), t2=parts.get("hada_t2"), alpha=alpha)


def _lokr(parts: Mapping[str, Any], alpha: float | None) -> LokrDelta:
    for n in ("1", "2"):
        if f"lokr_w{n}" not in parts and not (f"lokr_w{n}_a" in parts and f"lokr_w{n}_b" in parts):
            raise ValueError(f"its LoKr factors lack lokr_w{n} (or lokr_w{n}_a and lokr_w{n}_b)")
    if "lokr_t2" in parts and "lokr_w2" in parts:
        raise ValueError("it has lokr_t2 with an unfactored lokr_w2")
    return LokrDelta(w1=parts.get("lokr_w1"), w1_a=parts.get("lokr_w1_a"), w1_b=parts.get("lokr_w1_b"),
                     w2=parts.get("lokr_w2"), w2_a=parts.get("lokr_w2_a"), w2_b=parts.get("lokr_w2_b"),
                     t2=parts.get("lokr_t2"), alpha=alpha)


_FAMILIES = (("LoRA", {*LORA_SUFFIXES, *PEFT_SUFFIXES}, _lora), ("LoHa", set(LOHA_SUFFIXES), _loha),
             ("LoKr", set(LOKR_SUFFIXES), _lokr))


def delta_for(parts: Mapping[str, Any]) -> ModuleDelta:
    """The ``Delta`` of one module's tensors; ``ValueError`` with the reason when they are no format sdlocal
    applies (unknown tensors, a factor missing, two formats mixed)."""
    unknown = [s for s in parts if s not in KNOWN_SUFFIXES]
    if unknown:
        kinds = sorted({_NAMED_UNSUPPORTED[s] for s in unknown if s in _NAMED_UNSUPPORTED})
        what = f" ({', '.join(kinds)})" if kinds else ""
        raise ValueError(f"holds tensors sdlocal does not apply: {', '.join(sorted(unknown))}{what}")
    found = [(label, build) for label, suffixes, build in _FAMILIES if suffixes & set(parts)]
    if not found:
        raise ValueError("holds no factors (only " + ", ".join(sorted(parts)) + ")")
    if len(found) > 1:
        raise ValueError(f"mixes {' and '.join(label for label, _ in found)} factors")
    delta: ModuleDelta = found[0][1](parts, _alpha(parts))
    if DORA_SUFFIX in parts:
        delta = DoraDelta(delta, parts[DORA_SUFFIX])
    return delta


# ----------------------------------------------------------------------------------------------- patches
def _fits(delta_shape: tuple[int, ...], weight_shape: tuple[int, ...]) -> bool:
    """Same output size and element count: a linear LoRA fits a 1x1 convolution, a LoHa's flattened kernel a 3x3."""
    return (bool(delta_shape) and bool(weight_shape) and delta_shape[0] == weight_shape[0]
            and math.prod(delta_shape) == math.prod(weight_shape))


def build_patches(tensors: Mapping[str, Any], pipe: Any, te_multiplier: float, unet_multiplier: float,
                  network: str = "") -> PatchSet:
    """The patches a LoRA's tensors make for ``pipe`` (a pipeline or ``{component: model}``), with the
    text-encoder and UNet multipliers of ``<lora:name:te:unet>``. A component whose multiplier is 0 gets no
    patches at all, so weight 0 is exactly no LoRA. Nothing is computed here: only shapes are checked."""
    targets = module_targets(pipe)
    models = components_of(pipe)
    result = PatchSet()
    for base, parts in group_modules(tensors).items():
        target = targets.get(base)
        if target is None:
            result.unmatched.append(base)
            continue
        component, module_name = target
        multiplier = float(te_multiplier if component in TEXT_COMPONENTS else unet_multiplier)
        if multiplier == 0.0:
            continue
        try:
            delta = delta_for(parts)
            delta_shape = delta.shape()
        except ValueError as exc:
            result.unmatched.append(f"{base}: {exc}")
            continue
        weight_shape = tuple(models[component].get_submodule(module_name).weight.shape)
        if not _fits(delta_shape, weight_shape):
            result.mismatched.append(f"{base}: LoRA gives {shape_text(delta_shape)}, module is "
                                     f"{shape_text(weight_shape)}")
            continue
        result.patches.append(Patch(component, module_name, delta, multiplier, network))
    return result
