"""The LoRA panel under the prompts of the Generate and img2img tabs, as A1111's "Lora" extra-networks tab.

Cards (a ``gr.Gallery``: preview, and a caption with the alias, family and trigger words) for the LoRAs that fit
the loaded model's family, a search box, an "All families" box and a refresh button; the files that cannot be used
are listed apart with the reason, so a file that has no card is never a mystery. A click on a card writes
``<lora:alias:1>`` into the tab's prompt, and a second click takes it out again (A1111's toggle). Discovery is the
engine's (``Services.loras``); this module only filters, lays out and edits the prompt text. The gallery is filled
when the accordion opens, not when the page loads, so a page that never opens it never scans the folders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from sdlocal.engine.networks.folders import OWN_LORAS, lora_dirs
from sdlocal.engine.networks.lora import FAMILY_LABELS, LoraFile
from sdlocal.ui.common import error_text

CARD_COLUMNS = 3
CARD_ROW_PX = 175  # a row of cards in the tab's form column; past MAX_CARD_ROWS rows the gallery scrolls
MAX_CARD_ROWS = 4
TRIGGER_WORDS_SHOWN = 5  # on a card; the file may list hundreds of training tags
THUMBNAIL_SIDE = 256
PLACEHOLDER_COLOUR = (120, 124, 134)
SEPARATOR = " "  # A1111's default "extra_networks_add_text_separator"
DEFAULT_MULTIPLIER = "1"  # A1111's default "extra_networks_default_multiplier", written as A1111 writes it
_TAG_UNSAFE = re.compile(r"[:<>=]")  # a name with these would end the tag early or read as "te=0.5"


@dataclass
class LoraPanel:
    """The panel's components; ``tags`` (gr.State) holds the tag name of each card shown, in card order."""

    accordion: Any = None
    search: Any = None
    all_families: Any = None
    refresh: Any = None
    status: Any = None
    gallery: Any = None
    unsupported: Any = None
    tags: Any = None


# ---------------------------------------------------------------------------- filtering and cards
def fits_family(lora: LoraFile, family: str | None) -> bool:
    """A LoRA fits when its family is the model's, when its family is not known (it may fit: a file with unusual
    shapes, a tiny test model), or when no model is loaded yet (nothing to compare with: all are shown)."""
    return family is None or lora.family is None or lora.family == family


def matches(lora: LoraFile, query: str) -> bool:
    """Case-insensitive search in the name, the alias and the trigger words; an empty query matches every file."""
    needle = (query or "").strip().lower()
    if not needle:
        return True
    return any(needle in text.lower() for text in (lora.name, lora.alias, *lora.trigger_words))


def visible_loras(loras: list[LoraFile], family: str | None, all_families: bool, query: str) -> list[LoraFile]:
    """The usable LoRAs that get a card: those matching ``query``, of the model's family unless ``all_families``."""
    return [lora for lora in loras if lora.usable and matches(lora, query)
            and (all_families or fits_family(lora, family))]


def family_label(family: str | None) -> str:
    return FAMILY_LABELS.get(family, family) if family else "family not known"


def card_caption(lora: LoraFile) -> str:
    """``alias (name) · SD 1.x · word, word``: the name only when it differs from the alias, at most
    ``TRIGGER_WORDS_SHOWN`` trigger words (the most frequent ones: the file lists them in that order)."""
    title = lora.alias if lora.alias == lora.name else f"{lora.alias} ({lora.name})"
    parts = [title, family_label(lora.family)]
    words = [word for word in lora.trigger_words if word][:TRIGGER_WORDS_SHOWN]
    if words:
        parts.append(", ".join(words))
    return " · ".join(parts)


def tag_names(loras: list[LoraFile]) -> dict[str, str]:
    """The name to write in ``<lora:NAME:1>`` for each usable file (by ``LoraFile.name``): the alias, as A1111
    writes it, unless it would find another file or not read back as a name.

    ``loras`` is every file found, usable or not. The engine finds a tag's LoRA by name, then file stem, then alias
    (without case; at each step a usable file first), so an alias that two usable files share, or that is another
    file's name or stem, would find the wrong file: such a LoRA is written by its name (its path below the folder),
    which is unique. So is an alias the tag parser would cut (``:``, ``<``, ``>``, ``=``, spaces around it).
    """
    usable = [lora for lora in loras if lora.usable]
    aliases: dict[str, int] = {}
    for lora in usable:
        aliases[lora.alias.casefold()] = aliases.get(lora.alias.casefold(), 0) + 1
    names = {}
    for lora in usable:
        alias = lora.alias.casefold()
        taken = any(alias in (other.name.casefold(), other.path.stem.casefold())
                    for other in loras if other is not lora)
        unsafe = not lora.alias.strip() or lora.alias != lora.alias.strip() or _TAG_UNSAFE.search(lora.alias)
        names[lora.name] = lora.name if unsafe or aliases[alias] > 1 or taken else lora.alias
    return names


