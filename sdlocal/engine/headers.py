"""Key names and shapes of a checkpoint file, read without torch and without running anything in it.

Discovery must be instant and safe on a folder of multi-gigabyte files it has never seen, so it reads only
what describes the tensors:

- ``.safetensors``: an 8-byte little-endian header length, then that many bytes of JSON
  (``{name: {"dtype", "shape", "data_offsets"}}``). The file must be at least as long as the header's largest
  data offset, or it is truncated.
- ``.ckpt`` (torch zip): ``<root>/data.pkl`` is a pickle that names tensors through
  ``torch._utils._rebuild_tensor_v2`` and storages through persistent ids. It is read with an unpickler that
  only knows a handful of harmless names and builds inert stand-ins for them (shape records, never tensors);
  any other global (a class, a function such as ``os.system``) stops the read before it is called.
- legacy ``.ckpt`` (torch before 1.6: several pickles in a row) is read the same way.

Every problem is a ``HeaderError`` whose message says what is wrong with the file in words a user can act on.
"""

from __future__ import annotations

import collections
import json
import pickle
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit; real SDXL headers are about 200 KB
MAX_PICKLE_BYTES = 64_000_000  # a real SD .ckpt's data.pkl is a few hundred KB
TRUNCATED = "the file is truncated (an interrupted download?): download it again"
DAMAGED_ZIP = "the file is truncated or damaged (an interrupted download?): download it again"

Shapes = dict[str, list[int]]  # tensor name -> shape


class HeaderError(Exception):
    """The file cannot be read as a checkpoint; the message is the reason shown to the user."""


class CodeRefused(HeaderError):
    """A .ckpt pickle names something other than tensors and plain containers (it could run code)."""


