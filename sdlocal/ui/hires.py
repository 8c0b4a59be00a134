"""The Generate tab's Hires fix section: A1111's controls, the size it will make, and its part of the request.

Hires fix generates at the form's size, upscales, then denoises again at the larger size; the engine does all of
it from ``GenerationRequest.hires`` (a ``HiresSpec``). This module only places the controls, turns their values
into a ``HiresSpec`` when "Hires. fix" is ticked, shows "512x512 -> 1024x1024" from ``HiresSpec.sizes`` before
the run, and fills the section back from an image's parameters ("Reuse all parameters", PNG Info).

The section's values are not part of the saved form or of presets (``FORM_FIELDS``): a page opens with hires fix
off, as A1111's does, so no page-load event ever writes into these controls.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import gradio as gr

from sdlocal.engine.request import USE_SAME, HiresSpec, RequestError
from sdlocal.engine.upscalers import BUILTIN_UPSCALERS, LATENT_MODES
from sdlocal.ui.upscaler_list import hires_upscaler_names

# The section's controls, in the order the Generate handler receives them: "enabled", then HiresSpec's fields.
HIRES_FIELDS: tuple[str, ...] = ("enabled", "upscaler", "steps", "denoising_strength", "scale", "resize_x",
                                 "resize_y", "sampler", "schedule", "prompt", "negative_prompt")
# The UI's defaults are A1111's UI's (denoising 0.7; the API's is 0.75): HiresSpec's own.
HIRES_DEFAULTS: dict[str, Any] = {"enabled": False, **asdict(HiresSpec())}
HIRES_LABELS: dict[str, str] = {
    "enabled": "Hires. fix", "upscaler": "Upscaler", "steps": "Hires steps", "denoising_strength": "Denoising strength",
    "scale": "Upscale by", "resize_x": "Resize width to", "resize_y": "Resize height to", "sampler": "Hires sampler",
    "schedule": "Hires schedule type", "prompt": "Hires prompt", "negative_prompt": "Hires negative prompt",
}
_WHOLE = ("steps", "resize_x", "resize_y")


@dataclass
class HiresSection:
    """The section's components: ``fields`` maps HIRES_FIELDS names to controls, ``size`` shows the sizes."""

    fields: dict[str, Any] = field(default_factory=dict)
    controls: list[Any] = field(default_factory=list)
    accordion: Any = None
    size: Any = None


def hires_section(prefix: str, samplers: list[str], schedules: list[str]) -> HiresSection:
    """Place the section (inside the caller's column): the checkbox, then A1111's controls in an accordion.

    The upscaler list is filled as the page opens (``hires_upscaler_names``: the scan may read files), so the
    dropdown takes any name and the engine says which are unknown.
    """
    part, f = HiresSection(), {}
    f["enabled"] = gr.Checkbox(label=HIRES_LABELS["enabled"], value=False, elem_id=f"{prefix}hires",
                               info="Generate at this size, upscale, then denoise again at the larger size.")
    with gr.Accordion("Hires. fix settings", open=False, elem_id=f"{prefix}hires-settings") as part.accordion:
        part.size = gr.Markdown(size_text(512, 512, 2.0, 0, 0), label="Hires size", elem_id=f"{prefix}hires-size")
        with gr.Row():
            f["upscaler"] = gr.Dropdown(label=HIRES_LABELS["upscaler"], choices=[*LATENT_MODES, *BUILTIN_UPSCALERS],
                                        value=HIRES_DEFAULTS["upscaler"], allow_custom_value=True,
                                        elem_id=f"{prefix}hr-upscaler")
            f["steps"] = gr.Slider(0, 150, value=0, step=1, label=HIRES_LABELS["steps"], info="0 = the same as Steps",
                                   elem_id=f"{prefix}hr-steps")
            f["denoising_strength"] = gr.Slider(0, 1, value=HIRES_DEFAULTS["denoising_strength"], step=0.01,
                                                label=HIRES_LABELS["denoising_strength"],
                                                elem_id=f"{prefix}hr-denoising")
        with gr.Row():
            f["scale"] = gr.Slider(1, 8, value=HIRES_DEFAULTS["scale"], step=0.05, label=HIRES_LABELS["scale"],
                                   elem_id=f"{prefix}hr-scale")
            f["resize_x"] = gr.Slider(0, 4096, value=0, step=8, label=HIRES_LABELS["resize_x"],
                                      info="0 = follow the other side, or Upscale by", elem_id=f"{prefix}hr-resize-x")
            f["resize_y"] = gr.Slider(0, 4096, value=0, step=8, label=HIRES_LABELS["resize_y"],
                                      elem_id=f"{prefix}hr-resize-y")
        with gr.Row():
            f["sampler"] = gr.Dropdown(label=HIRES_LABELS["sampler"], choices=[USE_SAME, *samplers], value=USE_SAME,
                                       elem_id=f"{prefix}hr-sampler")
            f["schedule"] = gr.Dropdown(label=HIRES_LABELS["schedule"], choices=[USE_SAME, *schedules],
                                        value=USE_SAME, elem_id=f"{prefix}hr-schedule")
        f["prompt"] = gr.Textbox("", label=HIRES_LABELS["prompt"], lines=2, placeholder="Empty = the same prompt",
                                 elem_id=f"{prefix}hr-prompt")
        f["negative_prompt"] = gr.Textbox("", label=HIRES_LABELS["negative_prompt"], lines=2,
                                          placeholder="Empty = the same negative prompt",
                                          elem_id=f"{prefix}hr-negative")
    part.fields = f
    part.controls = [f[name] for name in HIRES_FIELDS]
    return part


