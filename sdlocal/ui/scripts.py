"""The Script dropdown under the txt2img and img2img settings: A1111's scripts (X/Y/Z plot, prompt matrix,
prompts from file or textbox), laid out once for both tabs.

The UI never plans a grid itself: the controls of the script chosen are read back in that script's ``ARGS``
order, the same positional list an API client sends as ``script_args``, and handed to ``plan_script``
(``sdlocal.ui.script_run``). So a grid made from the page and one made from the API are the same plan. A
script module that is not registered (``SCRIPT_MODULES``) has no group here; one with no X/Y/Z-style layout of
its own gets its controls from its ``ARGS`` (a checkbox per flag, a radio per choice, a text box per text).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from sdlocal.scripts import NONE, SCRIPT_MODULES
from sdlocal.scripts.axes import Axis, axes_for, find_axis
from sdlocal.scripts.plan import ScriptContext
from sdlocal.scripts.values import join_values, split_values

XYZ = "x/y/z plot"
PROMPTS_FILE = "prompts from file or textbox"
LETTERS = "xyz"
SWAPS = (("x", "y"), ("y", "z"), ("x", "z"))
FILL = "📒"
MAX_PROMPTS_FILE_BYTES = 5_000_000
# A1111's labels for the X/Y/Z plot's other controls and for the two simpler scripts' arguments, by argument name.
ARG_LABELS: dict[str, str] = {
    "draw_legend": "Draw legend", "no_fixed_seeds": "Keep -1 for seeds", "include_lone_images": "Include Sub Images",
    "include_sub_grids": "Include Sub Grids", "vary_seeds_x": "Vary seeds for X", "vary_seeds_y": "Vary seeds for Y",
    "vary_seeds_z": "Vary seeds for Z", "margin_size": "Grid margins (px)",
    "csv_mode": "Use text inputs instead of dropdowns",
    "put_at_start": "Put variable parts at start of prompt", "different_seeds": "Use different seed for each picture",
    "prompt_type": "Select prompt", "variations_delimiter": "Select joining char",
    "checkbox_iterate": "Iterate seed every line", "checkbox_iterate_batch": "Use same random seed for all lines",
    "prompt_position": "Insert prompts at the", "prompt_txt": "List of prompt inputs",
}
# The radio arguments' choices where a module's ``describe`` does not list them (A1111's).
ARG_CHOICES: dict[str, list[str]] = {"prompt_type": ["positive", "negative"],
                                     "variations_delimiter": ["comma", "space"], "prompt_position": ["start", "end"]}


@dataclass
class AxisParts:
    """One X/Y/Z axis row: the type, the values as text, the values as a multiselect, and 📒 (fill every choice)."""

    letter: str
    type: Any = None
    text: Any = None
    dropdown: Any = None
    fill: Any = None


@dataclass
class ScriptSection:
    """The Script dropdown and one group per script; ``args[name]`` are its controls in its ``ARGS`` order."""

    img2img: bool
    prefix: str = "sd-"
    choice: Any = None
    groups: dict[str, Any] = field(default_factory=dict)
    args: dict[str, list[Any]] = field(default_factory=dict)
    axes: list[AxisParts] = field(default_factory=list)
    swaps: dict[str, Any] = field(default_factory=dict)  # "xy", "yz", "xz" -> button
    csv_mode: Any = None
    summary: Any = None  # what the chosen script will make (or why it cannot), before the run
    pending: Any = None  # gr.State: the settings whose large grid was announced (a second press starts it)
    upload: Any = None  # prompts from file: the .txt upload that fills its text box
    upload_note: Any = None
    prompt_text: Any = None  # prompts from file: the text box the upload fills

    @property
    def inputs(self) -> list[Any]:
        """The Script dropdown, then every script's controls (``read`` splits their values back)."""
        return [self.choice, *(control for name in self.args for control in self.args[name])]

    def read(self, values: list[Any] | tuple[Any, ...]) -> tuple[str | None, list[Any]]:
        """(A1111 name of the script chosen or None, its positional args) from the values of ``inputs``."""
        chosen, rest = (values[0] if values else NONE), list(values[1:])
        name = script_for_title(chosen)
        offset = 0
        for known, controls in self.args.items():
            if known == name:
                return name, rest[offset:offset + len(controls)]
            offset += len(controls)
        return None, []