def unsupported_markdown(loras: list[LoraFile]) -> str:
    """The files that get no card and why (not a LoRA, corrupt, a ``.pt`` refused...); "" when there are none."""
    bad = [lora for lora in loras if not lora.usable]
    if not bad:
        return ""
    lines = [f"- `{lora.name}`: {lora.reason or 'not a LoRA sdlocal can read'}" for lora in bad]
    return f"**{len(bad)} file{'s' if len(bad) != 1 else ''} in the LoRA folders cannot be used:**\n" + "\n".join(lines)


def status_text(loras: list[LoraFile], shown: int, family: str | None, all_families: bool, query: str,
                folder: Path | str) -> str:
    """One line over the cards: how many are shown and for which family, or why none is (no files, no match,
    all for other families: then how to see them)."""
    usable = [lora for lora in loras if lora.usable]
    if not usable:
        return f"No LoRAs found: put .safetensors files in `{folder}` and press ↻ Refresh."
    matching = [lora for lora in usable if matches(lora, query)]
    hidden = 0 if all_families else len([lora for lora in matching if not fits_family(lora, family)])
    scope = "of every family" if all_families or family is None else f"for {family_label(family)} (the loaded model)"
    if not matching:
        return f"No LoRA matches “{query.strip()}”."
    if not shown:
        return (f"No LoRA here is for {family_label(family)} (the loaded model); {hidden} for other families "
                "are hidden: tick “All families” to see them.")
    text = f"{shown} LoRA{'s' if shown != 1 else ''} {scope}; click a card to add it to the prompt, again to remove it."
    if hidden:
        text += f" {hidden} for other families are hidden (“All families” shows them)."
    return text


# ---------------------------------------------------------------------------- the prompt
def lora_tag(name: str, multiplier: str = DEFAULT_MULTIPLIER) -> str:
    return f"<lora:{name}:{multiplier}>"


