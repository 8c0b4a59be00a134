"""The Extras tab's components, laid out as A1111's; ``extras.py`` wires them to handlers.

Where the pictures come from ("Single Image", "Batch Process", "Batch from Directory") and how they are resized
("Scale by", "Scale to") are sub-tabs; which one is open is kept in a ``gr.State`` that the handler reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from sdlocal.engine.upscalers import BUILTIN_UPSCALERS

SOURCES = ("Single Image", "Batch Process", "Batch from Directory")
RESIZE_TABS = ("Scale by", "Scale to")  # the request's resize_mode names (the API's 0 / 1)


@dataclass
class ExtrasTab:
    """Every component of the tab; ``load`` is (page-load handler, its outputs) for the app's Blocks.load."""

    tab: Any = None
    source_tabs: Any = None  # the gr.Tabs of the three sources (for "Send to extras")
    source: Any = None  # gr.State: the source sub-tab open, one of SOURCES
    image: Any = None
    files: Any = None
    input_dir: Any = None
    output_dir: Any = None
    resize_mode: Any = None  # gr.State: one of RESIZE_TABS
    scale: Any = None
    width: Any = None
    height: Any = None
    crop: Any = None
    upscaler_1: Any = None
    upscaler_2: Any = None
    upscaler_2_visibility: Any = None
    generate: Any = None
    interrupt: Any = None
    progress: Any = None
    error: Any = None
    gallery: Any = None
    info: Any = None
    load: tuple[Any, list[Any]] | None = None
    send: Any = None  # "Send to extras" (``extras.ExtrasSend``), for the tabs with results

    @property
    def inputs(self) -> list[Any]:
        """The handler's inputs, in ``extras.run``'s order."""
        return [self.source, self.image, self.files, self.input_dir, self.output_dir, self.resize_mode, self.scale,
                self.width, self.height, self.crop, self.upscaler_1, self.upscaler_2, self.upscaler_2_visibility]


def build_layout() -> ExtrasTab:
    """Place the tab's components (inside the caller's ``gr.Tabs``) and return them."""
    ui = ExtrasTab()
    with gr.Tab("Extras", id="extras") as ui.tab:
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=360):
                _sources(ui)
                _resize(ui)
                _upscalers(ui)
                with gr.Row():
                    ui.generate = gr.Button("Generate", variant="primary", scale=3, elem_id="sd-extras-generate",
                                            elem_classes=["sd-generate-button"])
                    ui.interrupt = gr.Button("Interrupt", variant="stop", scale=1, elem_id="sd-extras-interrupt")
            with gr.Column(scale=6, min_width=360):
                ui.progress = gr.HTML("", label="Progress", elem_id="sd-extras-progress")
                ui.error = gr.HTML("", label="Error", elem_id="sd-extras-error")
                ui.gallery = gr.Gallery(label="Images", columns=2, height=520, object_fit="contain", preview=True,
                                        elem_id="sd-extras-results", format="png")
                ui.info = gr.HTML("", label="Postprocessing", elem_id="sd-extras-info")
    return ui


def _sources(ui: ExtrasTab) -> None:
    ui.source = gr.State(SOURCES[0])
    with gr.Tabs(selected="extras-single") as ui.source_tabs:
        with gr.Tab(SOURCES[0], id="extras-single") as single:
            # the uploaded file itself (image_mode None: Gradio hands over its path unconverted), so the
            # picture's own parameters reach the saved copy
            ui.image = gr.Image(label="Source", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                height=360, elem_id="sd-extras-image")
        with gr.Tab(SOURCES[1], id="extras-batch") as batch:
            ui.files = gr.File(label="Batch Process", file_count="multiple", type="filepath",
                               file_types=["image"], elem_id="sd-extras-files")
        with gr.Tab(SOURCES[2], id="extras-folder") as folder:
            ui.input_dir = gr.Textbox("", label="Input directory", placeholder="A folder on this computer",
                                      elem_id="sd-extras-input-dir")
            ui.output_dir = gr.Textbox("", label="Output directory",
                                       placeholder="Leave blank to save into the outputs folder",
                                       info="The pictures go under <folder>/extras-images/YYYY-MM-DD/.",
                                       elem_id="sd-extras-output-dir")
    for name, tab in zip(SOURCES, (single, batch, folder), strict=True):
        tab.select(lambda name=name: name, outputs=ui.source, api_visibility="private")


def _resize(ui: ExtrasTab) -> None:
    ui.resize_mode = gr.State(RESIZE_TABS[0])
    with gr.Tabs():
        with gr.Tab(RESIZE_TABS[0], id="extras-scale-by") as scale_by:
            ui.scale = gr.Slider(1, 8, value=2, step=0.05, label="Resize", elem_id="sd-extras-scale")
        with gr.Tab(RESIZE_TABS[1], id="extras-scale-to") as scale_to:
            with gr.Row():
                ui.width = gr.Number(label="Width", value=512, precision=0, elem_id="sd-extras-width")
                ui.height = gr.Number(label="Height", value=512, precision=0, elem_id="sd-extras-height")
                ui.crop = gr.Checkbox(label="Crop to fit", value=True, elem_id="sd-extras-crop")
    for name, tab in zip(RESIZE_TABS, (scale_by, scale_to), strict=True):
        tab.select(lambda name=name: name, outputs=ui.resize_mode, api_visibility="private")


def _upscalers(ui: ExtrasTab) -> None:
    # Filled as the page opens (the scan may read model files); the engine checks the names itself.
    choices = list(BUILTIN_UPSCALERS)
    with gr.Row():
        ui.upscaler_1 = gr.Dropdown(label="Upscaler 1", choices=choices, value="None", allow_custom_value=True,
                                    elem_id="sd-extras-upscaler-1")
        ui.upscaler_2 = gr.Dropdown(label="Upscaler 2", choices=choices, value="None", allow_custom_value=True,
                                    elem_id="sd-extras-upscaler-2")
    ui.upscaler_2_visibility = gr.Slider(0, 1, value=0, step=0.001, label="Upscaler 2 visibility",
                                         elem_id="sd-extras-upscaler-2-visibility")
