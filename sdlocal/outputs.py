"""The output store: every generated image as a PNG with its A1111 ``parameters`` chunk, and the gallery listing.

Layout: ``<root>/<kind>/YYYY-MM-DD/NNNNN-SEED.png`` (A1111's layout, so people's scripts and other tools read it);
pictures with no seed of their own (the Extras tab's, in ``extras-images``) are ``NNNNN.png``, as in A1111.
Guarantees, because losing or corrupting an image the user waited a minute for is the worst thing a UI can do:

* atomic writes: the PNG is written to a hidden temporary file in the same folder, fsynced, then hard-linked to
  its final name (``os.link`` fails if the name exists, so it never overwrites) and the temporary name removed.
  A crash mid-write leaves at most a hidden ``.*.tmp`` file, never a truncated ``NNNNN-SEED.png``.
* unique numbers: a lock serialises the counter inside this process, and the no-overwrite link makes two
  processes (the UI and ``sdlocal generate``) that pick the same number retry with the next one.
* one sequence per day across kinds: ``img2img/2026-11-24/00003-7.png`` was made after
  ``txt2img/2026-11-24/00002-5.png``. A1111 counts each folder on its own; sdlocal's next number is one more than
  the highest of that day in any kind's folder (the names keep A1111's format, only the numbers skip), so the
  counter alone orders a day's images across kinds and listing needs no ``stat`` per file. Images copied in
  from elsewhere with their own per-folder numbers are interleaved by number.
* a fast gallery: listing never opens a PNG. It sorts names from ``os.scandir`` (by day, then the counter)
  and caches the sorted list until a folder's mtime changes; thumbnails are made on first view and kept under
  ``<root>/.thumbnails`` until the image changes. ``list``/``count``/``pages`` take a ``kind`` filter.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

_NAME_RE = re.compile(r"^(\d{5,})(?:-(\d+))?(?:-.*)?\.png$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_KIND_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
THUMBNAIL_DIR = ".thumbnails"
THUMBNAIL_SIZE = 320
_STALE_TEMP_SECONDS = 3600


class OutputError(ValueError):
    """A gallery operation that cannot be done (a path outside the outputs folder, a missing image)."""


@dataclass(frozen=True)
class GalleryItem:
    """One saved image as the gallery lists it; built from the directory listing alone (no PNG is opened)."""

    path: Path
    relpath: str  # relative to the store root, with forward slashes: "txt2img/2026-11-24/00012-42.png"
    kind: str
    date: str  # "YYYY-MM-DD", the folder it is in
    number: int
    seed: int | None
    mtime: float


class OutputStore:
    """Saves and lists generated images under one root folder (``<data dir>/outputs`` by default)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser()
        self._lock = threading.Lock()
        self._next_number: dict[str, int] = {}  # by day ("YYYY-MM-DD"), shared by every kind's folder
        self._highest: dict[Path, tuple[int, int]] = {}  # other kinds' folders: (folder mtime_ns, highest number)
        self._cleaned: set[Path] = set()
        self._cache_signature: tuple | None = None
        self._cache_rows: list[tuple[str, int, str, str, int]] = []
        self._kind_rows: dict[str, list[tuple[str, int, str, str, int]]] = {}
        self._folder_rows: dict[str, tuple[int, list[tuple[str, int, str, str, int]]]] = {}

    # ------------------------------------------------------------------ saving
    def save(
        self,
        image: Any,
        parameters: str,
        seed: int | None,
        kind: str = "txt2img",
        when: datetime | None = None,
        extra_text: dict[str, str] | None = None,
    ) -> Path:
        """Write ``image`` (a PIL image) as a new PNG with the ``parameters`` text chunk; return its final path.

        ``seed`` None names the file ``NNNNN.png`` (a picture that was not generated, such as an upscaled one);
        ``extra_text`` adds more text chunks after ``parameters`` (the Extras tab's ``postprocessing``/``extras``).
        """
        from PIL.PngImagePlugin import PngInfo

        if not _KIND_RE.match(kind):
            raise OutputError(f"kind: {kind!r} is not a valid folder name; use lower-case letters, e.g. 'txt2img'")
        if seed is not None and (not isinstance(seed, int) or seed < 0):
            raise OutputError(f"seed: {seed!r} must be the image's actual seed (a whole number >= 0)")
        folder = self.root / kind / (when or datetime.now()).strftime("%Y-%m-%d")
        folder.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temps(folder)

        info = PngInfo()
        if parameters:
            info.add_text("parameters", parameters)
        for key, value in (extra_text or {}).items():
            if value:
                info.add_text(key, value)
        temp = folder / f".{secrets.token_hex(6)}.tmp"
        try:
            with open(temp, "xb") as handle:
                image.save(handle, format="PNG", pnginfo=info)
                handle.flush()
                os.fsync(handle.fileno())
            final = self._publish(temp, folder, seed)
        finally:
            try:
                temp.unlink()
            except FileNotFoundError:
                pass
        _fsync_dir(folder)
        self._cache_signature = None
        self._folder_rows.pop(str(folder), None)  # a folder's mtime may not tick between two quick saves
        return final

    def _publish(self, temp: Path, folder: Path, seed: int | None) -> Path:
        """Give the finished temporary file its numbered name without ever replacing an existing image."""
        with self._lock:
            number = self._first_free_number(folder)
            for _ in range(10_000):
                final = folder / (f"{number:05d}.png" if seed is None else f"{number:05d}-{seed}.png")
                try:
                    _link_no_replace(temp, final)
                except FileExistsError:
                    number += 1
                    continue
                self._next_number[folder.name] = number + 1
                return final
        raise OutputError(f"could not find a free file number in {folder}")

    def _first_free_number(self, folder: Path) -> int:
        """The day's next number: past this process's last one and past the highest in every kind's folder.

        The folder itself is scanned once per day (later collisions with another process are caught by the
        no-overwrite link); the other kinds' folders of that day are rescanned only when their mtime changed.
        """
        day = folder.name
        number = self._next_number.get(day)
        if number is None:
            number = _highest_number(folder) + 1
        try:
            kinds = [entry.name for entry in os.scandir(self.root)
                     if entry.name != folder.parent.name and _KIND_RE.match(entry.name) and entry.is_dir()]
        except OSError:
            kinds = []
        for kind in kinds:
            other = self.root / kind / day
            mtime_ns = _mtime_ns(other)
            if mtime_ns < 0:
                continue
            cached = self._highest.get(other)
            if cached is None or cached[0] != mtime_ns:
                cached = (mtime_ns, _highest_number(other))
                self._highest[other] = cached
            number = max(number, cached[1] + 1)
        return number

    def _remove_stale_temps(self, folder: Path) -> None:
        """Temporary files left by a killed process are removed once, when the folder is first written again."""
        if folder in self._cleaned:
            return
        self._cleaned.add(folder)
        cutoff = time.time() - _STALE_TEMP_SECONDS
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                        try:
                            if entry.stat().st_mtime < cutoff:
                                os.unlink(entry.path)
                        except OSError:
                            pass
        except OSError:
            pass

    # ----------------------------------------------------------------- listing
    def list(self, page: int = 0, per_page: int = 48, kind: str | None = None) -> list[GalleryItem]:
        """One page (0-based) of saved images, newest first across kinds; only that page's items are stat'ed.

        ``kind`` (``"txt2img"``, ``"img2img"``) lists only that folder's images; None lists all.
        """
        if page < 0 or per_page < 1:
            raise OutputError(f"page {page} / per_page {per_page}: page must be >= 0 and per_page >= 1")
        rows = self._rows(kind)
        return [self._item(row) for row in rows[page * per_page : (page + 1) * per_page]]

    def count(self, kind: str | None = None) -> int:
        return len(self._rows(kind))

    def pages(self, per_page: int = 48, kind: str | None = None) -> int:
        return max(1, -(-self.count(kind) // per_page))

    def _rows(self, kind: str | None) -> list[tuple[str, int, str, str, int]]:
        """Every row, or one kind's, in listing order; the filtered list is kept as long as the listing."""
        if kind is not None and not _KIND_RE.match(kind):
            raise OutputError(f"kind: {kind!r} is not an outputs folder; use e.g. 'txt2img' or 'img2img'")
        rows = self._all_rows()
        if kind is None:
            return rows
        filtered = self._kind_rows.get(kind)
        if filtered is None:
            filtered = self._kind_rows[kind] = [row for row in rows if row[2] == kind]
        return filtered

    def _item(self, row: tuple[str, int, str, str, int]) -> GalleryItem:
        date, number, kind, name, seed = row
        path = self.root / kind / date / name
        try:
            mtime = path.stat().st_mtime
        except OSError:  # deleted since the listing: still listed until the next scan notices
            mtime = 0.0
        return GalleryItem(path=path, relpath=f"{kind}/{date}/{name}", kind=kind, date=date, number=number,
                           seed=seed if seed >= 0 else None, mtime=mtime)

    def _all_rows(self) -> list[tuple[str, int, str, str, int]]:
        """(date, number, kind, file name, seed) of every image, newest first.

        Plain tuples from the directory listings alone (no Path or stat per file: with 10,000 images those cost
        more than the listing itself), cached per date folder by its mtime, so a save rescans only its folder.
        """
        folders = self._date_folders()
        signature = tuple((str(path), _mtime_ns(path)) for path in folders) + ((str(self.root), _mtime_ns(self.root)),)
        if signature == self._cache_signature:
            return self._cache_rows
        rows: list[tuple[str, int, str, str, int]] = []
        folder_rows: dict[str, tuple[int, list[tuple[str, int, str, str, int]]]] = {}
        for (key, mtime_ns), folder in zip(signature[:-1], folders, strict=True):
            cached = self._folder_rows.get(key)
            if cached is not None and cached[0] == mtime_ns:
                found = cached[1]
            else:
                kind, date = folder.parent.name, folder.name
                try:
                    with os.scandir(folder) as entries:
                        found = [(date, int(match.group(1)), kind, entry.name, int(match.group(2) or -1))
                                 for entry in entries
                                 if (match := _NAME_RE.match(entry.name)) and entry.is_file()]
                except OSError:
                    continue
            folder_rows[key] = (mtime_ns, found)
            rows.extend(found)
        # Newest first: by day, then by the day's counter, shared by the kinds (see the module docstring), which
        # orders a day's images even when mtimes are equal or were changed by a copy; then by kind for the
        # numbers two processes gave at the same moment to two kinds.
        rows.sort(reverse=True)
        self._folder_rows = folder_rows
        self._cache_rows = rows
        self._kind_rows = {}
        self._cache_signature = signature
        return rows

    def _date_folders(self) -> list[Path]:
        folders: list[Path] = []
        try:
            kinds = [entry for entry in os.scandir(self.root) if entry.is_dir() and _KIND_RE.match(entry.name)]
        except OSError:
            return folders
        for kind in kinds:
            try:
                folders.extend(
                    Path(entry.path) for entry in os.scandir(kind.path) if entry.is_dir() and _DATE_RE.match(entry.name)
                )
            except OSError:
                continue
        return sorted(folders)

    # ------------------------------------------------------- single images
    def resolve(self, path: Path | str) -> Path:
        """The real path of an image inside the store; refuses anything outside it (``../``, symlinks, absolute)."""
        root = self.root.resolve()
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = root / candidate
        real = candidate.resolve()
        if real == root or root not in real.parents:
            raise OutputError(f"path: {str(path)!r} is outside the outputs folder {root}")
        if THUMBNAIL_DIR in real.relative_to(root).parts:
            raise OutputError(f"path: {str(path)!r} is a thumbnail, not an image")
        return real

    def read_parameters(self, path: Path | str) -> str | None:
        """The ``parameters`` text of a stored image, or None if it has none."""
        return read_image_parameters(self.resolve(path))

    def thumbnail(self, path: Path | str, size: int = THUMBNAIL_SIZE) -> Path:
        """A cached JPEG thumbnail of a stored image, (re)made when missing or older than the image."""
        from PIL import Image

        source = self.resolve(path)
        rel = source.relative_to(self.root.resolve())
        thumb = self.root.resolve() / THUMBNAIL_DIR / rel.with_suffix(f".{size}.jpg")
        try:
            source_mtime = source.stat().st_mtime_ns
        except FileNotFoundError:
            raise OutputError(f"path: {str(path)!r} no longer exists") from None
        try:
            if thumb.stat().st_mtime_ns >= source_mtime:
                return thumb
        except FileNotFoundError:
            pass
        thumb.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(source) as image:
            image.draft("RGB", (size, size))
            small = image.convert("RGB")
            small.thumbnail((size, size))
        temp = thumb.parent / f".{secrets.token_hex(6)}.tmp"
        try:
            small.save(temp, format="JPEG", quality=85)
            os.replace(temp, thumb)
        finally:
            if temp.exists():
                temp.unlink()
        return thumb

    def delete(self, path: Path | str) -> Path:
        """Delete one stored image (and its thumbnails); only inside the store, only PNG images."""
        real = self.resolve(path)
        if real.suffix.lower() != ".png" or not real.is_file():
            raise OutputError(f"path: {str(path)!r} is not a stored image")
        real.unlink()
        rel = real.relative_to(self.root.resolve())
        thumbs = self.root.resolve() / THUMBNAIL_DIR / rel.parent
        if thumbs.is_dir():
            for thumb in thumbs.glob(f"{real.stem}.*.jpg"):
                thumb.unlink(missing_ok=True)
        self._cache_signature = None
        return real


def read_image_parameters(path: Path | str | BinaryIO) -> str | None:
    """The A1111 ``parameters`` text of any image file: PNG text chunks, or EXIF UserComment (JPEG/WebP)."""
    return read_image_info(path)[0]


def read_image_info(source: Path | str | BinaryIO) -> tuple[str | None, dict[str, str]]:
    """The A1111 ``parameters`` text (or None) and every text item of an image file or binary stream.

    The one reader of image parameters (the UI's PNG Info, the gallery and the API's ``png-info`` use it). Only
    the header is parsed (PIL opens lazily), so a large image costs little. Raises PIL's errors for data that is
    not an image, and ``PIL.Image.DecompressionBombError`` for absurd pixel counts.
    """
    from PIL import Image

    with Image.open(source) as image:
        items = {key: _as_text(value) for key, value in image.info.items() if isinstance(value, (str, bytes))
                 and isinstance(key, str)}
        if "parameters" not in items and image.format == "PNG":
            # Text chunks after the image data are only read by ``.text``, which decodes the pixels: allowed, since
            # Image.open already refused decompression bombs.
            items.update({key: _as_text(value) for key, value in getattr(image, "text", {}).items()})
        text = items.get("parameters")
        if text is None:
            comment = image.getexif().get_ifd(0x8769).get(0x9286)
            if isinstance(comment, bytes):
                text = _decode_user_comment(comment)
            elif isinstance(comment, str):
                text = comment
            if text:
                items["parameters"] = text
    return text or None, items


def _as_text(value: str | bytes) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _decode_user_comment(raw: bytes) -> str:
    """EXIF UserComment: an 8-byte charset tag, then the text (A1111 writes UNICODE as UTF-16)."""
    head, body = raw[:8], raw[8:]
    if head.startswith(b"UNICODE"):
        for codec in ("utf-16-be", "utf-16-le"):
            try:
                return body.decode(codec).rstrip("\x00")
            except UnicodeDecodeError:
                continue
    return body.decode("utf-8", errors="replace").rstrip("\x00")


def _highest_number(folder: Path) -> int:
    highest = -1
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                match = _NAME_RE.match(entry.name)
                if match:
                    highest = max(highest, int(match.group(1)))
    except FileNotFoundError:
        pass
    return highest


def _link_no_replace(temp: Path, final: Path) -> None:
    """Give ``temp`` the name ``final``; FileExistsError if ``final`` exists. Atomic where hard links work."""
    try:
        os.link(temp, final)
        return
    except FileExistsError:
        raise
    except OSError:
        pass  # file systems without hard links (some network and FAT drives): fall back to rename under our lock
    if final.exists():
        raise FileExistsError(final)
    os.replace(temp, final)


def _fsync_dir(folder: Path) -> None:
    """Make the new directory entry durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1
