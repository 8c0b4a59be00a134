"""A1111 model hashes: the first 10 hex digits of the whole file's sha256, cached so each file is read once.

Hashing a 7 GB SDXL file takes tens of seconds, and re-hashing every model at every start is a known complaint
about other UIs. So hashes are cached in ``<data_dir>/cache/hashes.json`` by absolute path, size and mtime
(nanoseconds): a file that changes in either is hashed again. The cache is written atomically (a temporary
file, then ``os.replace``), and a corrupt cache is ignored and rewritten.

A diffusers folder has no single file: its hash is the sha256 of its UNet weights file
(``unet/diffusion_pytorch_model.safetensors``, else the fp16 or ``.bin`` variant, see
``families.unet_weights_file``), the part that makes one model differ from another. With no UNet weights, it is
the hash of ``model_index.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK_BYTES = 4 * 1024 * 1024
CACHE_VERSION = 1


def sha256_file(path: Path) -> str:
    """The sha256 of a whole file, read in chunks (constant memory for multi-GB files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def hash_target(path: Path) -> Path:
    """The file whose sha256 is the model's hash: the file itself, or a diffusers folder's UNet weights."""
    path = Path(path)
    if not path.is_dir():
        return path
    from sdlocal.engine.families import unet_weights_file

    return unet_weights_file(path) or path / "model_index.json"


def short_hash(path: Path) -> str:
    """A1111's short hash of a model file or folder, computed now without a cache."""
    return sha256_file(hash_target(path))[:10]


class HashCache:
    """sha256 by absolute path, valid while the file's size and mtime are unchanged; safe across threads."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "cache" / "hashes.json"
        self._lock = threading.RLock()
        self._files: dict[str, dict] | None = None
        self._path_locks: dict[str, threading.Lock] = {}

    def _load(self) -> dict[str, dict]:
        if self._files is None:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                files = data["files"] if isinstance(data, dict) and data.get("version") == CACHE_VERSION else {}
                self._files = {k: v for k, v in files.items() if isinstance(v, dict)}
            except FileNotFoundError:
                self._files = {}
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("the hash cache %s is unreadable (%s); starting a new one", self.path, exc)
                self._files = {}
        return self._files

    @staticmethod
    def _stamp(target: Path) -> tuple[str, int, int]:
        stat = target.stat()
        return str(target.resolve()), stat.st_size, stat.st_mtime_ns

    def cached(self, path: Path) -> str | None:
        """The cached sha256 of a model (file or diffusers folder), or None; never reads the file's contents."""
        try:
            key, size, mtime = self._stamp(hash_target(path))
        except OSError:
            return None
        with self._lock:
            record = self._load().get(key)
        if record and record.get("size") == size and record.get("mtime_ns") == mtime:
            value = record.get("sha256")
            return value if isinstance(value, str) and len(value) == 64 else None
        return None

    def sha256(self, path: Path) -> str:
        """The sha256 of a model, from the cache or computed now (and cached); OSError if it cannot be read."""
        target = hash_target(path)
        key, _size, _mtime = self._stamp(target)
        with self._lock:
            path_lock = self._path_locks.setdefault(key, threading.Lock())
        with path_lock:  # two threads asking for the same file: the second waits and reads the cache
            cached = self.cached(path)
            if cached:
                return cached
            key, size, mtime = self._stamp(target)
            value = sha256_file(target)
            if self._stamp(target) != (key, size, mtime):  # changed while being read: do not cache a torn hash
                return value
            with self._lock:
                self._load()[key] = {"size": size, "mtime_ns": mtime, "sha256": value}
                self._save()
            return value

    def _save(self) -> None:
        """Write the whole cache atomically; a failure is logged (the hash is still returned)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".hashes-", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump({"version": CACHE_VERSION, "files": self._files}, fh, indent=1, sort_keys=True)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.warning("could not write the hash cache %s (%s)", self.path, exc)


class BackgroundHasher:
    """Hashes models missing a hash on one daemon thread, off the path of scanning and loading.

    ``submit`` replaces the work list (a rescan supersedes the last one); at most one thread runs at a time.
    Each finished hash is written to the entry (``sha256`` and ``short_hash``) and to the cache.
    """

    def __init__(self, cache: HashCache) -> None:
        self.cache = cache
        self._lock = threading.Lock()
        self._pending: list = []
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    def submit(self, entries: list) -> None:
        """Hash these entries' models (supported ones without a sha256 yet) in the background."""
        with self._lock:
            self._pending = [e for e in entries if e.supported and not e.sha256]
            if not self._pending or (self._thread is not None and self._thread.is_alive()):
                return
            self._idle.clear()
            self._thread = threading.Thread(target=self._run, name="sdlocal-model-hasher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Drop the work not yet started (the file being hashed finishes)."""
        with self._lock:
            self._pending = []

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the work list is done; False if ``timeout`` passed first."""
        return self._idle.wait(timeout)

    @property
    def running(self) -> bool:
        return not self._idle.is_set()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    self._idle.set()
                    return
                entry = self._pending.pop(0)
            if entry.sha256:
                continue
            try:
                value = self.cache.sha256(Path(entry.path))
            except OSError as exc:
                log.info("cannot hash %s (%s)", entry.path, exc)
                continue
            except Exception:  # noqa: BLE001 - a background thread must not die on one bad file
                log.warning("hashing %s failed", entry.path, exc_info=True)
                continue
            entry.sha256 = value
            entry.short_hash = value[:10]
