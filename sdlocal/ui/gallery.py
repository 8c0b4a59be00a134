"""The Gallery tab: every saved image, txt2img and img2img together newest first, in pages of cached thumbnails.

A filter shows all images or one kind's (the ``outputs/<kind>`` folder, as A1111 names them); the order across
kinds comes from the store's per-day counter, so filtering and listing stay free of per-file ``stat`` calls.

Listing comes from ``OutputStore.list`` (directory names only, cached) and thumbnails from
``OutputStore.thumbnail`` (made once, kept until the image changes), so a page of 10,000 images opens no PNG
except the one selected, whose parameters are read from its text chunk.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from sdlocal.outputs import OutputError
from sdlocal.ui.common import infotext_updates
from sdlocal.ui.components import send_buttons_row
from sdlocal.ui.generate_layout import GenerateTab
from sdlocal.ui.hires import wire_reuse_hires
from sdlocal.ui.script_run import wire_reuse_script
from sdlocal.ui.send import SendTarget

PER_PAGE = 48
SHOW_ALL = "All"
# everything, or one outputs folder (the X/Y/Z plot and prompt matrix grids have folders of their own, as in A1111)
FILTERS = (SHOW_ALL, "txt2img", "img2img", "extras-images", "txt2img-grids", "img2img-grids")


@dataclass
class GalleryTab:
    """The tab's components; hidden ones carry the page number and paths for scripts (see ``_layout``)."""

    tab: Any = None
    folder: Any = None
    show: Any = None
    first: Any = None
    prev: Any = None
    page_label: Any = None
    nxt: Any = None
    reload: Any = None
    page: Any = None
    items: Any = None
    chosen: Any = None
    gallery: Any = None
    picked: Any = None
    params: Any = None
    path_md: Any = None
    reuse: Any = None
    send_img2img: Any = None
    send_inpaint: Any = None
    send_extras: Any = None
    delete: Any = None
    confirm_row: Any = None
    confirm: Any = None
    cancel: Any = None
    select_api: Any = None


def build_gallery_tab(services: Any, generate: GenerateTab, tabs: Any, send: SendTarget | None = None,
                      extras_send: Any = None) -> Any:
    """The tab; ``send`` is the img2img tab's SendTarget, ``extras_send`` the Extras tab's (``ExtrasSend``)."""
    ui = _layout()
    show_page = _wire_pages(ui, services.store)
    _wire_selection(ui, services, generate, tabs)
    if send is not None:
        _wire_send(ui, services.store, send)
    if extras_send is not None:
        extras_send.connect(ui.send_extras, lambda rel, text: _resolve(services.store, rel, text),
                            [ui.chosen, ui.params])
    _wire_delete(ui, services.store, show_page)
    return ui.tab


def _layout() -> GalleryTab:
    ui = GalleryTab()
    with gr.Tab("Gallery", id="gallery") as ui.tab:
        ui.folder = gr.Markdown("", label="Folder", elem_id="sd-gallery-folder")
        ui.show = gr.Radio(list(FILTERS), value=SHOW_ALL, label="Show", elem_id="sd-gallery-show")
        with gr.Row(equal_height=True):
            ui.first = gr.Button("«", scale=0, min_width=48)
            ui.prev = gr.Button("‹ Newer", scale=1)
            ui.page_label = gr.Markdown("", label="Page", elem_id="sd-gallery-page")
            ui.nxt = gr.Button("Older ›", scale=1)
            ui.reload = gr.Button("↻", scale=0, min_width=48, elem_id="sd-gallery-refresh")
        # Hidden components, not gr.State: Gradio leaves State out of the API, and scripts need the page number,
        # the relative paths of the page shown and the chosen path to browse, select and delete by path.
        ui.page = gr.Number(0, precision=0, visible=False, label="Page number")
        ui.items = gr.JSON([], visible=False, label="Paths")  # relpaths shown, in order
        ui.chosen = gr.Textbox("", visible=False, label="Chosen path")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                # fit_columns=False: a page with one image keeps a thumbnail-sized tile instead of filling the grid
                ui.gallery = gr.Gallery(label="Saved images", columns=6, height=620, allow_preview=False,
                                        preview=False, object_fit="cover", fit_columns=False, elem_id="sd-gallery")
            with gr.Column(scale=2):
                _selected_column(ui)
        ui.select_api = gr.Button(visible=False)  # lets scripts select an image by its path (api_name below)
    return ui


