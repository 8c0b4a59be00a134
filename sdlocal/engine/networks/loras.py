"""LoRA and LyCORIS files: found in the LoRA folders, described from their headers, found again by name.

The name is the path below its folder without the suffix (``styles/pixel-art``), as A1111 names them; a prompt
may also use the file's stem or its kohya alias (``ss_output_name``). Discovery (``LoraLibrary``) never raises: a
file it cannot use is still listed, with the reason, so the user learns why ``<lora:name>`` does nothing.
"""

from __future__ import annotations

import difflib
import logging
import os
import threading
from dataclasses import replace
from pathlib import Path

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.networks.folders import LORA_SUFFIXES, lora_dirs, walk
from sdlocal.engine.networks.lora import LoraFile
from sdlocal.engine.networks.lora_headers import NotALora, read_lora_info

log = logging.getLogger(__name__)

# Preview images beside a LoRA, in the order they are looked for (A1111's and civitai helpers' names).
PREVIEW_NAMES = tuple(f"{form}{ext}" for ext in (".png", ".jpg", ".jpeg", ".webp") for form in (".preview", ""))


def read_lora(path: Path, name: str) -> LoraFile:
    """The LoRA in ``path``, or an unsupported entry whose reason says what is wrong; never raises."""
    try:
        info = read_lora_info(path)
    except NotALora as exc:
        return unsupported(name, path, str(exc))
    except OSError as exc:
        return unsupported(name, path, f"cannot be read ({type(exc).__name__}: {exc.strerror or exc}): check the "
                                       "file's permissions, or that a link points to an existing file")
    except Exception as exc:  # noqa: BLE001 - one strange file must not hide the others
        log.warning("examining the LoRA %s failed", path, exc_info=True)
        return unsupported(name, path, f"cannot be examined ({type(exc).__name__}: {exc})"[:300])
    alias = info.metadata.get("ss_output_name")
    alias = alias.strip() if isinstance(alias, str) and alias.strip() else path.stem
    return LoraFile(name=name, path=path, alias=alias, format=info.format, family=info.family, rank=info.rank,
                    modules=info.modules, text_encoder=info.text_encoder, unet=info.unet, metadata=info.metadata,
                    trigger_words=info.trigger_words)


def unsupported(name: str, path: Path, reason: str) -> LoraFile:
    """An entry for a file (or folder) that cannot be used, listed so the user sees why."""
    return LoraFile(name=name, path=path, alias=Path(name).name or name, reason=reason)


def name_in(folder: Path, path: Path) -> str:
    """``styles/pixel-art`` for ``<folder>/styles/pixel-art.safetensors``: the path below the folder, no suffix."""
    try:
        relative = path.relative_to(folder)
    except ValueError:
        relative = Path(path.name)
    return relative.with_suffix("").as_posix()


class LoraLibrary:
    """The LoRA files in every LoRA folder (``folders.lora_dirs``), read once per file version.

    A scan re-reads only the files whose (path, size, mtime) changed since the last one, so refreshing a folder
    of hundreds of LoRAs costs a ``stat`` per file. Safe to call from several threads.
    """

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._read: dict[str, tuple[int, int, LoraFile]] = {}  # path -> (size, mtime_ns, what it held)
        self._entries: list[LoraFile] | None = None

    def folders(self) -> list[Path]:
        """The folders a scan looks in, in the order that decides name clashes."""
        return lora_dirs(self.config)

    def scan(self) -> list[LoraFile]:
        """Every candidate file found, usable or not, in folder order; never raises.

        Two files with one name (compared without case, as ``find`` does): the first found is used, the others
        are listed with the reason, so the same file wins every scan.
        """
        with self._lock:
            found: list[LoraFile] = []
            files: set[str] = set()
            owners: dict[str, LoraFile] = {}
            fresh: dict[str, tuple[int, int, LoraFile]] = {}
            listings: dict[Path, set[str]] = {}
            for folder in self.folders():
                for item in walk(folder, LORA_SUFFIXES):
                    if item.error:
                        found.append(unsupported(str(item.path), item.path, f"this folder cannot be listed "
                                                 f"({item.error}): check its permissions"))
                        continue
                    real = os.path.realpath(item.path)
                    if real in files:  # the same file through two folders or a link
                        continue
                    files.add(real)
                    lora = self._read_once(item.path, name_in(folder, item.path), fresh, listings)
                    owner = owners.setdefault(lora.name.casefold(), lora)
                    if owner is not lora:
                        lora = replace(lora, reason=f"another LoRA has this name: {owner.path}")
                    found.append(lora)
            self._read, self._entries = fresh, found
            return list(found)

    def _read_once(self, path: Path, name: str, fresh: dict[str, tuple[int, int, LoraFile]],
                   listings: dict[Path, set[str]]) -> LoraFile:
        try:
            stat = path.stat()
        except OSError:
            return read_lora(path, name)  # it says why (a broken link, a permission)
        known = self._read.get(str(path))
        if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
            lora = known[2] if known[2].name == name else replace(known[2], name=name)
        else:
            lora = read_lora(path, name)
        lora = self._with_preview(lora, listings)
        fresh[str(path)] = (stat.st_size, stat.st_mtime_ns, lora)
        return lora

    @staticmethod
    def _with_preview(lora: LoraFile, listings: dict[Path, set[str]]) -> LoraFile:
        """The entry with the preview image now beside it (looked for every scan: a preview is often added after
        the LoRA). The same object when nothing changed, so its computed hash is kept."""
        folder = lora.path.parent
        if folder not in listings:
            try:
                listings[folder] = set(os.listdir(folder))
            except OSError:
                listings[folder] = set()
        stem = lora.path.stem
        preview = next((folder / f"{stem}{tail}" for tail in PREVIEW_NAMES if f"{stem}{tail}" in listings[folder]),
                       None)
        return lora if preview == lora.preview else replace(lora, preview=preview)

    def entries(self) -> list[LoraFile]:
        """The last scan's entries (scanning now if there was none)."""
        with self._lock:
            return list(self._entries) if self._entries is not None else self.scan()

    def find(self, name: str) -> LoraFile | None:
        """The LoRA a prompt means by ``name``: by name, then by file stem, then by alias; without case.

        At each step a usable file is preferred over an unusable one of the same name (whose reason the caller
        can show); None when nothing matches.
        """
        wanted = name.strip().replace("\\", "/").casefold()
        entries = self.entries()
        for key in (lambda e: e.name, lambda e: e.path.stem, lambda e: e.alias):
            matches = [entry for entry in entries if key(entry).casefold() == wanted]
            if matches:
                return next((entry for entry in matches if entry.usable), matches[0])
        return None

    def closest(self, name: str, n: int = 3) -> list[str]:
        """Up to ``n`` names of usable LoRAs that look like ``name`` (compared by name, stem and alias, without
        case), best first: for "did you mean" in the warning about an unknown name."""
        candidates: dict[str, str] = {}
        for entry in self.entries():
            if entry.usable:
                for spelling in (entry.name, entry.path.stem, entry.alias):
                    candidates.setdefault(spelling.casefold(), entry.name)
        if not candidates:
            return []
        matches = difflib.get_close_matches(name.strip().casefold(), list(candidates), n=len(candidates), cutoff=0.5)
        names: list[str] = []
        for match in matches:
            if candidates[match] not in names:
                names.append(candidates[match])
        return names[:n]
