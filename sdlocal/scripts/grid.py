"""Drawing grids with Pillow: cells side by side, legends above the columns and left of the rows.

The look follows what A1111 users know from its X/Y/Z plot: a white legend band above the columns and one
three quarters of a cell wide left of the rows, text centred, a font about (cell width + cell height) / 25
pixels high, long labels wrapped to the cell (never cut) and drawn smaller when they would need too many
lines, an unused prompt-matrix part grey and struck through, and one titled sub-grid per Z value.

A missing cell (interrupted, skipped, failed) is an empty black picture of the cell's size, so a stopped
grid keeps its shape and what was done stays where it belongs.

Every step is linear in the number of cells and labels (one paste per cell, one wrap per label and font size
tried), so a 10x10 grid of 512 px cells costs about what copying its pixels costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sdlocal.scripts.plan import Label

BACKGROUND = (255, 255, 255)
EMPTY = (0, 0, 0)
ACTIVE, INACTIVE = (0, 0, 0), (153, 153, 153)
MIN_FONT = 10  # below this the legend is unreadable; a label that still does not fit wraps onto more lines
MAX_TITLE_FONT = 96  # a Z title over a big sub-grid would otherwise be taller than a row of cells
MAX_LABEL_LINES = 3  # a label needing more lines than this at the cell's font size is drawn smaller


@lru_cache(maxsize=32)
def font(size: int) -> Any:
    """Pillow's own scalable font (Aileron Regular, public domain, inside Pillow), so every machine draws the
    same legend and no font file is downloaded or shipped.

    Aileron's character set is Latin only: other scripts draw as boxes. Without FreeType (a Pillow built without
    it) the scalable font cannot load, and the bitmap font Pillow always has is used: one small size, whatever
    ``size`` asks, so the legend is still there, only small. Cached: a grid asks for the same few sizes.
    """
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def font_size_for(cell_size: tuple[int, int]) -> int:
    """The legend's font size for a cell: A1111's (width + height) / 25, never under ``MIN_FONT``."""
    return max(MIN_FONT, (cell_size[0] + cell_size[1]) // 25)


@dataclass(frozen=True)
class _Line:
    """One drawn line of a legend: part of a wrapped label, in that label's colour."""

    text: str
    active: bool


def _width(typeface: Any, text: str) -> float:
    return float(typeface.getlength(text))


def _line_height(typeface: Any) -> int:
    if hasattr(typeface, "getmetrics"):
        ascent, descent = typeface.getmetrics()
        return int(ascent + descent)
    return int(typeface.getbbox("Ag")[3])  # the bitmap font: no metrics, its box is its height


def _break_word(word: str, typeface: Any, width: float) -> list[str]:
    """A word wider than the column split between characters: shown whole on more lines, never cut."""
    pieces, current = [], ""
    for char in word:
        if current and _width(typeface, current + char) > width:
            pieces.append(current)
            current = char
        else:
            current += char
    return pieces + [current] if current else pieces


def wrap(text: str, typeface: Any, width: float) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels: at spaces where it can, inside a long word where it
    must, and at each newline the text has. Every character of ``text`` but the wrapping spaces is kept."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for word in paragraph.split(" "):
            candidate = f"{current} {word}" if current else word
            if _width(typeface, candidate) <= width:
                current = candidate
                continue
            if current:
                lines.append(current)
            pieces = _break_word(word, typeface, width) if _width(typeface, word) > width else [word]
            lines += pieces[:-1]
            current = pieces[-1] if pieces else ""
        lines.append(current)
    return lines


def _lay_out(labels: list[Label], typeface: Any, width: float) -> list[list[_Line]]:
    """Each label's wrapped lines (a label keeps its own lines, so its colour and strike cover all of them)."""
    return [[_Line(text, label.active) for text in wrap(label.text, typeface, width)] for label in labels]


