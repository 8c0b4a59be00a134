"""Grid drawing: sizes with and without legends and margins, labels really drawn where they belong, wrapping
inside the column, inactive labels grey and struck through, empty cells black, Z sub-grids titled."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFont

from sdlocal.scripts import grid as grid_module
from sdlocal.scripts.grid import (
    INACTIVE,
    MAX_LABEL_LINES,
    draw_grid,
    font,
    font_size_for,
    image_grid,
    join_grids,
    wrap,
)
from sdlocal.scripts.plan import Label

CELL = (96, 96)
LONG = "a castle on a hill above a misty valley at sunrise, oil painting, highly detailed, dramatic light"


def pictures(count: int, size: tuple[int, int] = CELL) -> list[Image.Image]:
    """Distinct mid-grey-to-colour pictures, none white and none black, so legends and empty cells stand out."""
    return [Image.new("RGB", size, (60 + 15 * i, 120, 200 - 10 * i)) for i in range(count)]


def ink(array: np.ndarray) -> np.ndarray:
    """Where something darker than the white background was drawn."""
    return (array < 250).any(axis=-1)


def labels(*texts: str) -> list[list[Label]]:
    return [[Label(text)] for text in texts]


def test_without_legends_the_grid_is_the_cells_and_the_margins() -> None:
    plain = draw_grid(pictures(6), 3, 2, CELL, labels("a", "b", "c"), labels("x", "y"), legend=False)
    assert plain.size == (3 * 96, 2 * 96)
    spaced = draw_grid(pictures(6), 3, 2, CELL, [], [], margin=10)
    assert spaced.size == (3 * 96 + 2 * 10, 2 * 96 + 10)
    gap = np.asarray(spaced)[:, 96:106]
    assert (gap == 255).all()  # the margin is background, not a stretched cell


def test_legends_add_a_band_above_and_one_on_the_left_only_where_there_is_text() -> None:
    both = draw_grid(pictures(4), 2, 2, CELL, labels("Steps: 1", "Steps: 2"), labels("Seed: 1", "Seed: 2"))
    left, top = both.width - 2 * 96, both.height - 2 * 96
    assert left == 96 * 3 // 4 and top > font_size_for(CELL)  # A1111's three quarters of a cell; text fits above
    x_only = draw_grid(pictures(4), 2, 2, CELL, labels("Steps: 1", "Steps: 2"), [])
    assert x_only.size == (2 * 96, 2 * 96 + top)
    y_only = draw_grid(pictures(4), 2, 2, CELL, labels("", ""), labels("Seed: 1", "Seed: 2"))
    assert y_only.size == (2 * 96 + left, 2 * 96)
    # the cells sit below and right of the bands, unchanged
    assert np.array_equal(np.asarray(both)[top:top + 96, left:left + 96], np.asarray(pictures(1)[0]))


def test_a_label_is_drawn_over_its_own_column_and_row_and_nowhere_else() -> None:
    out = np.asarray(draw_grid(pictures(6), 3, 2, CELL, labels("", "CFG Scale: 7", ""), labels("", "Seed: 42"),
                               margin=4))
    left, top = 96 * 3 // 4, out.shape[0] - (2 * 96 + 4)
    band = ink(out[:top, left:])
    assert band[:, 100:196].sum() > 20  # the middle column's label (its cell spans 100..196)
    assert not band[:, :100].any() and not band[:, 196:].any()
    rows = ink(out[top:, :left])
    assert rows[100:196].sum() > 20 and not rows[:100].any() and not rows[196:].any()
    assert not ink(out[:top, :left]).any()  # the corner stays empty


def test_a_long_label_wraps_inside_its_column_and_keeps_every_word() -> None:
    width = 96
    lines = wrap(LONG, font(font_size_for(CELL)), width - 8)
    assert len(lines) > 1 and " ".join(lines) == LONG
    word = "supercalifragilisticexpialidocious" * 2  # one word wider than the column: broken, not cut
    assert "".join(wrap(word, font(20), 60)) == word
    assert all(font(20).getlength(line) <= 60 for line in wrap(word, font(20), 60))
    out = np.asarray(draw_grid(pictures(3), 3, 1, CELL, labels("Seed: 1", LONG, "Seed: 3"), []))
    top = out.shape[0] - 96
    band = ink(out[:top])
    middle = band[:, 96:192]
    assert middle.any() and not band[:, 92:100].any() and not band[:, 188:196].any()  # a gap at both edges
    one_line = draw_grid(pictures(3), 3, 1, CELL, labels("Seed: 1", "Seed: 2", "Seed: 3"), [])
    assert top > 2 * (one_line.height - 96)  # several lines tall


def test_a_row_label_too_long_for_its_cell_widens_the_band_and_stays_in_its_row() -> None:
    cell = (64, 64)
    out = np.asarray(draw_grid(pictures(2, cell), 1, 2, cell, [], [[Label(LONG)], [Label("")]]))
    left = out.shape[1] - 64
    assert left > 64 * 3 // 4  # wider than A1111's three quarters of a cell: the text needs it
    rows = ink(out[:, :left])
    assert rows[:64].sum() > 50 and not rows[64:].any()  # all of it beside the first row
    short = draw_grid(pictures(2, cell), 1, 2, cell, [], labels("Seed: 1", "Seed: 2"))
    assert short.width - 64 == 48


def test_a_label_that_needs_too_many_lines_is_drawn_smaller() -> None:
    cell = (256, 256)
    size = font_size_for(cell)
    text = " ".join([LONG] * 2)
    at_size = wrap(text, font(size), cell[0] - 2 * (size // 4))
    assert len(at_size) > MAX_LABEL_LINES  # at the cell's own size it would take this many lines
    drawn = draw_grid(pictures(1, cell), 1, 1, cell, labels(text), [])
    ascent, descent = font(size).getmetrics()
    assert drawn.height - 256 < len(at_size) * (ascent + descent)  # a smaller font: a shorter band


def test_several_labels_in_a_column_are_drawn_one_per_line() -> None:
    column = [Label("a photo"), Label("red hat"), Label("blue background")]
    out = np.asarray(draw_grid(pictures(1), 1, 1, CELL, [column], []))
    rows_with_ink = ink(out[:out.shape[0] - 96]).any(axis=1)
    starts = np.flatnonzero(rows_with_ink[1:] & ~rows_with_ink[:-1])
    assert len(starts) + int(rows_with_ink[0]) == 3  # three separate bands of text


def test_an_inactive_label_is_grey_and_struck_through() -> None:
    out = np.asarray(draw_grid(pictures(2), 2, 1, CELL, [[Label("red hat")], [Label("red hat", active=False)]], []))
    top = out.shape[0] - 96
    active, inactive = out[:top, :96].astype(int), out[:top, 96:].astype(int)
    assert active.min() < 60  # black text
    assert abs(inactive.min() - INACTIVE[0]) <= 10  # grey text: its darkest pixel is the grey
    grey = (np.abs(inactive - INACTIVE[0]) <= 10).all(axis=-1)
    widest = max(np.ptp(np.flatnonzero(row)) if row.any() else 0 for row in grey)
    letters = ink(inactive)
    assert widest >= 0.9 * np.ptp(np.flatnonzero(letters.any(axis=0)))  # one grey line across the whole word


def test_empty_cells_are_black_and_odd_sizes_fit_the_cell() -> None:
    out = np.asarray(image_grid([pictures(1)[0], None, Image.new("RGB", (48, 24), (255, 0, 0))], 3, 1, CELL))
    assert out.shape == (96, 3 * 96, 3)
    assert (out[:, 96:192] == 0).all()
    odd = out[:, 192:]  # 48x24 scaled to 96x48, centred on black
    assert (odd[24:72] == (255, 0, 0)).all() and (odd[:24] == 0).all() and (odd[72:] == 0).all()
    short = np.asarray(image_grid(pictures(2), 2, 2, CELL))  # fewer pictures than cells: the rest are empty
    assert (short[96:] == 0).all() and not (short[:96] == 0).all()
    rgba = Image.new("RGBA", CELL, (10, 20, 30, 128))
    assert np.asarray(image_grid([rgba], 1, 1, CELL)).shape == (96, 96, 3)
    with pytest.raises(ValueError, match="at least one column"):
        image_grid([], 0, 1, CELL)


def test_z_sub_grids_sit_side_by_side_with_a_title_above_each() -> None:
    subs = [draw_grid(pictures(2), 2, 1, CELL, labels("a", "b"), [], margin=6) for _ in range(2)]
    joined = join_grids(subs, ["", "Seed: 2"], margin=6)
    width, height = subs[0].size
    title = joined.height - height
    assert joined.width == 2 * width + 6 and title > 0
    out = np.asarray(joined)
    band = ink(out[:title])
    assert band[:, width + 6:].sum() > 20 and not band[:, :width + 6].any()  # only the second has a title
    for index, sub in enumerate(subs):  # each sub-grid pasted pixel for pixel
        x = index * (width + 6)
        assert np.array_equal(out[title:, x:x + width], np.asarray(sub))
    assert join_grids(subs, ["1", "2"], margin=6, legend=False).size == (2 * width + 6, height)


def test_without_freetype_the_bitmap_font_still_draws_the_legend(monkeypatch: pytest.MonkeyPatch) -> None:

    def no_freetype(size: float | None = None) -> ImageFont.ImageFont:
        if size is not None:
            raise ImportError("The _imagingft C module is not installed")
        return ImageFont.load_default_imagefont()

    monkeypatch.setattr(ImageFont, "load_default", no_freetype)
    grid_module.font.cache_clear()
    try:
        assert not isinstance(font(30), ImageFont.FreeTypeFont)
        out = np.asarray(draw_grid(pictures(2), 2, 1, CELL, labels("Steps: 1", LONG), []))
        band = ink(out[:out.shape[0] - 96])
        assert band[:, :96].any() and band[:, 96:].any() and not band[:, 94:98].any()
    finally:
        grid_module.font.cache_clear()
