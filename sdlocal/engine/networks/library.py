"""What the embedding, LoRA and VAE libraries share: a scan of their folders that never raises and reads a file
again only when it changed.

Each kind says only what differs (``FileLibrary``'s hooks): which files of a folder are candidates, what an entry
is named, how one file is read, what stands for a folder that cannot be listed. The rest is one mechanism, so
the three lists behave alike: a folder that cannot be listed is an entry with its reason, a file reached twice
(two folders, a link) is listed once, and of two files with one name the first found wins, every scan.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Generic, TypeVar

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.networks.folders import Listing

log = logging.getLogger(__name__)

T = TypeVar("T")  # an entry: a dataclass with ``name``, ``path`` and ``reason``


def read_or_reason(read: Callable[[Path, str], T], path: Path, name: str, kind: str,
                   refused: type[Exception] | tuple[type[Exception], ...],
                   unsupported: Callable[[str, Path, str], T], logger: logging.Logger = log) -> T:
    """``read(path, name)``, or an unsupported entry whose reason says what is wrong; never raises.

    ``refused`` is the reader's own "not a <kind>" error, whose message is already the reason; an ``OSError``
    says to check permissions and links; anything else is logged and listed, as one strange file must not hide
    the others (in ``logger``: the kind's module's).
    """
    try:
        return read(path, name)
    except refused as exc:
        return unsupported(name, path, str(exc))
    except OSError as exc:
        return unsupported(name, path, f"cannot be read ({type(exc).__name__}: {exc.strerror or exc}): check the "
                                       "file's permissions, or that a link points to an existing file")
    except Exception as exc:  # noqa: BLE001 - one strange file must not hide the others
        logger.warning("examining the %s %s failed", kind, path, exc_info=True)
        return unsupported(name, path, f"cannot be examined ({type(exc).__name__}: {exc})"[:300])


def stamp_of(path: Path) -> tuple[int, int]:
    """(size, mtime_ns): what says a file is still the version read before."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


class FileLibrary(Generic[T]):
    """The entries of every file of one kind in its folders, each file read once per (size, mtime) version.

    A scan re-reads only the files whose stamp changed since the last one, so refreshing a folder of hundreds of
    files costs a ``stat`` per file. Safe to call from several threads.

    ``clash_kind`` ("embedding", "LoRA"): two entries whose names are equal without case clash, and every one
    after the first gets the reason "another <clash_kind> has this name: <path>"; None: names are not compared.
    """

    clash_kind: str | None = None

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._read: dict[str, tuple[int, int, T]] = {}  # path -> (size, mtime_ns, what it held)
        self._fresh: dict[str, tuple[int, int, T]] | None = None  # what this scan read, while one runs
        self._entries: list[T] | None = None

    # --------------------------------------------------------------------------------------- the kind's hooks
    def folders(self) -> list[Path]:
        """The folders a scan looks in, in the order that decides name clashes."""
        raise NotImplementedError

    def candidates(self, folder: Path) -> Iterable[Listing]:
        """The candidate files under ``folder`` (``folders.walk`` with the kind's suffixes)."""
        raise NotImplementedError

    def locate(self, folder: Path, path: Path) -> tuple[Path, str]:
        """The path to read for the candidate ``path`` of ``folder``, and its entry's name."""
        raise NotImplementedError

    def read(self, path: Path, name: str) -> T:
        """The entry for one file; never raises (a problem is its reason)."""
        raise NotImplementedError

    def unlisted(self, folder: Path, path: Path, reason: str) -> T:
        """The entry standing for the folder ``path`` (under ``folder``) that cannot be listed."""
        raise NotImplementedError

    def reuse(self, known: T, name: str) -> T | None:
        """The entry read before from an unchanged file, now named ``name``; None: read it again."""
        return known if known.name == name else None

    def stamp(self, path: Path) -> tuple[int, int]:
        """The file's (size, mtime_ns); ``OSError`` when it cannot be stat'ed (then it is read each time)."""
        return stamp_of(path)

    def settle(self, entry: T) -> T:
        """The entry as this scan lists it (a LoRA's preview is looked for every scan); the entry by default."""
        return entry

    def begin_scan(self) -> None:
        """Called under the lock before a scan reads anything (to reset what one scan caches)."""

    # -------------------------------------------------------------------------------------- the mechanism
    def scan(self) -> list[T]:
        """Every candidate file found, usable or not, in folder order; never raises.

        Two files with one name (compared without case): the first found is used, the others are listed with
        the reason, so the same file wins every scan.
        """
        with self._lock:
            found: list[T] = []
            files: set[str] = set()
            owners: dict[str, T] = {}
            self._fresh = {}
            self.begin_scan()
            try:
                for folder in self.folders():
                    for item in self.candidates(folder):
                        entry = self._entry_of(folder, item, files, owners)
                        if entry is not None:
                            found.append(entry)
                self._read, self._entries = self._fresh, found
            finally:
                self._fresh = None
            return list(found)

    def _entry_of(self, folder: Path, item: Listing, files: set[str], owners: dict[str, T]) -> T | None:
        """The entry for one listing; None for a file already listed (``files``: the real paths so far)."""
        if item.error:
            return self.unlisted(folder, item.path, f"this folder cannot be listed ({item.error}): check its "
                                                    "permissions")
        path, name = self.locate(folder, item.path)
        real = os.path.realpath(path)
        if real in files:  # the same file through two folders or a link
            return None
        files.add(real)
        return self._unclashed(self.read_once(path, name), owners)

    def _unclashed(self, entry: T, owners: dict[str, T]) -> T:
        if self.clash_kind is None:
            return entry
        owner = owners.setdefault(entry.name.casefold(), entry)
        if owner is entry:
            return entry
        return replace(entry, reason=f"another {self.clash_kind} has this name: {owner.path}")

    def read_once(self, path: Path, name: str) -> T:
        """``read``, or the last read of that file when its size and modification time are unchanged."""
        with self._lock:
            try:
                stamp = self.stamp(path)
            except OSError:
                return self.read(path, name)  # it says why (a broken link, a permission)
            known = self._read.get(str(path))
            entry = self.reuse(known[2], name) if known is not None and known[:2] == stamp else None
            entry = self.settle(self.read(path, name) if entry is None else entry)
            (self._read if self._fresh is None else self._fresh)[str(path)] = (*stamp, entry)
            return entry

    def entries(self) -> list[T]:
        """The last scan's entries (scanning now if there was none)."""
        with self._lock:
            return list(self._entries) if self._entries is not None else self.scan()



def pickle_reason(message: str, files: str, instead: str, kind: str) -> str:
    """Why a pickle (``.pt``...) was not read, from ``torch.load(weights_only=True)``'s error: the refusal names the
    global the file needs (code, which is never run), any other unpickler error is damage. ``files`` names the
    suffixes ("a .pt file"), ``instead`` what to use ("the .safetensors version of this LoRA"), ``kind`` the
    kind of file ("a LoRA")."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return (f"needs more than plain tensors to load (it names {found.group(1)}) and was not opened, as "
                f"{files} can run code when opened: use {instead}")
    detail = message.partition("WeightsUnpickler error:")[2].strip().splitlines() or message.strip().splitlines()
    return (f"cannot be read as a PyTorch file ({(detail[0] if detail else 'unreadable pickle')[:160]}): it is "
            f"damaged or not {kind}; download it again")
