"""Prompt styles as A1111 and Fooocus keep them: found, applied to a prompt, saved.

A style is a named prompt and negative prompt. A1111 keeps them in ``styles.csv`` (header
``name,prompt,negative_prompt``; files from older versions have ``name,text``); Fooocus ships ``sdxl_styles/*.json``
(lists of ``{"name", "prompt", "negative_prompt"}``). Styles are read from ``<data dir>/styles.csv`` and from each
``--models-dir`` root (an A1111 or Fooocus install, or its ``models`` folder: the install is one level up).

Applying a style follows A1111's rule, style by style in the order chosen: a style text holding ``{prompt}`` has
it replaced by the prompt so far; any other style text is appended after ``", "`` (empty parts left out). The
negative prompt gets the same with the style's negative text. The expanded text is what reaches the engine (and
so the PNG's parameters), as A1111 writes it.

Plain Python: no torch, no gradio, so the UI, the API and the CLI all use this one module.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sdlocal.engine.request import RequestError

log = logging.getLogger(__name__)

STYLES_FILE = "styles.csv"
FOOOCUS_FOLDER = "sdxl_styles"
PLACEHOLDER = "{prompt}"
CSV_COLUMNS = ("name", "prompt", "negative_prompt")
MAX_NAMES_SHOWN = 20  # an unknown-style error lists at most this many known names (Fooocus ships ~300)


@dataclass(frozen=True)
class Style:
    """One style: its name as written, its prompt and negative texts, and the file it came from."""

    name: str
    prompt: str = ""
    negative_prompt: str = ""
    path: Path | None = None


def merge(style_text: str, prompt: str) -> str:
    """A1111's rule for one style over the text so far: fill ``{prompt}``, else append after ", "."""
    if PLACEHOLDER in style_text:
        return style_text.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply_to(prompt: str, negative: str, styles: Iterable[Style]) -> tuple[str, str]:
    """``prompt`` and ``negative`` with every style applied in order (``merge``)."""
    for style in styles:
        prompt = merge(style.prompt, prompt)
        negative = merge(style.negative_prompt, negative)
    return prompt, negative


# ----- reading ---------------------------------------------------------------------------------------------------

def read_csv(path: Path) -> list[Style]:
    """The styles of an A1111 ``styles.csv``; a missing file gives none, a broken one a warning and none.

    ``prompt`` (or the old ``text`` column) and ``negative_prompt`` are read; other columns are ignored, rows
    without a name skipped. A byte-order mark (Excel writes one) is allowed.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("ignoring the styles file %s: it cannot be read as UTF-8 text (%s)", path, exc)
        return []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        rows = list(reader)
    except csv.Error as exc:
        log.warning("ignoring the styles file %s: it is not a valid CSV file (%s)", path, exc)
        return []
    if rows and "name" not in (reader.fieldnames or ()):
        log.warning("ignoring the styles file %s: its first line must name the columns (name,prompt,negative_prompt)",
                    path)
        return []
    styles = []
    for row in rows:
        name = (row.get("name") or "").strip()
        if not name:
            continue
        prompt = row.get("prompt")
        prompt = row.get("text") if prompt is None else prompt
        styles.append(Style(name, _text(prompt), _text(row.get("negative_prompt")), path))
    return styles


def read_fooocus(path: Path) -> list[Style]:
    """The styles of one Fooocus style JSON file (a list of objects); a broken file gives a warning and none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("ignoring the style file %s: it is not readable JSON (%s)", path, exc)
        return []
    if not isinstance(data, list):
        log.warning("ignoring the style file %s: it must hold a JSON list of styles", path)
        return []
    styles = []
    for item in data:
        if isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"].strip():
            styles.append(Style(item["name"].strip(), _text(item.get("prompt")), _text(item.get("negative_prompt")),
                                path))
    return styles


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def install_roots(models_dirs: Iterable[Path]) -> list[Path]:
    """The install folders of ``--models-dir`` roots: the root itself, or its parent when it is ``models``."""
    roots: list[Path] = []
    for folder in models_dirs:
        folder = Path(folder).expanduser()
        root = folder.parent if folder.name.lower() == "models" else folder
        if root not in roots:
            roots.append(root)
    return roots


def style_files(data_dir: Path, models_dirs: Iterable[Path]) -> list[Path]:
    """Every file styles are read from, in order: the data dir's ``styles.csv`` first, then each root's."""
    files = [Path(data_dir) / STYLES_FILE]
    for root in install_roots(models_dirs):
        files.append(root / STYLES_FILE)
        folder = root / FOOOCUS_FOLDER
        if folder.is_dir():
            files += sorted(folder.glob("*.json"))
    return files


