"""The img2img tab: the layout from ``img2img_layout``, wired to handlers over the services.

Generation goes the Generate tab's way (``form_events.stream_job``): the handler builds a ``GenerationRequest``
with an ``ImageSource`` (``img2img_request.build_request``) and submits it to the one job queue, which saves the
images under ``outputs/img2img/``. The model is the page's model, picked on the Generate tab (passed in as
``model``). Other tabs send images here through ``ui.send`` (a ``SendTarget``), never by importing this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from sdlocal.engine.request import GenerationRequest
from sdlocal.forms import fill_from_infotext
from sdlocal.ui.common import FORM_FIELDS, coerce_fields, infotext_updates
from sdlocal.ui.form_events import on_preset, preset_choices, stream_job, wire_results, wire_run, wire_seeds
from sdlocal.ui.img2img_layout import MODE_TABS, Img2ImgTab, build_layout
from sdlocal.ui.img2img_request import (
    IMAGE_FIELDS,
    SOURCE_FIELDS,
    build_request,
    fit_size,
    scaled_size,
    source_images,
    source_updates,
)
from sdlocal.ui.lora_panel import wire_lora_panel
from sdlocal.ui.model_list import UNSUPPORTED_PREFIX, find_entry
from sdlocal.ui.script_run import row_text, run_script, wire_reuse_script, wire_scripts
from sdlocal.ui.send import SendTarget, result_pick
from sdlocal.ui.styles_events import styled_form, wire_styles
from sdlocal.ui.vae_select import request_vae, wire_reuse_vae

INPAINT_MODES = ("inpaint", "inpaint upload")


def build_img2img_tab(services: Any, model: Any, tabs: Any, vae: Any = None) -> Img2ImgTab:
    """The tab's components and events. ``model`` is the page's model dropdown, ``vae`` its VAE dropdown (both
    on the Generate tab), ``tabs`` the page's tabs."""
    ui = build_layout(services, list(services.engine.samplers()), list(services.engine.schedules()))
    _wire_modes(ui)
    _wire_sizes(ui)
    wire_seeds(ui)
    _wire_presets(ui, services.presets)
    _wire_run(ui, services, model, vae)
    wire_results(ui, services.engine, model)
    wire_reuse_script(ui.reuse_all, [ui.results, ui.selected], ui.scripts, services, row_text)
    if vae is not None:
        wire_reuse_vae(ui, services, vae)
    _wire_model(ui, services, model)
    wire_styles(ui, services)
    wire_lora_panel(ui.loras, services, ui.fields["prompt"])
    ui.load = (lambda: preset_choices(services.presets), [ui.preset])
    ui.send = send_target(ui, services, model, tabs)
    for button, target in ((ui.send_img2img, "img2img"), (ui.send_inpaint, "inpaint")):
        ui.send.connect(button, result_pick, [ui.results, ui.selected], target)
    return ui


# ---------------------------------------------------------------------------- sub-tabs and sizes
def _wire_modes(ui: Img2ImgTab) -> None:
    for mode, tab in ui.mode_tabs.items():
        tab.select(lambda mode=mode: (mode, gr.update(visible=mode in INPAINT_MODES)),
                   outputs=[ui.images["mode"], ui.inpaint_panel], api_visibility="private")


def image_size(value: Any) -> tuple[int, int] | None:
    """The size of an image component's value: a PIL image, or an editor's {"background": ...}."""
    if isinstance(value, dict):
        value = value.get("background") or value.get("composite")
    size = getattr(value, "size", None)
    return tuple(size) if isinstance(size, tuple) and len(size) == 2 else None


def size_note(size: tuple[int, int] | None, scale: float) -> str:
    if not size:
        return "Load an image; its size times the scale is the output size."
    width, height = scaled_size(size, scale or 1.0)
    return f"Output **{width}×{height}** (the image is {size[0]}×{size[1]})."


