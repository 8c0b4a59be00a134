"""The LoRA panel: which cards it shows (family, search), what they say, what a click does to the prompt, the
unusable files listed apart, the empty panel's message, and the block on both tabs. No server, no torch."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.networks.lora import LoraFile
from sdlocal.services import Services
from sdlocal.ui.lora_panel import (
    THUMBNAIL_SIDE,
    card_caption,
    card_image,
    gallery_height,
    on_card,
    panel_updates,
    placeholder,
    status_text,
    tag_names,
    toggle_lora,
    unsupported_markdown,
    visible_loras,
)


def lora(name: str, family: str | None = "sd1", alias: str | None = None, words: tuple[str, ...] = (),
         reason: str = "", preview: Path | None = None) -> LoraFile:
    return LoraFile(name=name, path=Path(f"/loras/{name}.safetensors"), alias=alias or name.rsplit("/", 1)[-1],
                    format="" if reason else "lora", family=family, rank=4, trigger_words=words, reason=reason,
                    preview=preview)


LIBRARY = [
    lora("pixelart", "sd1", words=("pixel", "retro")),
    lora("styles/ink_v2", "sd1", alias="Ink Wash"),
    lora("xl/neon", "sdxl", words=("neon lights",)),
    lora("mystery", None),
    lora("broken", None, reason="the header is truncated (12 of 400 bytes)"),
]


def names(loras: list[LoraFile]) -> list[str]:
    return [item.name for item in loras]


# ---------------------------------------------------------------------------- which cards
def test_cards_are_the_loaded_familys_loras_and_those_of_unknown_family() -> None:
    assert names(visible_loras(LIBRARY, "sd1", False, "")) == ["pixelart", "styles/ink_v2", "mystery"]
    assert names(visible_loras(LIBRARY, "sdxl", False, "")) == ["xl/neon", "mystery"]


def test_all_families_and_no_model_loaded_show_every_usable_lora_but_never_an_unusable_one() -> None:
    every = ["pixelart", "styles/ink_v2", "xl/neon", "mystery"]
    assert names(visible_loras(LIBRARY, "sd1", True, "")) == every
    assert names(visible_loras(LIBRARY, None, False, "")) == every


@pytest.mark.parametrize(("query", "found"), [
    ("PIXEL", ["pixelart"]),  # the name, any case
    ("ink wash", ["styles/ink_v2"]),  # the alias
    ("styles/", ["styles/ink_v2"]),  # the folder part of the name
    ("Retro", ["pixelart"]),  # a trigger word
    ("  neon ", ["xl/neon"]),  # spaces around the query do not count
    ("watercolour", []),
])
def test_search_looks_in_name_alias_and_trigger_words(query: str, found: list[str]) -> None:
    assert names(visible_loras(LIBRARY, None, False, query)) == found


def test_search_still_respects_the_family_filter() -> None:
    assert names(visible_loras(LIBRARY, "sd1", False, "neon")) == []
    assert names(visible_loras(LIBRARY, "sd1", True, "neon")) == ["xl/neon"]


# ---------------------------------------------------------------------------- what a card says
def test_caption_has_alias_family_and_at_most_five_trigger_words() -> None:
    many = lora("tags", "sdxl", words=tuple(f"w{i}" for i in range(9)))
    assert card_caption(many) == "tags · SDXL · w0, w1, w2, w3, w4"
    assert card_caption(LIBRARY[0]) == "pixelart · SD 1.x · pixel, retro"
    assert card_caption(LIBRARY[1]) == "Ink Wash (styles/ink_v2) · SD 1.x"  # the name too when it differs
    assert card_caption(LIBRARY[3]) == "mystery · family not known"


def test_preview_becomes_a_thumbnail_and_a_missing_or_broken_one_the_placeholder(tmp_path: Path) -> None:
    big = tmp_path / "pixelart.preview.png"
    Image.new("RGB", (1024, 512), (200, 30, 30)).save(big)
    thumb = card_image(big)
    assert thumb.size == (THUMBNAIL_SIDE, THUMBNAIL_SIDE // 2)
    assert thumb.getpixel((10, 10)) == (200, 30, 30)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert card_image(broken) is placeholder()
    assert card_image(tmp_path / "gone.png") is placeholder()
    assert card_image(None) is placeholder()


def test_gallery_is_as_tall_as_its_rows_of_cards_up_to_four_then_scrolls() -> None:
    one_row = gallery_height(1)
    assert gallery_height(3) == one_row < gallery_height(4) < gallery_height(12) == gallery_height(300)


# ---------------------------------------------------------------------------- the prompt
def test_a_click_appends_the_tag_after_a_space_and_a_second_click_removes_it() -> None:
    assert toggle_lora("", "pixelart") == "<lora:pixelart:1>"
    added = toggle_lora("a castle, ", "pixelart")
    assert added == "a castle, <lora:pixelart:1>"
    assert toggle_lora(added, "pixelart") == "a castle,"
    assert toggle_lora("a castle <lora:ink:1>", "pixelart") == "a castle <lora:ink:1> <lora:pixelart:1>"


def test_a_click_removes_the_tag_wherever_it_is_at_any_weight_and_spelling() -> None:
    assert toggle_lora("<lora:PixelArt:0.6> a castle <lora:ink:1>", "pixelart") == "a castle <lora:ink:1>"
    assert toggle_lora("a castle <lyco:pixelart:0.5:0.2>, at dawn", "pixelart") == "a castle, at dawn"
    # by the file's name when the card writes its alias
    assert toggle_lora("a <lora:styles/ink_v2:1> wash", "Ink Wash", "styles/ink_v2") == "a wash"
    # a longer name that starts the same is another LoRA
    assert toggle_lora("a <lora:pixelart2:1>", "pixelart") == "a <lora:pixelart2:1> <lora:pixelart:1>"


def test_the_tag_is_the_alias_unless_it_would_find_another_file() -> None:
    loras = [lora("a/cat", alias="cat"), lora("b/cat", alias="cat"), lora("dog", alias="rex"), lora("rex"),
             lora("odd", alias="x:y"), lora("even", alias="te=1"), lora("plain", alias="Plain Style"),
             lora("owl", alias="Bird"), lora("sub/bird", reason="not a LoRA")]
    assert tag_names(loras) == {
        "a/cat": "a/cat", "b/cat": "b/cat",  # two files share the alias
        "dog": "dog",  # its alias is another file's name
        "rex": "rex", "odd": "odd", "even": "even",  # ':' would end the tag, '=' read as a te= weight
        "plain": "Plain Style",
        "owl": "owl",  # "bird" is the stem of another file, even one that cannot be used: the engine finds it first
    }


def test_on_card_toggles_the_clicked_cards_tag_and_ignores_a_stale_index() -> None:
    tags = [("pixelart", "pixelart"), ("Ink Wash", "styles/ink_v2")]
    assert on_card(tags, "a castle", 1) == "a castle <lora:Ink Wash:1>"
    assert on_card(tags, "a castle <lora:Ink Wash:1>", 1) == "a castle"
    assert on_card(tags, "a castle", 5) == "a castle"


# ---------------------------------------------------------------------------- messages
def test_unusable_files_are_listed_with_their_reason() -> None:
    text = unsupported_markdown(LIBRARY)
    assert "1 file in the LoRA folders cannot be used" in text
    assert "`broken`: the header is truncated (12 of 400 bytes)" in text
    assert unsupported_markdown(LIBRARY[:2]) == ""


def test_status_says_how_many_cards_and_why_there_are_none(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "Lora"
    assert status_text([], 0, "sd1", False, "", folder) == (
        f"No LoRAs found: put .safetensors files in `{folder}` and press ↻ Refresh.")
    assert status_text(LIBRARY[-1:], 0, "sd1", False, "", folder).startswith("No LoRAs found")
    assert status_text(LIBRARY, 0, "sd1", False, "watercolour", folder) == "No LoRA matches “watercolour”."
    sdxl_only = [lora("xl/neon", "sdxl")]
    assert "tick “All families” to see them" in status_text(sdxl_only, 0, "sd1", False, "", folder)
    text = status_text(LIBRARY, 3, "sd1", False, "", folder)
    assert text.startswith("3 LoRAs for SD 1.x (the loaded model)") and "1 for other families are hidden" in text


# ---------------------------------------------------------------------------- over the services
class FakeEngine:
    """``loras(refresh=...)`` as the engine's, recording each call."""

    def __init__(self, data_dir: Path, loras: list[LoraFile], family: str | None = "sd1") -> None:
        self.config = EngineConfig(data_dir=data_dir)
        self._loras, self.calls = loras, []
        self.current_model = SimpleNamespace(name="tiny", family=family) if family else None

    def loras(self, refresh: bool = False) -> list[LoraFile]:
        self.calls.append(refresh)
        return self._loras