def _selected_column(ui: GalleryTab) -> None:
    ui.picked = gr.Image(label="Selected", interactive=False, height=320, elem_id="sd-gallery-picked")
    ui.params = gr.Textbox(label="Parameters", lines=6, interactive=False, elem_id="sd-gallery-params")
    ui.path_md = gr.Markdown("", label="File")
    with gr.Row():
        ui.reuse = gr.Button("Reuse parameters", variant="primary", elem_id="sd-gallery-reuse")
        ui.delete = gr.Button("Delete", variant="stop", elem_id="sd-gallery-delete")
    with gr.Row():
        ui.send_img2img, ui.send_inpaint = send_buttons_row("sd-gallery-")
        ui.send_extras = gr.Button("Send to extras", size="sm", elem_id="sd-gallery-send-extras")
    with gr.Row(visible=False) as ui.confirm_row:
        gr.Markdown("Delete this image for good?")
        ui.confirm = gr.Button("Yes, delete", variant="stop", size="sm", elem_id="sd-gallery-confirm")
        ui.cancel = gr.Button("Cancel", size="sm")


def gallery_page(store: Any, number: int, show: str = SHOW_ALL) -> tuple[int, list, list[str], str, str]:
    """One page of thumbnails for the filter ``show``; a page past the end snaps back to the last page.

    Returns the page number, (thumbnail, caption) pairs, the relative paths shown, the folder text and the
    page label. An unknown filter value (an old script) is refused with a message naming the choices.
    """
    if show not in FILTERS:
        raise gr.Error(f"Show: {show!r} is not a choice; use one of {', '.join(FILTERS)}")
    kind = None if show == SHOW_ALL else show
    pages = store.pages(PER_PAGE, kind=kind)
    number = max(0, min(int(number or 0), pages - 1))
    shown, rels = [], []
    for item in store.list(number, PER_PAGE, kind=kind):
        try:
            seed = f" · seed {item.seed}" if item.seed is not None else ""  # an Extras upscale has no seed
            shown.append((str(store.thumbnail(item.path)), f"{item.kind} · {item.date}{seed}"))
            rels.append(item.relpath)
        except (OSError, OutputError, ValueError):
            continue  # a file removed or damaged since the listing: skip it
    total = store.count()
    where = f"Images are saved in `{store.root}` ({total:,} image{'s' if total != 1 else ''})."
    if kind is not None:
        matching = store.count(kind=kind)
        where += f" Showing {kind}: {matching:,} image{'s' if matching != 1 else ''}."
    return number, shown, rels, where, f"Page {number + 1} of {pages}"


def _wire_pages(ui: GalleryTab, store: Any) -> Any:
    def show_page(number: int, show: str = SHOW_ALL):
        return gallery_page(store, number, show)

    outputs = page_outputs(ui)
    inputs = [ui.page, ui.show]
    ui.tab.select(show_page, inputs=inputs, outputs=outputs, api_visibility="private")
    ui.reload.click(show_page, inputs=inputs, outputs=outputs, api_name="gallery_page")
    ui.show.change(lambda show: show_page(0, show), inputs=ui.show, outputs=outputs, api_visibility="private")
    ui.first.click(lambda show: show_page(0, show), inputs=ui.show, outputs=outputs, api_visibility="private")
    ui.prev.click(lambda n, show: show_page(n - 1, show), inputs=inputs, outputs=outputs, api_visibility="private")
    ui.nxt.click(lambda n, show: show_page(n + 1, show), inputs=inputs, outputs=outputs, api_visibility="private")
    return show_page