def module(name: str) -> Any:
    return importlib.import_module(SCRIPT_MODULES[name])


def script_titles() -> dict[str, str]:
    """Title -> A1111 name of every registered script that loads (a module that fails to import is logged)."""
    found = {}
    for name in SCRIPT_MODULES:
        try:
            found[module(name).TITLE] = name
        except Exception as exc:  # noqa: BLE001 - one broken script must not take the page down
            logging.getLogger(__name__).warning("script %s is unavailable: %s", name, exc)
    return found


def script_for_title(title: Any) -> str | None:
    """The A1111 name for a Script dropdown value (its title, or the name itself); None for "None"."""
    if not isinstance(title, str) or title == NONE:
        return None
    titles = script_titles()
    return titles.get(title) or (title if title in titles.values() else None)


def usable_axes(img2img: bool) -> list[Axis]:
    """The axes the type dropdowns list: the plottable ones of ``axes_for`` (the API's index list)."""
    return [axis for axis in axes_for(img2img) if axis.supported]


def axis_label(value: Any, img2img: bool) -> str:
    """A type dropdown's value for an axis given by A1111 index or label; "Nothing" when it is not plottable."""
    try:
        return find_axis(value, img2img, "x_type").label
    except Exception:  # noqa: BLE001 - an unknown or unplottable axis shows as Nothing
        return "Nothing"


# ---------------------------------------------------------------------------------------------- layout
def script_section(prefix: str, img2img: bool, services: Any) -> ScriptSection:
    """Place the Script dropdown and the groups (inside the caller's settings column)."""
    part = ScriptSection(img2img=img2img, prefix=prefix)
    titles = script_titles()
    part.choice = gr.Dropdown([NONE, *titles], value=NONE, label="Script", elem_id=f"{prefix}script")
    for name in titles.values():
        with gr.Column(visible=False, elem_id=f"{prefix}script-{_slug(name)}") as part.groups[name]:
            if name == XYZ:
                part.args[name] = _xyz_controls(part)
            else:
                part.args[name] = _generic_controls(part, name, services)
    part.summary = gr.Markdown("", label="Script summary", visible=False, elem_id=f"{prefix}script-summary")
    part.pending = gr.State(None)
    return part


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-")