def services_over(engine: FakeEngine) -> Services:
    return Services(settings=SimpleNamespace(), engine=engine, queue=None, store=None, presets=None, styles=object())


def test_services_list_loras_through_the_engine_and_give_the_loaded_family(tmp_path: Path) -> None:
    engine = FakeEngine(tmp_path, LIBRARY)
    services = services_over(engine)
    assert services.loras() == LIBRARY and services.loras(refresh=True) == LIBRARY
    assert engine.calls == [False, True]
    assert services.loaded_family() == "sd1"
    assert services_over(FakeEngine(tmp_path, [], family=None)).loaded_family() is None


def test_panel_updates_fill_cards_tags_status_and_unusable_list(tmp_path: Path) -> None:
    engine = FakeEngine(tmp_path, LIBRARY)
    gallery, tags, status, unusable = panel_updates(services_over(engine), "", False, refresh=True)
    assert [caption for _image, caption in gallery["value"]] == [
        "pixelart · SD 1.x · pixel, retro", "Ink Wash (styles/ink_v2) · SD 1.x", "mystery · family not known"]
    assert gallery["visible"] is True
    assert tags == [("pixelart", "pixelart"), ("Ink Wash", "styles/ink_v2"), ("mystery", "mystery")]
    assert status.startswith("3 LoRAs for SD 1.x")
    assert unusable["visible"] is True and "`broken`" in unusable["value"]
    assert engine.calls == [True]


