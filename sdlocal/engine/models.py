"""Model discovery: which files and folders are models, what family each is, and their A1111 short hash.

``ModelCatalog`` owns the model folders: sdlocal's own ``<data_dir>/models/Stable-diffusion`` (created with its
A1111-named siblings), each configured folder (an A1111/Forge or ComfyUI/Fooocus install root, its ``models``
folder, or a plain folder of checkpoints) and the checkpoint folders of ComfyUI ``extra_model_paths.yaml`` files.
A scan reads headers only (``families``/``headers``): no weights, no torch, no hashing, so a hundred models list
at once. Hashes come from the cache; missing ones are computed by one background thread (``hashing``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.families import (
    SIDECAR_SUFFIX,
    Detection,
    detect_file,
    detect_folder,
    prediction_from_sidecars,
    sidecar_config_dir,
)
from sdlocal.engine.hashing import BackgroundHasher, HashCache

log = logging.getLogger(__name__)

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
    sha256: str | None = None  # the full sha256 behind short_hash (the API reports it), None until computed

    @property
    def title(self) -> str:
        return f"{self.name} [{self.short_hash}]" if self.short_hash else self.name


CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")  # .pt/.bin/.pth in a checkpoints folder are other things
OWN_CHECKPOINTS = "Stable-diffusion"
OWN_SIBLINGS = ("Lora", "VAE")  # A1111's names, so a user's habits (and guides) work in sdlocal's own folder
CHECKPOINT_SUBDIRS = ("Stable-diffusion", "checkpoints")  # A1111/Forge, ComfyUI/Fooocus
MAX_DEPTH = 24
_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages"}
_FORMAT_ORDER = {"safetensors": 0, "diffusers": 1, "ckpt": 2}


def checkpoint_dirs(folder: Path) -> list[Path]:
    """The checkpoint folders a configured folder stands for.

    An install root with ``models/Stable-diffusion`` (A1111/Forge) or ``models/checkpoints`` (ComfyUI/Fooocus)
    stands for those; a ``models`` folder holding them, likewise; any other folder is itself a checkpoints folder.
    """
    folder = Path(os.path.expandvars(str(folder))).expanduser()
    for base in (folder / "models", folder):
        found = [base / sub for sub in CHECKPOINT_SUBDIRS if (base / sub).is_dir()]
        if found:
            return found
    return [folder]


def extra_model_paths_dirs(yaml_file: Path, kind: str = "checkpoints") -> list[Path]:
    """The ``kind`` folders (``checkpoints``, ``embeddings``...) of a ComfyUI ``extra_model_paths.yaml``; a bad file
    is a warning and no folders.

    Each section may have ``base_path`` (relative paths are relative to the YAML file's folder) and a ``kind``
    value holding one path per line (or a list), each relative to ``base_path``.
    """
    import yaml

    yaml_file = Path(yaml_file).expanduser()
    try:
        data = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        log.warning("%s: cannot be read as an extra_model_paths.yaml (%s); its folders are skipped", yaml_file,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return []
    if not isinstance(data, dict):
        if data is not None:
            log.warning("%s: expected sections of folder names, found a %s; its folders are skipped", yaml_file,
                        type(data).__name__)
        return []
    found: list[Path] = []
    for section, values in data.items():
        if not isinstance(values, dict) or not values.get(kind):
            continue
        base = Path(os.path.expandvars(str(values.get("base_path") or "."))).expanduser()
        if not base.is_absolute():
            base = yaml_file.parent / base
        items = values[kind]
        lines = items if isinstance(items, list) else str(items).splitlines()
        for line in lines:
            text = str(line).strip()
            if text:
                found.append(base / Path(os.path.expandvars(text)).expanduser())
        log.debug("%s: section %s gives %d %s folder(s)", yaml_file, section, len(lines), kind)
    return found


@dataclass(frozen=True)
class _Found:
    root_index: int
    root: Path
    path: Path
    format: ModelFormat

    @property
    def name(self) -> str:
        relative = self.path.relative_to(self.root) if self.path != self.root else Path(self.path.name)
        if self.format != "diffusers":
            relative = relative.with_suffix("")
        return relative.as_posix()


class ModelCatalog:
    """Finds models in the configured folders, recognises them from their headers, and knows their hashes.

    ``background_hashing`` starts one daemon thread after each scan that hashes the supported models the cache
    does not know yet, filling ``short_hash``/``sha256`` on the returned entries as it goes.
    """

    def __init__(self, config: EngineConfig, background_hashing: bool = True) -> None:
        self.config = config
        self.background_hashing = background_hashing
        self.hashes = HashCache(config.data_dir)
        self.hasher = BackgroundHasher(self.hashes)
        self._warned: set[str] = set()
        self._detections: dict[str, tuple[int, int, Detection]] = {}  # path -> (size, mtime_ns, what it is)
        self._detections_file = config.data_dir / "cache" / "detections.json"
        self._detections_loaded = False
        self._detections_dirty = False

    # ------------------------------------------------------------------------------------------ detection cache
    def _load_detections(self) -> None:
        """What earlier starts read from headers, so a restart lists a hundred models from one small JSON file."""
        if self._detections_loaded:
            return
        self._detections_loaded = True
        try:
            stored = json.loads(self._detections_file.read_text(encoding="utf-8"))
            for path, (size, mtime_ns, fields) in stored.items():
                self._detections.setdefault(path, (int(size), int(mtime_ns), Detection(**fields)))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, AttributeError) as exc:  # damaged: read the headers again
            log.warning("ignoring the damaged detection cache %s (%s)", self._detections_file, exc)
            self._detections.clear()

    def _save_detections(self) -> None:
        if not self._detections_dirty:
            return
        data = {path: [size, mtime_ns, asdict(detection)] for path, (size, mtime_ns, detection)
                in self._detections.items() if Path(path).exists()}
        try:
            self._detections_file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._detections_file.parent, prefix=".detections-", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, self._detections_file)
            self._detections_dirty = False
        except OSError as exc:  # a read-only data dir: headers are read again next start
            self._warn_once(str(self._detections_file), "cannot write %s (%s)", self._detections_file, exc)

    # ------------------------------------------------------------------------------------------ folders
    @property
    def own_checkpoints_dir(self) -> Path:
        return self.config.own_models_dir / OWN_CHECKPOINTS

    def _ensure_own_folders(self) -> None:
        models = self.config.own_models_dir
        for folder in (models / OWN_CHECKPOINTS, *(models / s for s in OWN_SIBLINGS),
                       self.config.data_dir / "embeddings"):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self._warn_once(str(folder), "cannot create %s (%s)", folder, exc)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def roots(self) -> list[Path]:
        """The existing folders a scan looks in, sdlocal's own first, each once (for "put a model here")."""
        self._ensure_own_folders()
        candidates = [self.own_checkpoints_dir]
        for folder in self.config.models_dirs:
            candidates += checkpoint_dirs(folder)
        for yaml_file in self.config.extra_model_paths:
            candidates += extra_model_paths_dirs(yaml_file)
        roots: list[Path] = []
        seen: set[str] = set()
        for folder in candidates:
            if not folder.is_dir():
                self._warn_once(str(folder), "the models folder %s does not exist; skipping it", folder)
                continue
            key = os.path.realpath(folder)
            if key not in seen:
                seen.add(key)
                roots.append(folder)
        return roots

    # ------------------------------------------------------------------------------------------ scan
    def scan(self) -> list[ModelEntry]:
        """Every model in every root, supported or not, sorted by name; reads headers only, never hashes.

        Headers are read once per file version (path, size, mtime), also across restarts (the detection cache).
        """
        self._load_detections()
        found: list[_Found] = []
        seen: set[str] = set()
        for index, root in enumerate(self.roots()):
            for path, fmt in sorted(_walk(root), key=lambda item: (str(item[0]), item[1])):
                key = os.path.realpath(path)
                if key not in seen:  # the same file through two roots or a symlink: listed once
                    seen.add(key)
                    found.append(_Found(index, root, path, fmt))
        entries = [self._entry(item, name) for item, name in _unique_names(found)]
        self._save_detections()
        entries.sort(key=lambda e: (e.name.casefold(), e.name))
        for entry in entries:
            self._fill_cached_hash(entry)
        if self.background_hashing:
            self.hasher.submit(entries)
        return entries

    def _entry(self, item: _Found, name: str) -> ModelEntry:
        try:
            if item.format == "diffusers":
                return self._folder_entry(item.path, name)
            return self._file_entry(item.path, name, item.format)
        except Exception as exc:  # noqa: BLE001 - one strange file must not hide the others
            log.warning("examining %s failed", item.path, exc_info=True)
            try:
                stat = item.path.stat()
                size, mtime = stat.st_size, stat.st_mtime
            except OSError:
                size, mtime = 0, 0.0
            return ModelEntry(name=name, path=item.path, format=item.format, family=None, inpainting=False,
                              supported=False, reason=f"cannot be examined ({type(exc).__name__}: {exc})"[:300],
                              size=size, mtime=mtime)

    def _file_entry(self, path: Path, name: str, fmt: ModelFormat) -> ModelEntry:
        stat = path.stat()
        known = self._detections.get(str(path))
        if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
            detection = known[2]  # a rescan reads only the headers of files that changed
        else:
            detection = detect_file(path)
            self._detections[str(path)] = (stat.st_size, stat.st_mtime_ns, detection)
            self._detections_dirty = True
        config_dir = None
        sidecar = sidecar_config_dir(path)
        if detection.kind in ("checkpoint", "unknown") and (sidecar / "model_index.json").is_file():
            own = detect_folder(sidecar, need_weights=False)
            if own.supported:
                config_dir = sidecar
                detection = Detection(own.family, detection.inpainting or own.inpainting)
            else:
                detection = Detection(own.family, own.inpainting, False, f"its config folder {sidecar.name}/: "
                                      f"{own.reason}", own.kind)
        prediction = prediction_from_sidecars(path)
        # SD 2.x shapes cannot tell v from epsilon: without a sidecar, the configured default (with a config
        # folder, that folder's scheduler decides)
        if prediction is None and detection.family == "sd2" and config_dir is None:
            prediction = self.config.sd2_prediction
        return ModelEntry(name=name, path=path, format=fmt, family=detection.family if detection.supported else None,
                          inpainting=detection.inpainting, supported=detection.supported, reason=detection.reason,
                          size=stat.st_size, mtime=stat.st_mtime, prediction_type=prediction, config_dir=config_dir)

    def _folder_entry(self, folder: Path, name: str) -> ModelEntry:
        detection = detect_folder(folder)
        size, mtime = _folder_size_mtime(folder)
        return ModelEntry(name=name, path=folder, format="diffusers",
                          family=detection.family if detection.supported else None,
                          inpainting=detection.inpainting, supported=detection.supported, reason=detection.reason,
                          size=size, mtime=mtime)

    # ------------------------------------------------------------------------------------------ hashes
    def _fill_cached_hash(self, entry: ModelEntry) -> None:
        value = self.hashes.cached(Path(entry.path))
        if value:
            entry.sha256, entry.short_hash = value, value[:10]

    def sha256(self, entry: ModelEntry) -> str:
        """The model's full sha256, from the cache or computed now (and written to the entry and the cache)."""
        if not entry.sha256:
            value = self.hashes.sha256(Path(entry.path))
            entry.sha256, entry.short_hash = value, value[:10]
        return entry.sha256

    def short_hash(self, entry: ModelEntry) -> str:
        """A1111's short hash (10 hex digits), computed now if the cache does not have it."""
        return self.sha256(entry)[:10]

    def wait_for_hashes(self, timeout: float | None = None) -> bool:
        """Block until the background hasher is idle; False if ``timeout`` passed first."""
        return self.hasher.wait(timeout)


def _unique_names(found: list[_Found]) -> list[tuple[_Found, str]]:
    """A1111 names; when two different models share one, the first by (root, format, path) keeps it and the
    others become ``name (2)``, ``name (3)``, ... so every name picks exactly one model, the same one each scan."""
    order = sorted(found, key=lambda f: (f.root_index, _FORMAT_ORDER[f.format], str(f.path)))
    taken = {f.name for f in found}
    used: set[str] = set()
    named: list[tuple[_Found, str]] = []
    for item in order:
        name = item.name
        if name in used:
            number = 2
            while f"{name} ({number})" in taken or f"{name} ({number})" in used:
                number += 1
            name = f"{name} ({number})"
        used.add(name)
        named.append((item, name))
    return named


def list_once(folder: Path, visited: set[tuple[int, int]]) -> list[os.DirEntry] | None:
    """The entries of ``folder``, or None when this walk listed it already (a symlink loop, or a folder reached
    twice); raises OSError when it cannot be listed. Model folders of every kind are walked with it."""
    stat = folder.stat()
    key = (stat.st_dev, stat.st_ino)
    if key in visited:
        return None
    visited.add(key)
    with os.scandir(folder) as listing:
        return list(listing)


def _walk(root: Path) -> Iterator[tuple[Path, ModelFormat]]:
    """Checkpoint files and diffusers folders under ``root``.

    Hidden entries are skipped, a diffusers folder is not entered, a ``<stem>.config/`` folder beside its single
    file is that file's config (not a model), and so is a ``<stem>.vae.safetensors`` (``.ckpt``) its VAE (A1111's
    "Automatic" VAE); folders already visited (a symlink loop) are not visited again.
    """
    if (root / "model_index.json").is_file():
        yield root, "diffusers"
        return
    visited: set[tuple[int, int]] = set()
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            children = list_once(folder, visited)
        except OSError as exc:
            log.warning("cannot list %s (%s); skipping it", folder, exc)
            continue
        if children is None:
            continue
        stems = {Path(c.name).stem for c in children if Path(c.name).suffix.lower() in CHECKPOINT_SUFFIXES}
        for child in children:
            if child.name.startswith("."):
                continue
            path = Path(child.path)
            try:
                is_dir = child.is_dir()
                is_file = not is_dir and child.is_file()
            except OSError:
                continue
            if is_dir:
                if child.name.endswith(SIDECAR_SUFFIX) and child.name[: -len(SIDECAR_SUFFIX)] in stems:
                    continue
                if (path / "model_index.json").is_file():
                    yield path, "diffusers"
                elif (child.name not in _SKIP_DIRS and depth < MAX_DEPTH
                      and not (path / "pyvenv.cfg").is_file()):
                    stack.append((path, depth + 1))
            elif is_file and path.suffix.lower() in CHECKPOINT_SUFFIXES:
                if Path(path.stem).suffix.lower() == ".vae" and Path(path.stem).stem in stems:
                    continue  # <model>.vae.safetensors beside <model>: the VAE "Automatic" picks, not a model
                yield path, "safetensors" if path.suffix.lower() == ".safetensors" else "ckpt"


def _folder_size_mtime(folder: Path) -> tuple[int, float]:
    """Total size and newest mtime of a diffusers folder's files (stat only), so an edit shows as a change."""
    size, mtime = 0, 0.0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in filenames:
            try:
                stat = os.stat(os.path.join(dirpath, filename))
            except OSError:
                continue
            size += stat.st_size
            mtime = max(mtime, stat.st_mtime)
    return size, mtime