def _xyz_controls(part: ScriptSection) -> list[Any]:
    from sdlocal.scripts import xyz

    labels = [axis.label for axis in usable_axes(part.img2img)]
    defaults = dict(xyz.ARGS)
    controls: dict[str, Any] = {}
    for letter in LETTERS:
        axis = AxisParts(letter)
        upper = letter.upper()
        with gr.Row(equal_height=True):
            axis.type = gr.Dropdown(labels, value=axis_label(defaults[f"{letter}_type"], part.img2img),
                                    label=f"{upper} type", scale=2, elem_id=f"{part.prefix}xyz-{letter}-type")
            axis.text = gr.Textbox("", label=f"{upper} values", scale=5, elem_id=f"{part.prefix}xyz-{letter}-values",
                                   placeholder="1, 2, 3 or 1-5 or 1-10 (+2) or 1-10 [5]")
            # any value is let through: the plan says which one is not a choice (Gradio's refusal would not)
            axis.dropdown = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True, visible=False,
                                        label=f"{upper} values", scale=5,
                                        elem_id=f"{part.prefix}xyz-{letter}-dropdown")
            axis.fill = gr.Button(FILL, visible=False, scale=0, min_width=48, elem_id=f"{part.prefix}xyz-{letter}-fill")
        part.axes.append(axis)
        controls.update({f"{letter}_type": axis.type, f"{letter}_values": axis.text,
                         f"{letter}_values_dropdown": axis.dropdown})
    with gr.Row():
        for first, second in SWAPS:
            part.swaps[first + second] = gr.Button(f"Swap {first.upper()}/{second.upper()} axes", size="sm",
                                                   elem_id=f"{part.prefix}xyz-swap-{first}{second}")
    with gr.Row():
        for name in ("draw_legend", "no_fixed_seeds", "include_lone_images", "include_sub_grids"):
            controls[name] = gr.Checkbox(bool(defaults[name]), label=ARG_LABELS[name],
                                         elem_id=f"{part.prefix}xyz-{_slug(name)}")
    with gr.Row():
        for letter in LETTERS:
            name = f"vary_seeds_{letter}"
            controls[name] = gr.Checkbox(bool(defaults[name]), label=ARG_LABELS[name],
                                         elem_id=f"{part.prefix}xyz-{_slug(name)}")
    controls["margin_size"] = gr.Slider(0, xyz.MAX_MARGIN, value=defaults["margin_size"], step=2,
                                        label=ARG_LABELS["margin_size"], elem_id=f"{part.prefix}xyz-margin")
    controls["csv_mode"] = part.csv_mode = gr.Checkbox(bool(defaults["csv_mode"]), label=ARG_LABELS["csv_mode"],
                                                       elem_id=f"{part.prefix}xyz-csv-mode")
    return [controls[name] for name, _ in xyz.ARGS]


def _described(name: str, img2img: bool, services: Any) -> dict[str, Any]:
    """A script's ``describe`` by argument name (for ranges and choices); {} when it cannot say."""
    try:
        described = module(name).describe(img2img, ScriptContext.of(services))
    except Exception:  # noqa: BLE001 - the controls then come from ARGS alone
        return {}
    return {arg_name: arg for (arg_name, _), arg in zip(module(name).ARGS, described, strict=False)}


def _generic_controls(part: ScriptSection, name: str, services: Any) -> list[Any]:
    """A control per argument of a script with no layout of its own, from its ``ARGS`` defaults."""
    described = _described(name, part.img2img, services)
    controls = []
    for arg_name, default in module(name).ARGS:
        info = described.get(arg_name)
        label = ARG_LABELS.get(arg_name) or getattr(info, "label", None) or arg_name.replace("_", " ").capitalize()
        elem_id = f"{part.prefix}{_slug(name)}-{_slug(arg_name)}"
        choices = ARG_CHOICES.get(arg_name) or getattr(info, "choices", None)
        if isinstance(default, bool):
            control = gr.Checkbox(default, label=label, elem_id=elem_id)
        elif choices:
            control = gr.Radio(list(choices), value=default if default in choices else choices[0], label=label,
                               elem_id=elem_id)
        elif isinstance(default, (int, float)):
            low = getattr(info, "minimum", None)
            high = getattr(info, "maximum", None)
            low, high = (0, 500) if low is None or high is None else (low, high)
            control = gr.Slider(low, high, value=default, step=getattr(info, "step", None) or 1, label=label,
                                elem_id=elem_id)
        else:
            lines = 7 if arg_name == "prompt_txt" else 1
            control = gr.Textbox(str(default or ""), label=label, lines=lines, elem_id=elem_id)
            if name == PROMPTS_FILE and arg_name == "prompt_txt":
                controls.append(control)
                part.prompt_text = control
                part.upload = gr.File(label="Upload prompt inputs (.txt)", file_types=[".txt"], type="filepath",
                                      elem_id=f"{part.prefix}prompts-file-upload")
                part.upload_note = gr.Markdown("", label="Upload note", elem_id=f"{part.prefix}prompts-file-note")
                continue
        controls.append(control)
    return controls