def page_outputs(ui: GalleryTab) -> list[Any]:
    return [ui.page, ui.gallery, ui.items, ui.folder, ui.page_label]


def _wire_selection(ui: GalleryTab, services: Any, generate: GenerateTab, tabs: Any) -> None:
    store = services.store

    def select_item(rel: str):
        try:
            path = store.resolve(rel)
            text = store.read_parameters(rel) or "(this image has no parameters)"
        except (OSError, OutputError, ValueError) as exc:
            gr.Warning(f"Cannot open {rel}: {exc}")
            return "", None, "", "", gr.update(visible=False)
        return rel, str(path), text, f"`{html.escape(str(path))}`", gr.update(visible=False)

    def on_select(rels: list[str], evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else 0
        if index >= len(rels):
            return "", None, "", "", gr.update(visible=False)
        return select_item(rels[index])

    def on_reuse(text: str):
        if not text or text.startswith("(this image"):
            gr.Warning("Select an image with parameters first.")
            return [gr.update() for _ in range(len(generate.controls) + 2)]
        return [gr.Tabs(selected="generate"), *infotext_updates(services.engine, text)]

    selected = [ui.chosen, ui.picked, ui.params, ui.path_md, ui.confirm_row]
    ui.gallery.select(on_select, inputs=ui.items, outputs=selected, api_visibility="private")
    ui.select_api.click(select_item, inputs=ui.chosen, outputs=selected, api_name="gallery_select")
    ui.reuse.click(on_reuse, inputs=ui.params, outputs=[tabs, generate.model, *generate.controls],
                   api_name="gallery_reuse")
    if generate.hires is not None:  # and the Hires fix section, from the text's Hires keys
        wire_reuse_hires(ui.reuse, [ui.params], generate.hires,
                         pick=lambda text: "" if (text or "").startswith("(this image") else text)
    if generate.scripts is not None:  # and an X/Y/Z grid's axes
        wire_reuse_script(ui.reuse, [ui.params], generate.scripts, services,
                          lambda text: "" if (text or "").startswith("(this image") else text)


def _wire_send(ui: GalleryTab, store: Any, send: SendTarget) -> None:
    """"Send to img2img" / "Send to inpaint": the selected file, with its parameters."""
    def pick(rel: str, text: str) -> tuple[str | None, str]:
        return _resolve(store, rel, text)

    for button, target in ((ui.send_img2img, "img2img"), (ui.send_inpaint, "inpaint")):
        send.connect(button, pick, [ui.chosen, ui.params], target)


def _wire_delete(ui: GalleryTab, store: Any, show_page: Any) -> None:
    def ask_delete(rel: str):
        if not rel:
            gr.Warning("Select an image first.")
            return gr.update(visible=False)
        return gr.update(visible=True)

    def do_delete(rel: str, number: int, show: str = SHOW_ALL):
        try:
            store.delete(rel)
        except (OSError, OutputError) as exc:
            gr.Warning(str(exc))
            return ["", None, "", "", gr.update(visible=False), *show_page(number, show)]
        gr.Info(f"Deleted {rel}")
        return ["", None, "", "", gr.update(visible=False), *show_page(number, show)]

    ui.delete.click(ask_delete, inputs=ui.chosen, outputs=ui.confirm_row, api_visibility="private")
    ui.cancel.click(lambda: gr.update(visible=False), outputs=ui.confirm_row, api_visibility="private")
    ui.confirm.click(do_delete, inputs=[ui.chosen, ui.page, ui.show],
                     outputs=[ui.chosen, ui.picked, ui.params, ui.path_md, ui.confirm_row, *page_outputs(ui)],
                     api_name="gallery_delete")


def _resolve(store: Any, rel: str, text: str) -> tuple[str | None, str]:
    """The selected file's path (None when it is gone or outside the outputs) and its parameters text."""
    if not rel:
        return None, ""
    try:
        path = str(store.resolve(rel))
    except (OSError, OutputError, ValueError):
        return None, ""
    return path, "" if (text or "").startswith("(this image") else text