def _block_height(laid: list[list[_Line]], typeface: Any) -> int:
    """Lines of one label ``_gap`` apart; labels twice that apart, so a wrapped label reads as one."""
    lines = sum(len(label) for label in laid)
    gaps = max(0, lines - 1) + max(0, len(laid) - 1)
    return lines * _line_height(typeface) + gaps * _gap(typeface)


def _gap(typeface: Any) -> int:
    return max(1, _line_height(typeface) // 5)


def _fit(slots: list[list[Label]], width: float, size: int, height: int | None = None) -> tuple[Any, list, bool]:
    """The largest font from ``size`` down at which no label needs more than ``MAX_LABEL_LINES`` lines and (for
    row legends) each slot's text fits ``height``; at ``MIN_FONT`` the text wraps as far as it must.
    Returns (font, each slot's laid-out labels, whether it fits)."""
    while True:
        typeface = font(size)
        laid = [_lay_out(labels, typeface, width) for labels in slots]
        fits = all(len(label) <= MAX_LABEL_LINES for slot in laid for label in slot)
        if fits and height is not None:
            fits = all(_block_height(slot, typeface) <= height for slot in laid)
        if fits or size <= MIN_FONT:
            return typeface, laid, fits
        size = max(MIN_FONT, size * 9 // 10)


def _fit_rows(slots: list[list[Label]], width: int, height: int, size: int, pad: int) -> tuple[int, Any, list]:
    """The row band's width, font and lines: three quarters of a cell (A1111's), wider (up to three cells) only
    when the rows' text would not fit their cells' height even at ``MIN_FONT``, so no row's text runs into the
    next row's."""
    left = max(width * 3 // 4, 4 * MIN_FONT)
    while True:
        typeface, laid, fits = _fit(slots, max(1, left - 2 * pad), size, height=height)
        if fits or left >= 3 * width:
            return left, typeface, laid
        left = min(3 * width, left * 5 // 4)


def _has_text(slots: list[list[Label]]) -> bool:
    return any(label.text for labels in slots for label in labels)


def image_grid(pictures: list[Any], columns: int, rows: int, cell_size: tuple[int, int], margin: int = 0) -> Any:
    """``pictures`` (None for an empty cell) in ``rows`` x ``columns``, ``margin`` pixels apart.

    A picture of another size (a Size axis, a hires cell among plain ones) is scaled to fit the cell, its
    shape kept and centred on black: every cell shows its whole picture and the rows and columns stay straight,
    where pasting it as it is would cover its neighbours or leave a gap.
    """
    from PIL import Image

    width, height = cell_size
    if columns < 1 or rows < 1 or width < 1 or height < 1:
        raise ValueError(f"a grid needs at least one column, one row and a cell of 1 px; got {columns}x{rows} "
                         f"cells of {width}x{height}")
    grid = Image.new("RGB", (columns * width + (columns - 1) * margin, rows * height + (rows - 1) * margin),
                     BACKGROUND)
    for index in range(columns * rows):
        row, column = divmod(index, columns)
        picture = pictures[index] if index < len(pictures) else None
        grid.paste(_cell(picture, cell_size), (column * (width + margin), row * (height + margin)))
    return grid


def _cell(picture: Any, cell_size: tuple[int, int]) -> Any:
    from PIL import Image, ImageOps

    if picture is None:
        return Image.new("RGB", cell_size, EMPTY)
    picture = picture if picture.mode == "RGB" else picture.convert("RGB")
    if picture.size == cell_size:
        return picture
    fitted = ImageOps.contain(picture, cell_size)
    cell = Image.new("RGB", cell_size, EMPTY)
    cell.paste(fitted, ((cell_size[0] - fitted.width) // 2, (cell_size[1] - fitted.height) // 2))
    return cell


def _draw_block(draw: Any, box: tuple[int, int, int, int], laid: list[list[_Line]], typeface: Any) -> None:
    """A slot's lines centred in ``box``; an inactive label's lines grey and struck through."""
    left, top, right, bottom = box
    line_height, gap = _line_height(typeface), _gap(typeface)
    y = top + (bottom - top - _block_height(laid, typeface)) // 2
    stroke = max(1, line_height // 12)
    for label in laid:
        for line in label:
            width = _width(typeface, line.text)
            x = left + (right - left - width) / 2
            color = ACTIVE if line.active else INACTIVE
            draw.text((x, y), line.text, font=typeface, fill=color)
            if not line.active and line.text:
                middle = y + line_height * 0.55
                draw.line((x, middle, x + width, middle), fill=color, width=stroke)
            y += line_height + gap
        y += gap


def annotate(grid: Any, columns: int, rows: int, cell_size: tuple[int, int], x_labels: list[list[Label]],
             y_labels: list[list[Label]], margin: int = 0, font_size: int | None = None) -> Any:
    """``grid`` with the column legends above it and the row legends to its left.

    The band above is as tall as the tallest column's text needs; the band on the left is three quarters of a
    cell wide (A1111's), and a row's text shrinks until it fits its cell's height (see ``_fit_rows``). Either
    band is left out when it has no text at all, so a grid over X only is as wide as its cells.
    """
    from PIL import Image, ImageDraw

    width, height = cell_size
    size = font_size or font_size_for(cell_size)
    pad = max(4, size // 4)
    x_slots, y_slots = x_labels[:columns], y_labels[:rows]
    left = top = 0
    if _has_text(x_slots):
        x_face, x_laid, _ = _fit(x_slots, max(1, width - 2 * pad), size)
        top = max(_block_height(slot, x_face) for slot in x_laid) + 2 * pad
    if _has_text(y_slots):
        left, y_face, y_laid = _fit_rows(y_slots, width, height, size, pad)
    out = Image.new("RGB", (grid.width + left, grid.height + top), BACKGROUND)
    out.paste(grid, (left, top))
    draw = ImageDraw.Draw(out)
    if top:
        for column, laid in enumerate(x_laid):
            x0 = left + column * (width + margin)
            _draw_block(draw, (x0 + pad, 0, x0 + width - pad, top), laid, x_face)
    if left:
        for row, laid in enumerate(y_laid):
            y0 = top + row * (height + margin)
            _draw_block(draw, (pad, y0, left - pad, y0 + height), laid, y_face)
    return out


def draw_grid(pictures: list[Any], columns: int, rows: int, cell_size: tuple[int, int],
              x_labels: list[list[Label]], y_labels: list[list[Label]], margin: int = 0, legend: bool = True) -> Any:
    """One labelled grid of ``pictures`` (row by row; None for an empty cell)."""
    grid = image_grid(pictures, columns, rows, cell_size, margin)
    if legend and (_has_text(x_labels) or _has_text(y_labels)):
        grid = annotate(grid, columns, rows, cell_size, x_labels, y_labels, margin)
    return grid


def join_grids(grids: list[Any], titles: list[str], margin: int = 0, legend: bool = True,
               font_size: int | None = None) -> Any:
    """Sub-grids (one per Z value) side by side, ``margin`` apart, each titled above when ``legend``.

    Sub-grids are pasted as they are (top-aligned, never scaled, so their cells stay pixel for pixel the
    cells' pictures). The title's font follows the sub-grid's size as a cell's legend follows the cell, capped
    at ``MAX_TITLE_FONT``.
    """
    from PIL import Image

    if not grids:
        raise ValueError("join_grids needs at least one grid")
    width, height = max(g.width for g in grids), max(g.height for g in grids)
    joined = Image.new("RGB", (len(grids) * width + (len(grids) - 1) * margin, height), BACKGROUND)
    for index, sub in enumerate(grids):
        joined.paste(sub if sub.mode == "RGB" else sub.convert("RGB"), (index * (width + margin), 0))
    if legend and any(titles):
        size = font_size or min(MAX_TITLE_FONT, font_size_for((width, height)))
        joined = annotate(joined, len(grids), 1, (width, height), [[Label(title)] for title in titles], [], margin,
                          font_size=size)
    return joined