# ------------------------------------------------------------------------------------------ safetensors
def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a ``.safetensors`` file, checked against the file's length."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(0)
        if size < 8:
            raise HeaderError("not a safetensors file (empty or too short)" if size else "the file is empty")
        (length,) = struct.unpack("<Q", fh.read(8))
        if length == 0 or length > MAX_HEADER_BYTES:
            raise HeaderError(f"not a safetensors file (its header claims {length:,} bytes)")
        if 8 + length > size:
            raise HeaderError(TRUNCATED)
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HeaderError("not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise HeaderError("not a safetensors file (its header is not a JSON object)")
    try:  # only the end of the data matters here; a malformed entry is a damaged header
        end = max((info["data_offsets"][1] for name, info in header.items() if name != "__metadata__"), default=0)
        bad = next((name for name, info in header.items() if name != "__metadata__"
                    and not isinstance(info["shape"], list)), None)
    except (KeyError, TypeError, IndexError):
        bad, end = "?", 0
    if bad is not None or not isinstance(end, int):
        raise HeaderError(f"damaged safetensors header (tensor {bad!r} has no valid shape or offsets)")
    if 8 + length + end > size:
        raise HeaderError(TRUNCATED)
    return header


def shapes_of_header(header: Mapping[str, Any]) -> Shapes:
    """``{name: shape}`` from a safetensors header (``__metadata__`` dropped)."""
    return {name: info["shape"] for name, info in header.items()
            if name != "__metadata__" and isinstance(info, dict) and "shape" in info}


# ------------------------------------------------------------------------------------------ ckpt (pickle)
_ITEM_SIZE = {"Half": 2, "BFloat16": 2, "Float": 4, "Double": 8, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
              "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16, "Untyped": 1}


@dataclass(frozen=True)
class StorageKind:
    """Stands in for ``torch.HalfStorage`` and friends: only the name, to know the element size."""

    name: str

    @property
    def item_size(self) -> int:
        return _ITEM_SIZE.get(self.name[: -len("Storage")], 1)


@dataclass(frozen=True)
class StorageRecord:
    """Stands in for a storage the pickle refers to by persistent id: which data file, how many elements."""

    kind: StorageKind
    key: str
    numel: int


@dataclass(frozen=True)
class TensorRecord:
    """Stands in for a tensor: its shape, and the storage holding its data."""

    shape: tuple[int, ...]
    storage: StorageRecord | None


class _Inert:
    """Stands in for harmless torch names (a dtype, a layout, a device) whose value discovery does not need."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args


def _rebuild_tensor(storage: Any, offset: Any = 0, size: Any = (), *rest: Any) -> TensorRecord:
    shape = tuple(int(d) for d in size) if isinstance(size, (tuple, list)) else ()
    return TensorRecord(shape, storage if isinstance(storage, StorageRecord) else None)


def _rebuild_parameter(data: Any, *rest: Any) -> Any:
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.serialization", "_get_layout"): _Inert,
    ("torch", "Size"): tuple,
    ("torch", "device"): _Inert,
}
_DTYPE_NAMES = {"float16", "float32", "float64", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
                "half", "float", "double", "long", "int", "short", "strided"}


class _ShapesUnpickler(pickle.Unpickler):
    """Knows only the names in ``_ALLOWED``, ``torch.*Storage`` and dtypes; anything else is refused unrun."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name.endswith("Storage") and name.isidentifier():
            return StorageKind(name)
        if module == "torch" and name in _DTYPE_NAMES:
            return _Inert(name)
        raise CodeRefused(f"contains code, refused: the pickle names {module}.{name}, and a .ckpt can run code "
                          "when opened; use a .safetensors version of this model")

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            kind = pid[1] if isinstance(pid[1], StorageKind) else StorageKind("UntypedStorage")
            numel = pid[4] if isinstance(pid[4], int) else 0
            return StorageRecord(kind, str(pid[2]), numel)
        raise HeaderError("damaged checkpoint (an unknown storage reference in its pickle)")


def _load(stream: IO[bytes]) -> Any:
    try:
        return _ShapesUnpickler(stream).load()
    except HeaderError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            struct.error, UnicodeDecodeError, RecursionError, MemoryError) as exc:
        raise HeaderError(f"damaged checkpoint (its pickle cannot be read: {type(exc).__name__})") from None


def _state_dict(obj: Any) -> dict[str, TensorRecord]:
    """The tensors of a checkpoint, unwrapping Lightning's ``state_dict`` (and ``model``) wrappers."""
    for _ in range(3):
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        elif isinstance(obj, dict) and isinstance(obj.get("model"), dict) and not any(
                isinstance(v, TensorRecord) for v in obj.values()):
            obj = obj["model"]
        else:
            break
    if not isinstance(obj, dict):
        raise HeaderError("not a model checkpoint (no state dict inside)")
    return {str(k): v for k, v in obj.items() if isinstance(v, TensorRecord)}


def read_ckpt_shapes(path: Path) -> Shapes:
    """``{name: shape}`` of a PyTorch ``.ckpt`` (zip or legacy), without torch and without running its pickle."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if not magic:
        raise HeaderError("the file is empty")
    if magic.startswith(b"PK"):
        return _zip_shapes(path)
    if magic[:1] == b"\x80":
        return _legacy_shapes(path)
    raise HeaderError("not a PyTorch checkpoint (neither a zip nor a pickle)")


def _zip_shapes(path: Path) -> Shapes:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise HeaderError(DAMAGED_ZIP) from None
    with archive:
        pickles = [info for info in archive.infolist() if info.filename.endswith("data.pkl")
                   and info.filename.count("/") == 1]
        if not pickles:
            raise HeaderError("not a PyTorch checkpoint (a zip without data.pkl)")
        info = pickles[0]
        if info.file_size > MAX_PICKLE_BYTES:
            raise HeaderError(f"not a model checkpoint (its pickle is {info.file_size:,} bytes)")
        root = info.filename.rsplit("/", 1)[0]
        try:
            with archive.open(info) as stream:
                tensors = _state_dict(_load(stream))
        except (zipfile.BadZipFile, OSError, EOFError):
            raise HeaderError(DAMAGED_ZIP) from None
        sizes = {i.filename: i.file_size for i in archive.infolist()}
    for name, record in tensors.items():
        storage = record.storage
        if storage is None:
            continue
        stored = sizes.get(f"{root}/data/{storage.key}")
        if stored is None or stored < storage.numel * storage.kind.item_size:
            raise HeaderError(f"damaged checkpoint (the data of {name} is missing or short): download it again")
    return {name: list(record.shape) for name, record in tensors.items()}


def _legacy_shapes(path: Path) -> Shapes:
    """torch < 1.6: magic number, protocol, system info, the object, storage keys, then each storage's bytes."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(0)
        magic = _load(fh)
        if magic != 0x1950A86A20F9469CFC6C:
            raise HeaderError("not a PyTorch checkpoint (a pickle, but not one torch wrote)")
        _load(fh)  # protocol version
        _load(fh)  # system info
        obj = _load(fh)
        keys = _load(fh)
        data_start = fh.tell()
    tensors = _state_dict(obj)
    storages = {r.storage.key: r.storage for r in tensors.values() if r.storage is not None}
    if not isinstance(keys, list):
        raise HeaderError("damaged checkpoint (no storage list)")
    needed = sum(8 + s.numel * s.kind.item_size for s in storages.values())
    if data_start + needed > size:
        raise HeaderError(TRUNCATED)
    return {name: list(record.shape) for name, record in tensors.items()}