# ---------------------------------------------------------------------------------------------- axis controls
def axis_choices(services: Any, label: str, img2img: bool) -> list[str] | None:
    """The choices of a list axis (samplers, checkpoints...), or None for an axis typed as text."""
    axis = next((a for a in usable_axes(img2img) if a.label == label), None)
    if axis is None or axis.choices is None:
        return None
    try:
        return list(axis.choices(ScriptContext.of(services)))
    except Exception as exc:  # noqa: BLE001 - a failed lookup leaves the text box, with a note in the log
        logging.getLogger(__name__).warning("could not list the %s axis's choices: %s", label, exc)
        return None


def axis_updates(services: Any, label: str, text: str, picked: list[str] | None, csv_mode: bool,
                 img2img: bool) -> list[Any]:
    """Updates for (values text, values dropdown, 📒) for an axis type: a list axis shows its choices as a
    multiselect (unless "Use text inputs" is ticked); values move between the two, keeping those that are
    choices. The text box is written only when values move into or out of it: an update that arrives after
    the user typed must not put the old text back."""
    choices = axis_choices(services, label, img2img)
    if choices is None:
        return [gr.update(visible=True), gr.update(visible=False, choices=[], value=[]), gr.update(visible=False)]
    picked = list(picked or [])
    if csv_mode:
        text_update = gr.update(visible=True)
        if picked:
            text_update["value"] = join_values([value for value in picked if value in choices])
        return [text_update, gr.update(visible=False, choices=choices, value=[]), gr.update(visible=True)]
    if text:
        picked = [value for value in split_values(text) if value in choices]
    return [gr.update(visible=False, value=""), gr.update(visible=True, choices=choices, value=picked),
            gr.update(visible=True)]


def fill_updates(services: Any, label: str, csv_mode: bool, img2img: bool) -> list[Any]:
    """📒: every choice of the axis, into the dropdown (or the text box with "Use text inputs")."""
    choices = axis_choices(services, label, img2img) or []
    if csv_mode:
        return [gr.update(value=join_values(choices)), gr.update()]
    return [gr.update(), gr.update(value=choices)]


def swap_updates(services: Any, first: tuple[Any, Any, Any], second: tuple[Any, Any, Any], csv_mode: bool,
                 img2img: bool) -> list[Any]:
    """Updates for both axes' (type, text, dropdown, 📒), each taking the other's type and values."""
    out = []
    for label, text, picked in (second, first):
        text_update, dropdown_update, fill_update = axis_updates(services, label, text, picked, csv_mode, img2img)
        if text_update.get("visible") and "value" not in text_update:
            text_update["value"] = text or ""  # the other axis's text comes across
        if isinstance(picked, list) and not csv_mode:
            dropdown_update["value"] = picked if dropdown_update.get("visible") else []
        out += [gr.update(value=label), text_update, dropdown_update, fill_update]
    return out


def read_prompts_file(path: str | None) -> tuple[Any, str]:
    """(update for the prompts text box, note) for an uploaded file: a .txt read as UTF-8, else a message."""
    if not path:
        return gr.update(), ""
    file = Path(path)
    name = file.name
    try:
        if file.stat().st_size > MAX_PROMPTS_FILE_BYTES:
            return gr.update(), f"⚠ {name} is larger than {MAX_PROMPTS_FILE_BYTES // 1_000_000} MB; split it."
        text = file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        return gr.update(), f"⚠ {name} is not UTF-8 text; save it as UTF-8 (.txt), one prompt per line."
    except OSError as exc:
        return gr.update(), f"⚠ {name} could not be read: {exc}"
    if "\x00" in text:
        return gr.update(), f"⚠ {name} is not a text file; upload a .txt with one prompt per line."
    lines = [line for line in text.splitlines() if line.strip()]
    return gr.update(value=text), f"Read {len(lines)} line{'s' if len(lines) != 1 else ''} from {name}."
