"""The embedding file formats, recognised from the tensors a file holds, never from its name.

- A1111 ``.pt``/``.bin``: a dict with ``string_to_param: {"*": tensor [n, width]}`` and optionally ``step``,
  ``sd_checkpoint`` (the training model's hash), ``sd_checkpoint_name`` and ``name``.
- diffusers' textual-inversion files (``.bin``/``.pt``/``.safetensors``): one tensor, keyed by its token
  (``{"<cat-toy>": tensor [width]}``).
- ``.safetensors`` with ``emb_params`` [n, width].
- SDXL: ``clip_l`` [n, 768] and ``clip_g`` [n, 1280], for the first and the second text encoder.

A 1-D tensor is one vector. ``.safetensors`` are described from their JSON header alone (no torch: a scan of a
safetensors-only folder never imports it); ``.pt``/``.bin`` are pickles, read with ``torch.load(weights_only=True)``
so a file that names anything but tensors and plain values is refused before any of it runs.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdlocal.engine.headers import HeaderError, read_safetensors_header
from sdlocal.engine.networks.library import pickle_reason

MAX_VECTORS = 75  # one prompt chunk: an embedding longer than that cannot be placed
MAX_PICKLE_BYTES = 64 * 1024 * 1024  # real embeddings are KB to a few MB; past this it is a model put here
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
SDXL_KEYS = ("clip_l", "clip_g")  # text encoder 0 and 1
FAMILIES = {(768,): "sd1", (1024,): "sd2", (768, 1280): "sdxl"}
FAMILY_WIDTHS = {family: widths for widths, family in FAMILIES.items()}
FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
REMOVE = "remove it from the embeddings folder"


class NotAnEmbedding(Exception):
    """The file cannot be used as an embedding; the message is the reason shown to the user."""


@dataclass
class FileInfo:
    """What a file holds: vector width per text encoder, vector count, A1111's training notes, and (for pickles,
    which are read whole anyway) the tensors themselves."""

    widths: tuple[int, ...]
    vectors: int
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    tensors: dict[int, Any] | None = field(default=None, repr=False)


def family_of(widths: Sequence[int]) -> str | None:
    """``sd1``/``sd2``/``sdxl`` for the real models' text-encoder widths; None for any other widths."""
    return FAMILIES.get(tuple(widths))


def describe_widths(widths: Sequence[int]) -> str:
    """Widths in words, for reasons: "SD 1.x (768-wide vectors)", "SDXL (768- and 1280-wide vectors)"."""
    widths = tuple(widths)
    sizes = " and ".join([f"{w}-" for w in widths[:-1]] + [f"{widths[-1]}-wide vectors"]) if widths else "no vectors"
    family = family_of(widths)
    return f"{FAMILY_LABELS[family]} ({sizes})" if family else f"a model with {sizes}"


# ------------------------------------------------------------------------------------------ layout
def layout(shapes: Mapping[str, Sequence[int]]) -> tuple[dict[int, str], tuple[int, ...], int]:
    """Which tensor feeds which text encoder, the widths and the vector count, from tensor names and shapes."""
    if all(key in shapes for key in SDXL_KEYS):
        keys = {index: key for index, key in enumerate(SDXL_KEYS)}
    elif "emb_params" in shapes:
        keys = {0: "emb_params"}
    elif len(shapes) == 1:
        keys = {0: next(iter(shapes))}
    else:
        raise NotAnEmbedding(not_an_embedding(list(shapes)))
    widths, counts = [], set()
    for key in keys.values():
        shape = list(shapes[key])
        if len(shape) not in (1, 2) or not all(isinstance(d, int) and d > 0 for d in shape):
            raise NotAnEmbedding(f"its tensor {key!r} has shape {shape}, not [vectors, width]: {REMOVE}")
        counts.add(1 if len(shape) == 1 else shape[0])
        widths.append(shape[-1])
    if len(counts) != 1:
        raise NotAnEmbedding(f"its clip_l and clip_g tensors have different vector counts ({sorted(counts)}): "
                             f"the file is damaged; download it again")
    vectors = counts.pop()
    if vectors > MAX_VECTORS:
        raise NotAnEmbedding(f"has {vectors} vectors; at most {MAX_VECTORS} fit in a prompt chunk: {REMOVE}")
    return keys, tuple(widths), vectors


def not_an_embedding(names: Sequence[str]) -> str:
    """Why a file with these tensors is no embedding, and where it belongs if it is another kind of file."""
    joined = " ".join(names[:200]).lower()
    if "lora" in joined or "lokr" in joined or "hada_" in joined:
        return "is a LoRA, not an embedding: move it to models/Lora"
    if any(mark in joined for mark in ("model.diffusion_model.", "conditioner.", "cond_stage_model.", "unet.")):
        return "is a model checkpoint, not an embedding: move it to models/Stable-diffusion"
    if "decoder." in joined and "encoder." in joined:
        return "is a VAE, not an embedding: move it to models/VAE"
    sample = ", ".join(repr(n) for n in names[:3])
    return (f"is not a textual-inversion embedding (no string_to_param, emb_params, clip_l/clip_g or single tensor; "
            f"it holds {len(names)} entries{': ' + sample if sample else ''}): {REMOVE}")