# ----- the library -----------------------------------------------------------------------------------------------

class StyleLibrary:
    """The styles found for one sdlocal: read once, again on ``refresh()``; saved into the data dir's file.

    When two files hold the same name the first one read wins (the data dir's, then the roots' in order), so
    a style saved in sdlocal overrides one of the same name in an A1111 install.
    """

    def __init__(self, data_dir: Path, models_dirs: Sequence[Path] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.models_dirs = [Path(folder) for folder in models_dirs]
        self._lock = threading.Lock()
        self._styles: dict[str, Style] | None = None

    @property
    def path(self) -> Path:
        """The file ``save`` writes: ``<data dir>/styles.csv``."""
        return self.data_dir / STYLES_FILE

    def styles(self) -> list[Style]:
        """Every style, in the order found (read once; ``refresh`` reads the files again)."""
        return list(self._by_name().values())

    def names(self) -> list[str]:
        return list(self._by_name())

    def refresh(self) -> list[Style]:
        with self._lock:
            self._styles = None
        return self.styles()

    def _by_name(self) -> dict[str, Style]:
        with self._lock:
            if self._styles is None:
                found: dict[str, Style] = {}
                for path in style_files(self.data_dir, self.models_dirs):
                    for style in read_csv(path) if path.suffix.lower() == ".csv" else read_fooocus(path):
                        found.setdefault(style.name, style)
                self._styles = found
            return self._styles

    def get(self, name: str) -> Style:
        """The style called ``name``; a RequestError naming ``styles`` and the known names otherwise."""
        styles = self._by_name()
        if name in styles:
            return styles[name]
        known = list(styles)
        shown = ", ".join(known[:MAX_NAMES_SHOWN]) + (f", ... ({len(known)} in all)" if len(known) > MAX_NAMES_SHOWN
                                                       else "")
        hint = (f"known styles: {shown}" if known else
                f"none are defined yet: save one, or add them to {self.path}")
        raise RequestError("styles", name, f"must name a known style; {hint}")

    def apply(self, prompt: str, negative: str, names: Iterable[str] | None) -> tuple[str, str]:
        """``prompt`` and ``negative`` with the named styles applied in order (A1111's rule, see ``merge``)."""
        chosen = [self.get(name) for name in names or ()]
        return apply_to(prompt or "", negative or "", chosen)

    def save(self, name: str, prompt: str, negative: str) -> Style:
        """Save a style into ``<data dir>/styles.csv`` (replacing one of that name there), atomically."""
        name = (name or "").strip()
        if not name:
            raise RequestError("name", name, "a style needs a name; type one and save again")
        with self._lock:
            kept = [style for style in self._own_styles() if style.name != name]
            style = Style(name, prompt or "", negative or "", self.path)
            write_csv(self.path, [*kept, style])
            self._styles = None
        return style

    def delete(self, name: str) -> None:
        """Remove a style from ``<data dir>/styles.csv``; one only found elsewhere cannot be deleted here."""
        with self._lock:
            own = self._own_styles()
            kept = [style for style in own if style.name != name]
            if len(kept) == len(own):
                raise RequestError("styles", name, f"is not a style saved in {self.path}; only those can be deleted")
            write_csv(self.path, kept)
            self._styles = None

    def _own_styles(self) -> list[Style]:
        """The data dir file's styles; a file that exists but cannot be read is an error, never overwritten."""
        if self.path.exists():
            try:
                self.path.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                raise RequestError("name", str(self.path), f"cannot be saved: the styles file cannot be read "
                                   f"({exc}); fix or move it first") from None
        return read_csv(self.path)


def write_csv(path: Path, styles: Iterable[Style]) -> None:
    """Write A1111's ``styles.csv`` through a temporary file and a rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(temp, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for style in styles:
                writer.writerow((style.name, style.prompt, style.negative_prompt))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def apply_styles(prompt: str, negative: str, names: Iterable[str] | None,
                 library: StyleLibrary | None) -> tuple[str, str]:
    """The one place the UI, the API and the CLI expand styles before a request reaches the engine.

    No names -> the texts unchanged (a library is not needed then); names without a library -> RequestError.
    """
    names = [name for name in names or () if name]
    if not names:
        return prompt or "", negative or ""
    if library is None:
        raise RequestError("styles", names[0], "must name a known style; no styles are available here")
    return library.apply(prompt, negative, names)