def test_empty_panel_names_the_first_lora_folder(tmp_path: Path) -> None:
    (tmp_path / "models" / "Lora").mkdir(parents=True)
    gallery, tags, status, unusable = panel_updates(services_over(FakeEngine(tmp_path, [])), "", False)
    assert gallery["visible"] is False and tags == [] and unusable["visible"] is False
    assert status == f"No LoRAs found: put .safetensors files in `{tmp_path / 'models' / 'Lora'}` and press ↻ Refresh."


def test_a_discovery_error_is_a_message_in_the_panel(tmp_path: Path) -> None:
    engine = FakeEngine(tmp_path, [])
    engine.loras = lambda refresh=False: (_ for _ in ()).throw(PermissionError("models/Lora: permission denied"))
    gallery, tags, status, _unusable = panel_updates(services_over(engine), "", False)
    assert status.startswith("⚠ Could not list the LoRAs:") and "permission denied" in status
    assert gallery["visible"] is False and tags == []


# ---------------------------------------------------------------------------- the block on the page
def test_both_tabs_have_a_closed_lora_panel_whose_card_click_writes_their_own_prompt(tmp_path: Path) -> None:
    import gradio as gr

    from sdlocal.services import build_services
    from sdlocal.settings import Settings
    from sdlocal.ui.app import build_ui

    services = build_services(Settings(data_dir=tmp_path))
    try:
        blocks = build_ui(services)
    finally:
        services.close()
    by_id = {getattr(block, "elem_id", None): block for block in blocks.blocks.values()}
    for prefix in ("sd-", "sd-i2i-"):
        accordion, gallery = by_id[f"{prefix}lora-panel"], by_id[f"{prefix}loras"]
        assert isinstance(accordion, gr.Accordion) and accordion.label == "LoRA" and accordion.open is False
        assert isinstance(gallery, gr.Gallery) and gallery.allow_preview is False
        selects = [dep for dep in blocks.fns.values()
                   if any(target[0] == gallery._id and target[1] == "select" for target in dep.targets)]
        assert len(selects) == 1
        assert [block.elem_id for block in selects[0].outputs] == [f"{prefix}prompt"]
