"""What a generation form is filled with: an image's parameters text, or the values a page opens with.

Every tab with a generation form (txt2img and img2img) needs the same answers, so they live here as
plain values (no gradio): the tabs turn them into component updates. Importing this module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class InfotextFill:
    """What an A1111 parameters text sets: request fields, and the local model it names (when it is here)."""

    fields: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # the name of the local model the text names; None: keep the current one
    missing_model: str | None = None  # the model the text names when it is not here, for a message
    # img2img and inpainting settings the text names (Denoising strength, Mask blur...), as ImageSource and
    # MaskSpec field names (``infotext_to_source_fields``); empty for a txt2img text
    source: dict[str, Any] = field(default_factory=dict)
    # hires fix's settings the text names (Hires upscale or Hires resize, Hires upscaler, Hires steps...), as
    # HiresSpec field names (``infotext_to_hires_fields``); empty when the image was made without hires fix
    hires: dict[str, Any] = field(default_factory=dict)


def fill_from_infotext(engine: Any, text: str) -> InfotextFill:
    """The request fields and the model an A1111 parameters text names; fields it does not name are left out.

    The model is looked up by its hash first, then by name. A hash lookup may hash every model file that has
    no cached hash (gigabytes each): call this from a worker thread, never on an event loop.
    """
    from sdlocal.engine.infotext import infotext_to_request_fields, infotext_to_source_fields, parse_infotext

    params = parse_infotext(text or "")
    values = infotext_to_request_fields(params)
    wanted = values.pop("model", None) or params.get("Model")
    fill = InfotextFill(fields=values, source=infotext_to_source_fields(params), hires=hires_fields(params))
    for key in (params.get("Model hash"), wanted):
        entry = _find(engine, key) if key else None
        if entry is not None and entry.supported:
            fill.model = entry.name
            return fill
    fill.missing_model = wanted or None
    return fill


def hires_from_infotext(text: str) -> dict[str, Any]:
    """Hires fix's settings in an A1111 parameters text (HiresSpec field names), {} when it has none.

    Cheap (no model lookup), so a handler that fills only the Hires fix section can call it on its own.
    """
    from sdlocal.engine.infotext import parse_infotext

    return hires_fields(parse_infotext(text or ""))


def hires_fields(params: dict[str, str]) -> dict[str, Any]:
    """``infotext_to_hires_fields`` over parsed parameters; {} unless a hires key is there."""
    from sdlocal.engine.infotext import infotext_to_hires_fields

    return dict(infotext_to_hires_fields(params))


@dataclass
class StartForm:
    """The form a page opens with: values over the request defaults, the preset shown, and whether it was chosen."""

    values: dict[str, Any]
    preset: str | None = None  # the preset whose values are in the form (shown in the Preset box)
    chose: bool = False  # True when the user chose it (--preset): picking a model then keeps the form
    preset_problem: str = ""  # why the --preset could not be applied


def start_form(saved_form: dict[str, Any] | None, settings: Any, presets: Any, family: str | None) -> StartForm:
    """The form's values when a page opens: the saved form, else a first start's; ``--preset`` wins over both.

    A first start (nothing saved) gets the model family's default preset, as picking that model would give,
    and ``--token-merging-ratio`` when it is set: a flag the user gave beats a preset's default of 0.
    """
    from sdlocal.presets import PresetError

    start = StartForm(values=dict(saved_form or {}))
    if not saved_form:
        default = presets.for_family(family) if family else None
        if default is not None:
            start.values.update(default.values())
            start.preset = default.name
        ratio = float(getattr(settings, "token_merging_ratio", 0.0) or 0.0)
        if ratio:
            start.values["token_merging_ratio"] = ratio
    wanted = getattr(settings, "preset", None)
    if wanted:
        try:
            start.values.update(presets.get(wanted).values())
            start.preset, start.chose = wanted, True
        except PresetError as exc:
            start.preset_problem = str(exc)
    return start


def _find(engine: Any, name: str) -> Any:
    try:
        return engine.find_model(name)
    except Exception:  # noqa: BLE001 - unknown names are simply not found
        return None