def _tag_pattern(names: list[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(name) for name in names if name)
    return re.compile(rf"\s*<(?:lora|lyco):(?:{alternatives})(?::[^>]*)?>", re.IGNORECASE)


def toggle_lora(prompt: str | None, name: str, *also: str) -> str:
    """The prompt with ``<lora:name:1>`` appended after a space, or, when a tag for that LoRA is already there (any
    weight, ``<lora:`` or ``<lyco:``, by ``name`` or one of ``also``; case-insensitive, as the engine finds LoRAs),
    with every such tag taken out instead: A1111's card toggle."""
    text = prompt or ""
    pattern = _tag_pattern([name, *also])
    if pattern.search(text):
        return pattern.sub("", text).strip()
    text = text.rstrip()
    return f"{text}{SEPARATOR}{lora_tag(name)}" if text else lora_tag(name)


# ---------------------------------------------------------------------------- preview images
@lru_cache(maxsize=1)
def placeholder() -> Image.Image:
    """A neutral card for a LoRA without a preview image."""
    image = Image.new("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE), PLACEHOLDER_COLOUR)
    # in the upper third: the caption covers the lower half of a card
    ImageDraw.Draw(image).text((THUMBNAIL_SIDE // 2, THUMBNAIL_SIDE // 3), "no preview", fill=(235, 235, 240),
                               anchor="mm", font=ImageFont.load_default(size=32))
    return image


def card_image(preview: Path | None) -> Image.Image:
    """The preview scaled to a thumbnail (kept while the file is unchanged), or the placeholder when there is none
    or it cannot be read: a broken preview never hides its LoRA."""
    if preview is None:
        return placeholder()
    try:
        stat = Path(preview).stat()
    except OSError:
        return placeholder()
    return _thumbnail(str(preview), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=512)
def _thumbnail(path: str, _mtime_ns: int, _size: int) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            return image.convert("RGB")
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        return placeholder()


# ---------------------------------------------------------------------------- layout and events
def lora_panel(ui: Any) -> LoraPanel:
    """Place the panel (a closed "LoRA" accordion) in the caller's column; ``ui`` is the tab's ``FormParts``, for
    its elem_id prefix (``sd-lora-...`` on the Generate tab, ``sd-i2i-lora-...`` on img2img)."""
    panel = LoraPanel()
    with gr.Accordion("LoRA", open=False, elem_id=ui.eid("lora-panel")) as panel.accordion:
        with gr.Row(equal_height=True):
            panel.search = gr.Textbox(label="Search LoRAs", placeholder="name, alias or trigger word", scale=4,
                                      elem_id=ui.eid("lora-search"))
            # "All families": also the LoRAs made for another model family than the loaded one
            panel.all_families = gr.Checkbox(label="All families", value=False, scale=1,
                                             elem_id=ui.eid("lora-all-families"))
            panel.refresh = gr.Button("↻ Refresh", scale=0, min_width=110, size="sm", elem_id=ui.eid("lora-refresh"))
        panel.status = gr.Markdown("", label="LoRA status", elem_id=ui.eid("lora-status"))
        # a click selects a card (no enlarged preview): ``select`` then fires on every click, the same card too
        panel.gallery = gr.Gallery(label="LoRAs", show_label=False, columns=CARD_COLUMNS, fit_columns=False,
                                   allow_preview=False, object_fit="cover", interactive=False, buttons=[],
                                   visible=False, elem_id=ui.eid("loras"), elem_classes=["sd-lora-cards"])
        panel.unsupported = gr.Markdown("", label="Unusable LoRA files", visible=False, elem_classes=["sd-warning"],
                                        elem_id=ui.eid("lora-unsupported"))
        panel.tags = gr.State([])
    return panel


def lora_folder(services: Any) -> Path:
    """Where to put LoRA files, for the empty panel's message: the first LoRA folder there is, else sdlocal's own."""
    config = getattr(services.engine, "config", None)
    if config is None:
        return Path("models") / OWN_LORAS
    found = lora_dirs(config)
    return found[0] if found else config.own_models_dir / OWN_LORAS


def panel_updates(services: Any, query: str | None, all_families: bool, refresh: bool = False) -> list[Any]:
    """Updates for (gallery, tags, status, unsupported list): the cards for the search and the family filter.

    A discovery error is shown in the status line; the panel never raises into the page.
    """
    try:
        loras = list(services.loras(refresh=refresh))
        family = services.loaded_family()
    except Exception as exc:  # noqa: BLE001 - a scan error is a message, never an error page
        return [gr.update(value=[], visible=False), [], f"⚠ Could not list the LoRAs: {error_text(exc)}",
                gr.update(value="", visible=False)]
    query = query or ""
    shown = visible_loras(loras, family, bool(all_families), query)
    names = tag_names(loras)
    cards = [(card_image(lora.preview), card_caption(lora)) for lora in shown]
    bad = unsupported_markdown(loras)
    return [gr.update(value=cards, visible=bool(cards), height=gallery_height(len(cards))),
            [(names[lora.name], lora.name) for lora in shown],
            status_text(loras, len(shown), family, bool(all_families), query, lora_folder(services)),
            gr.update(value=bad, visible=bool(bad))]


def gallery_height(cards: int) -> int:
    """Pixels for the gallery: as many rows as the cards need, up to ``MAX_CARD_ROWS`` (then it scrolls). Gradio's
    "auto" height keeps room for several rows, a large empty box under one or two cards."""
    rows = min(max(-(-cards // CARD_COLUMNS), 1), MAX_CARD_ROWS)
    return rows * CARD_ROW_PX + 20


def on_card(tags: list[Any], prompt: str | None, index: Any) -> str:
    """The prompt after a click on card ``index``: its tag added or, when there already, removed."""
    if not isinstance(index, int) or not 0 <= index < len(tags or []):
        return prompt or ""
    tag, name = tags[index]
    return toggle_lora(prompt, tag, name)


def wire_lora_panel(panel: LoraPanel, services: Any, prompt: Any) -> None:
    """Fill the cards when the accordion opens, the search or the family box changes, or on ↻ Refresh (which
    rescans the folders); a click on a card edits ``prompt`` (that tab's prompt box)."""
    inputs, outputs = [panel.search, panel.all_families], [panel.gallery, panel.tags, panel.status, panel.unsupported]

    def show(query: str, all_families: bool) -> list[Any]:
        return panel_updates(services, query, all_families)

    def rescan(query: str, all_families: bool) -> list[Any]:
        return panel_updates(services, query, all_families, refresh=True)

    def select(tags: list[Any], text: str, evt: gr.SelectData) -> str:
        return on_card(tags, text, evt.index)

    panel.accordion.expand(show, inputs, outputs, api_visibility="private")
    panel.search.input(show, inputs, outputs, trigger_mode="always_last", api_visibility="private")
    panel.all_families.input(show, inputs, outputs, api_visibility="private")
    panel.refresh.click(rescan, inputs, outputs, api_visibility="private")
    panel.gallery.select(select, [panel.tags, prompt], prompt, api_visibility="private")
