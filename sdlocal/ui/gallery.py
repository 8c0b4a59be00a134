"""The Gallery tab: every saved image, newest first, in pages of cached thumbnails.

Listing comes from ``OutputStore.list`` (directory names only, cached) and thumbnails from
``OutputStore.thumbnail`` (made once, kept until the image changes), so a page of 10,000 images opens no PNG
except the one selected, whose parameters are read from its text chunk.
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from sdlocal.outputs import OutputError
from sdlocal.ui.generate import GenerateTab, fill_from_infotext

PER_PAGE = 48


def build_gallery_tab(services: Any, generate: GenerateTab, tabs: Any) -> Any:
    store = services.store

    with gr.Tab("Gallery", id="gallery") as tab:
        folder = gr.Markdown("", label="Folder", elem_id="sd-gallery-folder")
        with gr.Row(equal_height=True):
            first = gr.Button("«", scale=0, min_width=48)
            prev = gr.Button("‹ Newer", scale=1)
            page_label = gr.Markdown("", label="Page", elem_id="sd-gallery-page")
            nxt = gr.Button("Older ›", scale=1)
            reload_btn = gr.Button("↻", scale=0, min_width=48, elem_id="sd-gallery-refresh")
        # Hidden components, not gr.State: Gradio leaves State out of the API, and scripts need the page number,
        # the relative paths of the page shown and the chosen path to browse, select and delete by path.
        page = gr.Number(0, precision=0, visible=False, label="Page number")
        items = gr.JSON([], visible=False, label="Paths")  # relpaths shown, in order
        chosen = gr.Textbox("", visible=False, label="Chosen path")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                # fit_columns=False: a page with one image keeps a thumbnail-sized tile instead of filling the grid
                gallery = gr.Gallery(label="Saved images", columns=6, height=620, allow_preview=False, preview=False,
                                     object_fit="cover", fit_columns=False, elem_id="sd-gallery")
            with gr.Column(scale=2):
                picked = gr.Image(label="Selected", interactive=False, height=320, elem_id="sd-gallery-picked")
                params = gr.Textbox(label="Parameters", lines=6, interactive=False, elem_id="sd-gallery-params")
                path_md = gr.Markdown("", label="File")
                with gr.Row():
                    reuse = gr.Button("Reuse parameters", variant="primary", elem_id="sd-gallery-reuse")
                    delete = gr.Button("Delete", variant="stop", elem_id="sd-gallery-delete")
                with gr.Row(visible=False) as confirm_row:
                    gr.Markdown("Delete this image for good?")
                    confirm = gr.Button("Yes, delete", variant="stop", size="sm", elem_id="sd-gallery-confirm")
                    cancel = gr.Button("Cancel", size="sm")
        select_api = gr.Button(visible=False)  # lets scripts select an image by its path (api_name below)

    def show_page(number: int):
        """One page of thumbnails; a page past the end snaps back to the last page (after deletions)."""
        pages = store.pages(PER_PAGE)
        number = max(0, min(int(number or 0), pages - 1))
        listed = store.list(number, PER_PAGE)
        shown, rels = [], []
        for item in listed:
            try:
                shown.append((str(store.thumbnail(item.path)), f"{item.date} · seed {item.seed}"))
                rels.append(item.relpath)
            except (OSError, OutputError, ValueError):
                continue  # a file removed or damaged since the listing: skip it
        total = store.count()
        where = f"Images are saved in `{store.root}` ({total:,} image{'s' if total != 1 else ''})."
        label = f"Page {number + 1} of {pages}"
        return number, shown, rels, where, label

    page_outputs = [page, gallery, items, folder, page_label]
    tab.select(show_page, inputs=page, outputs=page_outputs, api_visibility="private")
    reload_btn.click(show_page, inputs=page, outputs=page_outputs, api_name="gallery_page")
    first.click(lambda: show_page(0), outputs=page_outputs, api_visibility="private")
    prev.click(lambda n: show_page(n - 1), inputs=page, outputs=page_outputs, api_visibility="private")
    nxt.click(lambda n: show_page(n + 1), inputs=page, outputs=page_outputs, api_visibility="private")

    def on_select(rels: list[str], evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else 0
        if index >= len(rels):
            return "", None, "", "", gr.update(visible=False)
        return select_item(rels[index])

    def select_item(rel: str):
        try:
            path = store.resolve(rel)
            text = store.read_parameters(rel) or "(this image has no parameters)"
        except (OSError, OutputError, ValueError) as exc:
            gr.Warning(f"Cannot open {rel}: {exc}")
            return "", None, "", "", gr.update(visible=False)
        return rel, str(path), text, f"`{html.escape(str(path))}`", gr.update(visible=False)

    gallery.select(on_select, inputs=items, outputs=[chosen, picked, params, path_md, confirm_row],
                   api_visibility="private")
    select_api.click(select_item, inputs=chosen, outputs=[chosen, picked, params, path_md, confirm_row],
                                   api_name="gallery_select")

    def on_reuse(text: str):
        if not text or text.startswith("(this image"):
            gr.Warning("Select an image with parameters first.")
            return [gr.update() for _ in range(len(generate.controls) + 2)]
        return [gr.Tabs(selected="generate"), *fill_from_infotext(services.engine, text)]

    reuse.click(on_reuse, inputs=params, outputs=[tabs, generate.model, *generate.controls],
                api_name="gallery_reuse")

    def ask_delete(rel: str):
        if not rel:
            gr.Warning("Select an image first.")
            return gr.update(visible=False)
        return gr.update(visible=True)

    delete.click(ask_delete, inputs=chosen, outputs=confirm_row, api_visibility="private")
    cancel.click(lambda: gr.update(visible=False), outputs=confirm_row, api_visibility="private")

    def do_delete(rel: str, number: int):
        try:
            store.delete(rel)
        except (OSError, OutputError) as exc:
            gr.Warning(str(exc))
            return ["", None, "", "", gr.update(visible=False), *show_page(number)]
        gr.Info(f"Deleted {rel}")
        return ["", None, "", "", gr.update(visible=False), *show_page(number)]

    confirm.click(do_delete, inputs=[chosen, page],
                  outputs=[chosen, picked, params, path_md, confirm_row, *page_outputs], api_name="gallery_delete")
    return tab