def on_image_loaded(value: Any, scale: float) -> list[Any]:
    """Updates for (width, height, source size, size note): the output size follows a loaded image."""
    size = image_size(value)
    if size is None:
        return [gr.update(), gr.update(), gr.update(), gr.update()]
    width, height = fit_size(*size)
    return [width, height, size, size_note(size, scale)]


def _wire_sizes(ui: Img2ImgTab) -> None:
    size_outputs = [ui.fields["width"], ui.fields["height"], ui.source_size, ui.size_note]
    for name in ("init_image", "sketch", "inpaint", "inpaint_image"):
        ui.images[name].upload(on_image_loaded, inputs=[ui.images[name], ui.settings["scale"]],
                               outputs=size_outputs, api_visibility="private")
    size_mode, scale = ui.settings["size_mode"], ui.settings["scale"]

    def on_size_mode(mode: str, size: tuple[int, int] | None, factor: float) -> list[Any]:
        by = mode == "Resize by"
        return [gr.update(visible=not by), gr.update(visible=by), size_note(size, factor)]

    size_mode.change(on_size_mode, inputs=[size_mode, ui.source_size, scale],
                     outputs=[ui.size_row, ui.scale_row, ui.size_note], api_visibility="private")
    scale.change(lambda size, factor: size_note(size, factor), inputs=[ui.source_size, scale], outputs=ui.size_note,
                 api_visibility="private")


# ---------------------------------------------------------------------------- presets, model, generate
def _wire_presets(ui: Img2ImgTab, presets: Any) -> None:
    def apply_preset(name: str, *values: Any) -> list[Any]:
        # the size follows the image here, so a preset's size is not applied
        return on_preset(presets, name, *values, keep=("width", "height"))[1:]

    ui.preset.input(apply_preset, inputs=[ui.preset, *ui.controls], outputs=ui.controls, api_visibility="private")


def model_updates(engine: Any, name: str | None) -> tuple[str, Any]:
    """(model note, conditional mask weight update): the weight is shown for inpainting checkpoints only."""
    if not name or name.startswith(UNSUPPORTED_PREFIX):
        return "Model: none picked yet (pick one on the Generate tab).", gr.update(visible=False)
    entry = find_entry(engine, name)
    inpainting = bool(getattr(entry, "inpainting", False))
    kind = " (an inpainting checkpoint)" if inpainting else ""
    return f"Model: **{name}**{kind}; pick another on the Generate tab.", gr.update(visible=inpainting)


def _wire_model(ui: Img2ImgTab, services: Any, model: Any) -> None:
    model.change(lambda name: model_updates(services.engine, name), inputs=model,
                 outputs=[ui.model_note, ui.settings["conditional_weight"]], api_visibility="private")


