"""Drawing grids with Pillow: cells side by side, legends above the columns and left of the rows.

A missing cell (interrupted, skipped, failed) is an empty black picture of the cell's size, so a stopped
grid keeps its shape and what was done stays where it belongs.
"""

from __future__ import annotations

from typing import Any

from sdlocal.scripts.plan import Label

BACKGROUND = (255, 255, 255)
ACTIVE, INACTIVE = (0, 0, 0), (153, 153, 153)


def font(size: int) -> Any:
    """Pillow's own scalable font (it ships with Pillow), so every machine draws the same legend."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def image_grid(pictures: list[Any], columns: int, rows: int, cell_size: tuple[int, int], margin: int = 0) -> Any:
    """``pictures`` (None for an empty cell) in ``rows`` x ``columns``, ``margin`` pixels apart."""
    from PIL import Image

    width, height = cell_size
    grid = Image.new("RGB", (columns * width + (columns - 1) * margin, rows * height + (rows - 1) * margin),
                     BACKGROUND)
    for index in range(columns * rows):
        picture = pictures[index] if index < len(pictures) else None
        cell = picture.convert("RGB") if picture is not None else Image.new("RGB", cell_size, (0, 0, 0))
        if cell.size != cell_size:
            cell = cell.resize(cell_size)
        row, column = divmod(index, columns)
        grid.paste(cell, (column * (width + margin), row * (height + margin)))
    return grid


def _text_size(draw: Any, text: str, typeface: Any) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text or " ", font=typeface)
    return right - left, bottom - top


def _draw_lines(draw: Any, box: tuple[int, int, int, int], lines: list[Label], typeface: Any) -> None:
    """Lines centred in ``box``; an inactive line grey and struck through."""
    left, top, right, bottom = box
    sizes = [_text_size(draw, line.text, typeface) for line in lines]
    spacing = typeface.size // 3
    total = sum(h for _, h in sizes) + spacing * max(0, len(lines) - 1)
    y = top + (bottom - top - total) / 2
    for line, (w, h) in zip(lines, sizes, strict=True):
        x = left + (right - left - w) / 2
        color = ACTIVE if line.active else INACTIVE
        draw.text((x, y), line.text, font=typeface, fill=color)
        if not line.active:
            draw.line((x, y + h / 2 + 2, x + w, y + h / 2 + 2), fill=color, width=max(1, typeface.size // 12))
        y += h + spacing


def annotate(grid: Any, columns: int, rows: int, cell_size: tuple[int, int], x_labels: list[list[Label]],
             y_labels: list[list[Label]], margin: int = 0) -> Any:
    """``grid`` with the column legends above it and the row legends to its left."""
    from PIL import Image, ImageDraw

    width, height = cell_size
    typeface = font(max(12, min(width, height) // 16))
    line_height = typeface.size + typeface.size // 3
    top = (max((len(lines) for lines in x_labels), default=0) * line_height + typeface.size) if x_labels else 0
    left = (width * 3 // 4) if y_labels else 0
    out = Image.new("RGB", (grid.width + left, grid.height + top), BACKGROUND)
    out.paste(grid, (left, top))
    draw = ImageDraw.Draw(out)
    for column, lines in enumerate(x_labels[:columns]):
        x0 = left + column * (width + margin)
        _draw_lines(draw, (x0, 0, x0 + width, top), lines, typeface)
    for row, lines in enumerate(y_labels[:rows]):
        y0 = top + row * (height + margin)
        _draw_lines(draw, (0, y0, left, y0 + height), lines, typeface)
    return out


def draw_grid(pictures: list[Any], columns: int, rows: int, cell_size: tuple[int, int],
              x_labels: list[list[Label]], y_labels: list[list[Label]], margin: int = 0, legend: bool = True) -> Any:
    """One labelled grid of ``pictures`` (row by row; None for an empty cell)."""
    grid = image_grid(pictures, columns, rows, cell_size, margin)
    if legend and (x_labels or y_labels):
        grid = annotate(grid, columns, rows, cell_size, x_labels, y_labels, margin)
    return grid


def join_grids(grids: list[Any], titles: list[str], margin: int = 0, legend: bool = True) -> Any:
    """Sub-grids (one per Z value) side by side, each titled above when ``legend``."""
    size = (max(g.width for g in grids), max(g.height for g in grids))
    joined = image_grid(grids, len(grids), 1, size, margin)
    if legend and titles:
        joined = annotate(joined, len(grids), 1, size, [[Label(title)] for title in titles], [], margin)
    return joined