def hires_values(values: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    """The section's values by name (missing ones at their defaults), whole numbers as ints."""
    out = {**HIRES_DEFAULTS, **dict(zip(HIRES_FIELDS, values, strict=False))}
    for name in _WHOLE:
        value = out[name]
        if isinstance(value, float) and value.is_integer():
            out[name] = int(value)
    return out


def hires_spec(values: list[Any] | tuple[Any, ...]) -> HiresSpec | None:
    """The request's ``hires`` part: None unless "Hires. fix" is ticked. The request validates it."""
    named = hires_values(values)
    if not named.pop("enabled"):
        return None
    return HiresSpec(**{name: named[name] for name in HIRES_FIELDS[1:]})


def size_text(width: Any, height: Any, scale: Any, resize_x: Any, resize_y: Any) -> str:
    """A1111's size line, "512x512 -> 1024x1024", from the sizes the engine will use (or why they are refused)."""
    try:
        w, h = int(width), int(height)
        spec = HiresSpec(scale=float(scale), resize_x=int(resize_x or 0), resize_y=int(resize_y or 0))
        spec.validate(w, h)
    except RequestError as exc:
        return f"⚠ {HIRES_LABELS.get(exc.field.removeprefix('hr_'), exc.field)}: {exc.allowed}"
    except (TypeError, ValueError):
        return "Set the width, height and upscale first."
    sizes = spec.sizes(w, h)
    text = f"{w}x{h} -> {sizes.final_width}x{sizes.final_height}"
    if (sizes.upscale_width, sizes.upscale_height) != (sizes.final_width, sizes.final_height):
        text += f" (upscaled to {sizes.upscale_width}x{sizes.upscale_height}, then cropped)"
    return text


def wire_hires(part: HiresSection, width: Any, height: Any) -> None:
    """Ticking opens the settings; the size line follows the form's size and the section's scale and resize."""
    part.fields["enabled"].input(lambda on: gr.update(open=True) if on else gr.update(),
                                 inputs=part.fields["enabled"], outputs=part.accordion, api_visibility="private")
    sources = [width, height, part.fields["scale"], part.fields["resize_x"], part.fields["resize_y"]]
    for source in sources:
        source.change(size_text, inputs=sources, outputs=part.size, api_visibility="private")


def hires_updates(fields: dict[str, Any]) -> list[Any]:
    """Updates for the section's controls from an image's hires settings (``InfotextFill.hires``).

    Settings present tick "Hires. fix" and fill every control (those the text leaves out, as A1111 writes it,
    get their defaults: "Hires steps" 0, "Use same"); none untick it and leave the rest as it is.
    """
    if not fields:
        return [gr.update(value=False), *[gr.update() for _ in HIRES_FIELDS[1:]]]
    named = {**HIRES_DEFAULTS, **{k: v for k, v in fields.items() if k in HIRES_DEFAULTS}, "enabled": True}
    return [gr.update(value=named[name]) for name in HIRES_FIELDS]


def upscaler_update(engine: Any) -> Any:
    """The page-load update of the upscaler list: choices only, so the value picked stays however late it comes."""
    return gr.update(choices=hires_upscaler_names(engine))


def reuse_hires(text: str) -> list[Any]:
    """Updates for (the settings accordion, *the section's controls) from a parameters text."""
    from sdlocal.forms import hires_from_infotext

    try:
        fields = hires_from_infotext(text or "")
    except Exception as exc:  # noqa: BLE001 - an odd text leaves the section as it is
        logging.getLogger(__name__).warning("could not read hires fix's settings: %s", exc)
        return [gr.update() for _ in range(len(HIRES_FIELDS) + 1)]
    return [gr.update(open=True) if fields else gr.update(), *hires_updates(fields)]


def wire_reuse_hires(button: Any, inputs: list[Any], part: HiresSection, pick: Any = None) -> None:
    """``button`` ("Reuse all parameters", "Send to Generate") fills the section from a parameters text too.

    ``pick(*inputs)`` gives the text; without it ``inputs`` are a results panel's (rows, selected index).
    """
    from sdlocal.ui.form_events import selected_row

    def text_of(*values: Any) -> str:
        if pick is not None:
            return pick(*values) or ""
        row = selected_row(*values)
        return row[1] if row is not None else ""

    def reuse(*values: Any) -> list[Any]:
        text = text_of(*values)
        if not text:
            return [gr.update() for _ in range(len(HIRES_FIELDS) + 1)]
        return reuse_hires(text)

    button.click(reuse, inputs=inputs, outputs=[part.accordion, *part.controls], api_visibility="private")
