"""The Gallery tab without a server: txt2img and img2img images together, newest first, and the kind filter."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from sdlocal.outputs import OutputStore
from sdlocal.ui.gallery import FILTERS, PER_PAGE, SHOW_ALL, gallery_page

DAY = datetime(2026, 12, 1, 9, 0)


@pytest.fixture()
def store(tmp_path: Path) -> OutputStore:
    """Seven images made on one day, kinds interleaved in this order: seeds 0..6."""
    store = OutputStore(tmp_path / "outputs")
    for seed, kind in enumerate(["txt2img", "txt2img", "img2img", "txt2img", "img2img", "img2img", "txt2img"]):
        store.save(Image.new("RGB", (16, 16), (seed * 30, 0, 0)), f"p\nSeed: {seed}", seed=seed, kind=kind, when=DAY)
    return store


def seeds(rels: list[str]) -> list[int]:
    return [int(Path(rel).stem.split("-")[1]) for rel in rels]


def test_all_kinds_are_listed_together_newest_first(store: OutputStore) -> None:
    number, shown, rels, where, label = gallery_page(store, 0)
    assert seeds(rels) == [6, 5, 4, 3, 2, 1, 0]
    assert [rel.split("/")[0] for rel in rels] == ["txt2img", "img2img", "img2img", "txt2img", "img2img",
                                                   "txt2img", "txt2img"]
    assert [caption for _thumb, caption in shown[:2]] == ["txt2img · 2026-12-01 · seed 6",
                                                          "img2img · 2026-12-01 · seed 5"]
    assert number == 0 and label == "Page 1 of 1" and "(7 images)" in where and "Showing" not in where


def test_the_filter_shows_one_kind_in_the_same_order(store: OutputStore) -> None:
    _number, shown, rels, where, _label = gallery_page(store, 0, "img2img")
    assert seeds(rels) == [5, 4, 2] and all(rel.startswith("img2img/2026-12-01/") for rel in rels)
    assert len(shown) == 3 and "(7 images)" in where and "Showing img2img: 3 images." in where
    assert seeds(gallery_page(store, 0, "txt2img")[2]) == [6, 3, 1, 0]
    assert gallery_page(store, 5, "txt2img")[0] == 0  # past the last page: back to the last one


def test_a_filter_with_more_than_one_page_pages_within_its_kind(tmp_path: Path) -> None:
    store = OutputStore(tmp_path)
    image = Image.new("RGB", (8, 8))
    for seed in range(PER_PAGE + 2):
        store.save(image, "", seed=seed, kind="img2img" if seed % 2 else "txt2img", when=DAY)
    number, _shown, rels, _where, label = gallery_page(store, 1, SHOW_ALL)
    assert (number, label, seeds(rels)) == (1, "Page 2 of 2", [1, 0])
    number, _shown, rels, _where, label = gallery_page(store, 1, "img2img")
    assert (number, label, len(rels)) == (0, "Page 1 of 1", (PER_PAGE + 2) // 2)


def test_an_unknown_filter_is_refused_with_the_choices(store: OutputStore) -> None:
    with pytest.raises(gr.Error, match="Show: 'extras' is not a choice; use one of All, txt2img, img2img, "
                                       "extras-images, txt2img-grids, img2img-grids"):
        gallery_page(store, 0, "extras")
    assert FILTERS == ("All", "txt2img", "img2img", "extras-images", "txt2img-grids", "img2img-grids")


def test_grids_have_their_own_filters(store: OutputStore) -> None:
    store.save(Image.new("RGB", (16, 16)), "p\nSeed: 3", seed=3, kind="txt2img-grids", when=DAY)
    store.save(Image.new("RGB", (16, 16)), "p\nSeed: 4", seed=4, kind="img2img-grids", when=DAY)
    for kind in ("txt2img-grids", "img2img-grids"):
        _number, _shown, rels, _where, _label = gallery_page(store, 0, kind)
        assert len(rels) == 1 and rels[0].startswith(f"{kind}/2026-12-01/"), kind


def test_the_tab_wires_the_filter_into_paging_and_delete(tmp_path: Path) -> None:
    """Scripts browse with /gallery_page(page, show) and delete with /gallery_delete(path, page, show)."""
    from sdlocal.services import build_services
    from sdlocal.settings import Settings
    from sdlocal.ui.app import build_ui

    services = build_services(Settings(data_dir=tmp_path))
    try:
        blocks = build_ui(services)
        named = {fn.api_name: fn for fn in blocks.fns.values() if fn.api_name}
        assert [block.label for block in named["gallery_page"].inputs] == ["Page number", "Show"]
        assert [block.label for block in named["gallery_delete"].inputs] == ["Chosen path", "Page number", "Show"]
        show = named["gallery_page"].inputs[1]
        assert [value for _label, value in show.choices] == list(FILTERS) and show.value == SHOW_ALL
        services.store.save(Image.new("RGB", (8, 8)), "", seed=1, kind="txt2img")
        services.store.save(Image.new("RGB", (8, 8)), "", seed=2, kind="img2img")
        assert seeds(named["gallery_page"].fn(0, "img2img")[2]) == [2]
        assert seeds(named["gallery_page"].fn(0)[2]) == [2, 1]  # the filter's default: all kinds
    finally:
        services.close()


def test_extras_upscales_have_their_own_filter_and_no_seed_caption(store: OutputStore) -> None:
    store.save(Image.new("RGB", (16, 16)), "p\nSeed: 9", seed=None, kind="extras-images", when=DAY)
    assert "extras-images" in FILTERS
    _number, shown, rels, _where, _label = gallery_page(store, 0, "extras-images")
    assert [caption for _thumb, caption in shown] == ["extras-images · 2026-12-01"]
    assert rels[0].startswith("extras-images/2026-12-01/") and rels[0].endswith("00007.png")
