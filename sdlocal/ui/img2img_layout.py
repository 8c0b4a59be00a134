"""The img2img tab's components, laid out; ``img2img.py`` wires them to handlers.

The prompt, sampler, seed and batch controls, the buttons and the results column are the shared pieces of
``sdlocal.ui.components`` (the Generate tab's, with ids prefixed ``sd-i2i-``); this module adds the image
sub-tabs (img2img, Sketch, Inpaint, Inpaint upload) and the img2img and inpaint controls. The model is the
page's one model (picked on the Generate tab), as in A1111.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from sdlocal.engine.request import (
    INPAINT_AREAS,
    MASKED_CONTENT,
    MAX_MASK_BLUR,
    MAX_MASK_PADDING,
    MAX_SIDE,
    RESIZE_MODES,
)
from sdlocal.ui.components import (
    FormParts,
    preset_dropdown,
    prompt_and_buttons,
    request_options,
    results_column,
    sampler_controls,
    seed_and_batch,
    size_controls,
)
from sdlocal.ui.img2img_request import IMAGE_FIELDS, MASK_MODES, MODES, SIZE_MODES, SOURCE_DEFAULTS, SOURCE_FIELDS
from sdlocal.ui.lora_panel import lora_panel
from sdlocal.ui.scripts import script_section

# The sub-tabs' ids, by mode (ids of their own: the page's tabs already use "img2img").
MODE_TABS = {"img2img": "i2i-upload", "sketch": "i2i-sketch", "inpaint": "i2i-inpaint",
             "inpaint upload": "i2i-inpaint-upload"}
INPAINT_BRUSH_COLOURS = ["#ffffff", "#000000", "#ff00ff"]


@dataclass
class Img2ImgTab(FormParts):
    """The shared form plus the image components (``images``) and the img2img controls (``settings``)."""

    images: dict[str, Any] = field(default_factory=dict)  # IMAGE_FIELDS name -> component
    settings: dict[str, Any] = field(default_factory=dict)  # SOURCE_FIELDS name -> control
    load: tuple[Any, list[Any]] | None = None  # (page-load handler, its outputs), for the app's Blocks.load
    model_note: Any = None
    modes: Any = None  # the sub-tabs
    mode_tabs: dict[str, Any] = field(default_factory=dict)  # mode -> its gr.Tab
    size_row: Any = None
    scale_row: Any = None
    size_note: Any = None
    inpaint_panel: Any = None
    source_size: Any = None  # gr.State: (width, height) of the image loaded, for "Resize by"
    send: Any = None  # the SendTarget other tabs send images through (made by img2img.py)

    @property
    def image_inputs(self) -> list[Any]:
        return [self.images[name] for name in IMAGE_FIELDS]

    @property
    def setting_controls(self) -> list[Any]:
        return [self.settings[name] for name in SOURCE_FIELDS]


def build_layout(services: Any, samplers: list[str], schedules: list[str]) -> Img2ImgTab:
    """Place the tab's components (inside the caller's ``gr.Tabs``) and return them."""
    ui = Img2ImgTab(prefix="sd-i2i-")
    with gr.Tab("img2img", id="img2img") as ui.tab:
        with gr.Row(equal_height=True):
            ui.model_note = gr.Markdown("", label="img2img model", elem_id=ui.eid("model"))
            preset_dropdown(ui, services.presets.names(), scale=1)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=360):
                prompt_and_buttons(ui, placeholder="what the picture should become")
                ui.loras = lora_panel(ui)
                _image_tabs(ui)
                _img2img_controls(ui)
                _inpaint_controls(ui)
                sampler_controls(ui, samplers, schedules)
                seed_and_batch(ui)
                with gr.Accordion("Advanced", open=False, elem_id=ui.eid("advanced")):
                    settings = services.settings
                    request_options(ui, float(getattr(settings, "token_merging_ratio", 0.0) or 0.0),
                                    getattr(settings, "emphasis", "Original"))
                ui.scripts = script_section(ui.prefix, True, services)
            with gr.Column(scale=6, min_width=360):
                results_column(ui)
        ui.finish()
        ui.source_size = gr.State(None)
    return ui


def _image_tabs(ui: Img2ImgTab) -> None:
    images = ui.images
    # The mode is a hidden textbox, not gr.State: API clients can then choose it too.
    images["mode"] = gr.Textbox(MODES[0], visible=False, label="img2img mode")
    with gr.Tabs(selected=MODE_TABS["img2img"], elem_id=ui.eid("modes")) as ui.modes:
        with gr.Tab("img2img", id=MODE_TABS["img2img"]) as ui.mode_tabs["img2img"]:
            images["init_image"] = gr.Image(label="Image for img2img", type="pil", image_mode="RGBA",
                                            sources=["upload", "clipboard"], height=420, elem_id=ui.eid("image"))
        with gr.Tab("Sketch", id=MODE_TABS["sketch"]) as ui.mode_tabs["sketch"]:
            images["sketch"] = gr.ImageEditor(label="Sketch", type="pil", image_mode="RGBA", height=480,
                                              sources=["upload", "clipboard"], elem_id=ui.eid("sketch"),
                                              brush=gr.Brush(color_mode="defaults"), layers=False)
        with gr.Tab("Inpaint", id=MODE_TABS["inpaint"]) as ui.mode_tabs["inpaint"]:
            # the strokes are the mask: any colour, the fixed ones only so the brush shows on any picture
            images["inpaint"] = gr.ImageEditor(
                label="Image for inpainting with mask", type="pil", image_mode="RGBA", height=480,
                sources=["upload", "clipboard"], elem_id=ui.eid("inpaint"), layers=False, transforms=(),
                brush=gr.Brush(colors=INPAINT_BRUSH_COLOURS, color_mode="fixed"))
        with gr.Tab("Inpaint upload", id=MODE_TABS["inpaint upload"]) as ui.mode_tabs["inpaint upload"]:
            with gr.Row():
                images["inpaint_image"] = gr.Image(label="Image for inpainting", type="pil", image_mode="RGBA",
                                                   sources=["upload", "clipboard"], elem_id=ui.eid("inpaint-image"))
                # a file path: the mask's own mode reaches the engine (its alpha, when it has one, is the mask)
                images["inpaint_mask"] = gr.Image(label="Mask (white = repaint)", type="filepath",
                                                  sources=["upload", "clipboard"], elem_id=ui.eid("inpaint-mask"))


def _img2img_controls(ui: Img2ImgTab) -> None:
    s, d = ui.settings, SOURCE_DEFAULTS
    s["resize_mode"] = gr.Radio(list(RESIZE_MODES), value=d["resize_mode"], label="Resize mode",
                                elem_id=ui.eid("resize-mode"))
    s["size_mode"] = gr.Radio(list(SIZE_MODES), value=d["size_mode"], label="Output size",
                              info="Set to the image's size when one is loaded.", elem_id=ui.eid("size-mode"))
    with gr.Column(visible=True) as ui.size_row:
        size_controls(ui, max_side=MAX_SIDE, size_buttons=False)
    with gr.Column(visible=False) as ui.scale_row:
        s["scale"] = gr.Slider(0.05, 4.0, value=d["scale"], step=0.05, label="Scale", elem_id=ui.eid("scale"))
        ui.size_note = gr.Markdown("", label="Resized size", elem_id=ui.eid("size-note"))
    s["denoising_strength"] = gr.Slider(0, 1, value=d["denoising_strength"], step=0.01, label="Denoising strength",
                                        elem_id=ui.eid("denoising"),
                                        info="0 keeps the image, 1 repaints it all.")


def _inpaint_controls(ui: Img2ImgTab) -> None:
    s, d = ui.settings, SOURCE_DEFAULTS
    with gr.Column(visible=False, elem_id=ui.eid("inpaint-panel")) as ui.inpaint_panel:
        with gr.Row():
            s["mask_blur"] = gr.Slider(0, MAX_MASK_BLUR, value=d["mask_blur"], step=1, label="Mask blur",
                                       elem_id=ui.eid("mask-blur"))
            s["mask_mode"] = gr.Radio(list(MASK_MODES), value=d["mask_mode"], label="Mask mode",
                                      elem_id=ui.eid("mask-mode"))
        s["masked_content"] = gr.Radio(list(MASKED_CONTENT), value=d["masked_content"], label="Masked content",
                                       elem_id=ui.eid("masked-content"))
        with gr.Row():
            s["inpaint_area"] = gr.Radio(list(INPAINT_AREAS), value=d["inpaint_area"], label="Inpaint area",
                                         elem_id=ui.eid("inpaint-area"))
            s["padding"] = gr.Slider(0, MAX_MASK_PADDING, value=d["padding"], step=4,
                                     label="Only masked padding, pixels", elem_id=ui.eid("padding"))
        s["conditional_weight"] = gr.Slider(0, 1, value=d["conditional_weight"], step=0.01,
                                            label="Conditional mask weight", visible=False,
                                            elem_id=ui.eid("conditional-weight"),
                                            info="Inpainting checkpoints: 1 = the masked image, 0 = the original.")
