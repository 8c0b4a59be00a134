"""Pieces every tab shares: the form's field order, errors as messages, the saved UI state, reusing parameters.

Nothing here imports torch or diffusers: the UI module tree must import in the time gradio itself takes.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import gradio as gr

from sdlocal.engine.request import EngineError, GenerationRequest, RequestError
from sdlocal.forms import InfotextFill, fill_from_infotext

# The Generate tab's request controls, in the order every event function receives and returns them.
FORM_FIELDS: tuple[str, ...] = (
    "prompt",
    "negative_prompt",
    "sampler",
    "schedule",
    "steps",
    "cfg_scale",
    "width",
    "height",
    "seed",
    "batch_count",
    "batch_size",
    "clip_skip",
    "token_merging_ratio",
    "vae_tiling",
    "emphasis",
)
DEFAULTS: dict[str, Any] = {name: getattr(GenerationRequest(), name) for name in FORM_FIELDS}
# The controls' labels: the Generate tab shows these, error messages name fields by them, and API clients
# (gradio_client's view_api) see them as the names of the values each endpoint returns.
LABELS: dict[str, str] = {
    "prompt": "Prompt",
    "negative_prompt": "Negative prompt",
    "model": "Model",
    "sampler": "Sampler",
    "schedule": "Schedule type",
    "steps": "Steps",
    "cfg_scale": "CFG scale",
    "width": "Width",
    "height": "Height",
    "seed": "Seed",
    "batch_count": "Batch count",
    "batch_size": "Batch size",
    "clip_skip": "Clip skip",
    "token_merging_ratio": "Token merging ratio",
    "vae_tiling": "VAE tiling",
    "emphasis": "Emphasis",
    "vae": "VAE",
    "styles": "Styles",
    # the img2img tab's controls, by the request's (API) field names its errors use
    "init_images": "Image",
    "denoising_strength": "Denoising strength",
    "resize_mode": "Resize mode",
    "mask": "Mask",
    "mask_blur_x": "Mask blur",
    "mask_blur_y": "Mask blur",
    "inpainting_mask_invert": "Mask mode",
    "inpaint_area": "Inpaint area",
    "inpaint_full_res_padding": "Only masked padding, pixels",
    "inpainting_fill": "Masked content",
    "conditional_mask_weight": "Conditional mask weight",
    # the Extras tab's controls, by the ExtrasRequest's (API) field names
    "image": "Single Image",
    "imageList": "Batch Process",
    "input_dir": "Input directory",
    "upscaling_resize": "Resize",
    "upscaling_resize_w": "Width",
    "upscaling_resize_h": "Height",
    "upscaling_crop": "Crop to fit",
    "upscaler_1": "Upscaler 1",
    "upscaler_2": "Upscaler 2",
    "extras_upscaler_2_visibility": "Upscaler 2 visibility",
    # the Hires fix section's, by the API's names
    "hr_scale": "Upscale by",
    "hr_resize_x": "Resize width to",
    "hr_resize_y": "Resize height to",
    "hr_upscaler": "Hires upscaler",
    "hr_second_pass_steps": "Hires steps",
    "hr_sampler": "Hires sampler",
    "hr_schedule": "Hires schedule type",
    "hr_prompt": "Hires prompt",
    "hr_negative_prompt": "Hires negative prompt",
    # the Script section's, by A1111's script argument names (the API's script_args)
    "script_name": "Script",
    "script_args": "Script arguments",
    **{f"{letter}_{part}": f"{letter.upper()} {label}" for letter in "xyz"
       for part, label in (("type", "type"), ("values", "values"), ("values_dropdown", "values"))},
    "margin_size": "Grid margins (px)",
    "draw_legend": "Draw legend",
    "no_fixed_seeds": "Keep -1 for seeds",
    "include_lone_images": "Include Sub Images",
    "include_sub_grids": "Include Sub Grids",
    "csv_mode": "Use text inputs instead of dropdowns",
}


class FormError(ValueError):
    """Something the user must do before a run (drop an image first); the message is the whole sentence."""


def error_text(error: BaseException) -> str:
    """One plain sentence a user can act on, naming the control (by its label) where the error names a field."""
    if isinstance(error, RequestError):
        label = LABELS.get(error.field, error.field)
        return f"{label}: {error.value!r} is not allowed; {error.allowed}."
    if isinstance(error, EngineError):
        return f"{error.message} {error.hint}".strip()
    if isinstance(error, FormError):
        return str(error)
    name = type(error).__name__
    if name == "QueueFullError":
        return f"The queue is full: {error}. Wait for the running jobs to finish, then try again."
    return f"{name}: {error}"


def error_box(message: str) -> str:
    return f'<div class="sd-error" role="alert">⚠ {html.escape(message)}</div>'


def coerce_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Gradio numbers arrive as floats; whole-number fields are made ints so the request and presets stay tidy."""
    out = dict(values)
    for name in ("steps", "width", "height", "seed", "batch_count", "batch_size", "clip_skip"):
        value = out.get(name)
        if isinstance(value, float) and value.is_integer():
            out[name] = int(value)
    return out


class UiState:
    """The last model and form values, through the settings' state file (its ``"ui"`` key).

    Saving is best effort: a read-only data dir must not stop a generation, so errors become a log line.
    """

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def load(self) -> dict[str, Any]:
        try:
            return dict(self.settings.load_ui_state())
        except (OSError, ValueError, AttributeError):
            return {}

    def save(self, ui: dict[str, Any]) -> None:
        try:
            self.settings.save_ui_state(ui)
        except (OSError, ValueError, AttributeError) as exc:
            logging.getLogger(__name__).warning("could not save the UI state: %s", exc)


def infotext_updates(engine: Any, text: str, fill: InfotextFill | None = None) -> list[Any]:
    """Updates for [model, *FORM_FIELDS] from an A1111 parameters text; fields it does not name stay as they are.

    Called from sync handlers only (Gradio runs those on worker threads): finding the model may hash files.
    ``fill`` is the text already read (``fill_from_infotext``), for a caller that needs more of it.
    """
    fill = fill if fill is not None else fill_from_infotext(engine, text)
    if fill.missing_model:
        gr.Info(f"The model {fill.missing_model!r} from these parameters is not here; keeping the current model.")
    model = gr.update(value=fill.model) if fill.model else gr.update()
    return [model, *[gr.update(value=fill.fields[n]) if n in fill.fields else gr.update() for n in FORM_FIELDS]]
