"""LoRA and LyCORIS files: found in the LoRA folders, described from their headers, found again by name.

The name is the path below its folder without the suffix (``styles/pixel-art``), as A1111 names them; a prompt
may also use the file's stem or its kohya alias (``ss_output_name``). Discovery (``LoraLibrary``) never raises: a
file it cannot use is still listed, with the reason, so the user learns why ``<lora:name>`` does nothing.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.networks.folders import LORA_SUFFIXES, Listing, lora_dirs, walk
from sdlocal.engine.networks.library import FileLibrary, read_or_reason
from sdlocal.engine.networks.lora import LoraFile
from sdlocal.engine.networks.lora_headers import NotALora, read_lora_info

log = logging.getLogger(__name__)

# Preview images beside a LoRA, in the order they are looked for (A1111's and civitai helpers' names).
PREVIEW_NAMES = tuple(f"{form}{ext}" for ext in (".png", ".jpg", ".jpeg", ".webp") for form in (".preview", ""))


def read_lora(path: Path, name: str) -> LoraFile:
    """The LoRA in ``path``, or an unsupported entry whose reason says what is wrong; never raises."""
    return read_or_reason(_read_lora, path, name, "LoRA", NotALora, unsupported, log)


def _read_lora(path: Path, name: str) -> LoraFile:
    info = read_lora_info(path)
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


class LoraLibrary(FileLibrary[LoraFile]):
    """The LoRA files in every LoRA folder (``folders.lora_dirs``), read once per file version.

    A scan re-reads only the files whose (path, size, mtime) changed since the last one, so refreshing a folder
    of hundreds of LoRAs costs a ``stat`` per file. Two files with one name (compared without case, as ``find``
    does): the first found is used, the others are listed with the reason. Safe to call from several threads.
    """

    clash_kind = "LoRA"

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self._listings: dict[Path, set[str]] = {}  # folder -> its file names, listed once a scan

    def folders(self) -> list[Path]:
        """The folders a scan looks in, in the order that decides name clashes."""
        return lora_dirs(self.config)

    def candidates(self, folder: Path) -> Iterator[Listing]:
        return walk(folder, LORA_SUFFIXES)

    def locate(self, folder: Path, path: Path) -> tuple[Path, str]:
        return path, name_in(folder, path)

    def read(self, path: Path, name: str) -> LoraFile:
        return read_lora(path, name)

    def unlisted(self, folder: Path, path: Path, reason: str) -> LoraFile:
        return unsupported(str(path), path, reason)

    def reuse(self, known: LoraFile, name: str) -> LoraFile:
        """The same file reached under another name (its folder moved in the list) keeps what was read."""
        return known if known.name == name else replace(known, name=name)

    def begin_scan(self) -> None:
        self._listings = {}

    def settle(self, entry: LoraFile) -> LoraFile:
        return self._with_preview(entry, self._listings)

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