def split_values(values: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The run handler's values as (image components, FORM_FIELDS form, img2img settings)."""
    n_images, n_form = len(IMAGE_FIELDS), len(FORM_FIELDS)
    images = dict(zip(IMAGE_FIELDS, values[:n_images], strict=True))
    form = coerce_fields(dict(zip(FORM_FIELDS, values[n_images:n_images + n_form], strict=True)))
    settings = dict(zip(SOURCE_FIELDS, values[n_images + n_form:], strict=True))
    return images, form, settings


def img2img_request(services: Any, model_name: str | None, *values: Any) -> GenerationRequest:
    """The tab's validated request from its values (see ``run``); a missing image is a ``FormError``."""
    expected = len(IMAGE_FIELDS) + len(FORM_FIELDS) + len(SOURCE_FIELDS)
    styles = values[expected] if len(values) > expected else []
    vae = request_vae(values[expected + 1] if len(values) > expected + 1 else None)
    images, form, settings = split_values(values[:expected])
    if model_name and model_name.startswith(UNSUPPORTED_PREFIX):
        model_name = ""
    return build_request(model_name or "", {**styled_form(services, form, styles), "vae": vae}, settings,
                         source_images(images["mode"], images))


def run(services: Any, model_name: str | None, *values: Any):
    """Build the img2img request from the tab, queue it and stream it (see ``form_events.stream_job``).

    ``values`` are the image components, FORM_FIELDS, the img2img settings, then the styles picked and the
    page's VAE.
    """
    def submit() -> Any:
        return services.queue.submit(img2img_request(services, model_name, *values), save=True, source="ui")

    yield from stream_job(services.queue, submit)


def _wire_run(ui: Img2ImgTab, services: Any, model: Any, vae: Any = None) -> None:
    # without the page's VAE the request gets "Automatic" (an app built without one, in tests)
    base_inputs = [model, *ui.image_inputs, *ui.controls, *ui.setting_controls, ui.styles, *([vae] if vae else [])]
    n = len(base_inputs)

    def build(values: tuple[Any, ...]) -> GenerationRequest:
        return img2img_request(services, *values)

    def generate(*values: Any):
        name, args = ui.scripts.read(values[n:-1])
        if name is None:
            for update in run(services, *values[:n]):
                yield (*update, gr.update())
            return
        yield from run_script(services, lambda: build(values[:n]), name, args, values[-1])

    inputs = [*base_inputs, *ui.scripts.inputs, ui.scripts.pending]
    wire_run(ui, services.queue, generate, inputs, {"generate": "img2img"}, extra_outputs=[ui.scripts.pending])
    counted = [ui.fields[name] for name in ("prompt", "steps", "batch_count", "batch_size", "width", "height")]
    wire_scripts(ui.scripts, services, base_inputs, build, also=[*counted])


# ---------------------------------------------------------------------------- sends from other tabs
def send_outputs(ui: Img2ImgTab, model: Any, tabs: Any) -> list[Any]:
    """What a send fills, in ``send_updates``' order."""
    return [tabs, ui.modes, ui.images["mode"], ui.images["init_image"], ui.images["inpaint"], ui.inpaint_panel,
            ui.source_size, ui.size_note, model, *ui.controls, *ui.setting_controls]


def send_updates(engine: Any, path: str | None, target: str, text: str, scale: float = 1.0) -> list[Any]:
    """Put the image at ``path`` into the img2img (or Inpaint) sub-tab and switch to it.

    With a parameters text the prompt, sampler, seed... and the img2img settings it names fill the form too;
    the output size is the image's (rounded to a multiple of 8), whatever size the text says.
    """
    keep = gr.update()
    n_rest = 1 + len(FORM_FIELDS) + len(SOURCE_FIELDS)
    size = _size_of(path)
    if size is None:
        gr.Warning("Select an image first (one that is still on disk), then send it.")
        return [keep] * (8 + n_rest)
    fill = fill_from_infotext(engine, text) if text else None
    form = infotext_updates(engine, text, fill) if fill is not None else [keep] * (1 + len(FORM_FIELDS))
    width, height = fit_size(*size)
    form[1 + FORM_FIELDS.index("width")], form[1 + FORM_FIELDS.index("height")] = width, height
    settings = source_updates(fill.source) if fill is not None else {}
    inpaint = target == "inpaint"
    return [
        gr.Tabs(selected="img2img"), gr.Tabs(selected=MODE_TABS[target]), target,
        keep if inpaint else path,
        {"background": path, "layers": [], "composite": path} if inpaint else keep,
        gr.update(visible=inpaint), size, size_note(size, scale), *form,
        *[gr.update(value=settings[name]) if name in settings else keep for name in SOURCE_FIELDS],
    ]


def _size_of(path: str | None) -> tuple[int, int] | None:
    if not path or not Path(path).is_file():
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
        return None


def send_target(ui: Img2ImgTab, services: Any, model: Any, tabs: Any) -> SendTarget:
    def also(button: Any, text_of: Any, inputs: list[Any]) -> None:
        wire_reuse_script(button, inputs, ui.scripts, services, text_of)

    return SendTarget(outputs=send_outputs(ui, model, tabs),
                      fill=lambda path, target, text: send_updates(services.engine, path, target, text), also=also)