# ------------------------------------------------------------------------------------------ safetensors
def read_safetensors_info(path: Path) -> FileInfo:
    """Widths and vector count from the JSON header only (the tensors are read when first used)."""
    try:
        header = read_safetensors_header(path)
    except HeaderError as exc:
        raise NotAnEmbedding(str(exc)) from None
    entries = {name: info for name, info in header.items() if name != "__metadata__" and isinstance(info, dict)}
    keys, widths, vectors = layout({name: info.get("shape", []) for name, info in entries.items()})
    for key in keys.values():
        if entries[key].get("dtype") not in FLOAT_DTYPES:
            raise NotAnEmbedding(f"its tensor {key!r} holds {entries[key].get('dtype')}, not floats: {REMOVE}")
    return FileInfo(widths, vectors)


# ------------------------------------------------------------------------------------------ pickles
def read_pickle_info(path: Path) -> FileInfo:
    """Everything from a ``.pt``/``.bin`` (it is small), loaded with ``weights_only=True``."""
    import torch

    size = path.stat().st_size
    if size == 0:
        raise NotAnEmbedding("the file is empty: download it again")
    if size > MAX_PICKLE_BYTES:
        raise NotAnEmbedding(f"is {size / 1e6:.0f} MB, far too large for an embedding (they are KB to a few MB); "
                             f"a checkpoint or LoRA belongs in its own models folder: {REMOVE}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise NotAnEmbedding(pickle_reason(str(exc), "a .pt/.bin file", "a .safetensors version of this embedding",
                                           "an embedding")) from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, ValueError... on damaged files
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise NotAnEmbedding(f"cannot be read as a PyTorch file ({type(exc).__name__}{': ' + first if first else ''})"
                             f": it is damaged or not an embedding; download it again") from None
    return _info_from_object(data, torch.Tensor)



def _info_from_object(data: Any, tensor_type: type) -> FileInfo:
    if not isinstance(data, dict):
        raise NotAnEmbedding(f"holds a {type(data).__name__}, not a dict of tensors: {REMOVE}")
    notes: dict[str, Any] = {}
    params = data.get("string_to_param")
    if isinstance(params, dict):  # A1111's own format
        tensors = {str(k): v for k, v in params.items() if isinstance(v, tensor_type)}
        tensors = {"*": tensors["*"]} if "*" in tensors else tensors
        if len(tensors) != 1:
            raise NotAnEmbedding(f"its string_to_param holds {len(tensors)} tensors, not one: {REMOVE}")
        step = data.get("step")
        notes["step"] = step if isinstance(step, int) and not isinstance(step, bool) else None
        for key in ("sd_checkpoint", "sd_checkpoint_name"):
            notes[key] = data[key] if isinstance(data.get(key), str) else None
    else:
        tensors = {str(k): v for k, v in data.items() if isinstance(v, tensor_type)}
        if not tensors:
            raise NotAnEmbedding(not_an_embedding([str(k) for k in data]))
    keys, widths, vectors = layout({k: list(v.shape) for k, v in tensors.items()})
    for key in keys.values():
        if not tensors[key].is_floating_point():
            raise NotAnEmbedding(f"its tensor {key!r} holds {tensors[key].dtype}, not floats: {REMOVE}")
    loaded = {index: _as_vectors(tensors[key]) for index, key in keys.items()}
    return FileInfo(widths, vectors, tensors=loaded, **notes)


def _as_vectors(tensor: Any) -> Any:
    """float32 on the CPU, [vectors, width]; detached (A1111 saves an ``nn.Parameter``)."""
    import torch

    tensor = tensor.detach().to("cpu", dtype=torch.float32)
    return tensor.reshape(1, -1) if tensor.ndim == 1 else tensor.contiguous()


# ------------------------------------------------------------------------------------------ any file
def read_info(path: Path) -> FileInfo:
    """What an embedding file holds; ``NotAnEmbedding`` (its message the reason) or ``OSError`` otherwise."""
    if path.suffix.lower() == ".safetensors":
        return read_safetensors_info(path)
    return read_pickle_info(path)


def load_tensors(path: Path) -> tuple[dict[int, Any], tuple[int, ...]]:
    """The tensors, text-encoder index -> float32 CPU [vectors, width], and their widths (to check them against
    the scan's: the file may have changed since)."""
    if path.suffix.lower() != ".safetensors":
        info = read_pickle_info(path)
        return info.tensors or {}, info.widths
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, ValueError) as exc:
        raise NotAnEmbedding(f"cannot be read ({exc}): download it again") from None
    keys, widths, _ = layout({k: list(v.shape) for k, v in tensors.items()})
    return {index: _as_vectors(tensors[key]) for index, key in keys.items()}, widths
