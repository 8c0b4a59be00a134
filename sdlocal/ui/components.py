"""The form pieces the Generate and img2img tabs share, laid out by builders that take an ``elem_id`` prefix.

Both tabs hand the same ``GenerationRequest`` fields (``FORM_FIELDS``) to the queue and stream the same progress,
so their prompt, sampler, seed and batch controls, their Generate/Interrupt/Skip buttons and their results column
are built here once (``FormParts``), and wired once by ``sdlocal.ui.form_events``. Each tab adds only what is its
own (the model row, the init image and the mask). No event is attached here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from sdlocal.engine.request import EMPHASIS_MODES
from sdlocal.presets import FAMILY_SIZES
from sdlocal.ui.common import DEFAULTS, FORM_FIELDS, LABELS

NO_PRESET = "(keep my settings)"
SLIDER_MAX_SIDE = 2048


@dataclass
class FormParts:
    """The shared components of a tab with a generation form. ``fields`` maps FORM_FIELDS names to controls."""

    prefix: str = "sd-"  # the elem_id prefix: "sd-" on the Generate tab, "sd-i2i-" on the img2img tab
    fields: dict[str, Any] = field(default_factory=dict)
    controls: list[Any] = field(default_factory=list)
    tab: Any = None
    preset: Any = None
    # the buttons
    generate: Any = None
    interrupt: Any = None
    skip: Any = None
    size_buttons: Any = None
    random_seed: Any = None
    reuse_seed: Any = None
    # results
    progress: Any = None
    error: Any = None
    preview: Any = None
    gallery: Any = None
    reuse_image_seed: Any = None
    reuse_all: Any = None
    send_img2img: Any = None
    send_inpaint: Any = None
    send_extras: Any = None
    info: Any = None
    # styles (under the prompts)
    styles: Any = None  # the Styles multiselect
    styles_refresh: Any = None
    styles_apply: Any = None  # "Apply styles to prompt"
    style_name: Any = None
    save_style: Any = None
    style_status: Any = None
    loras: Any = None  # the LoRA panel under the prompts (sdlocal.ui.lora_panel.LoraPanel)
    scripts: Any = None  # the Script dropdown and its groups (sdlocal.ui.scripts.ScriptSection)
    # A1111's token counters ("23/75") under the prompt boxes
    prompt_tokens: Any = None
    negative_tokens: Any = None
    # per-session state
    results: Any = None  # gr.State [(seed, infotext, path)] of the run shown
    selected: Any = None  # gr.State: the index of the image selected in the results
    last_seed: Any = None  # gr.State: the first seed of the last run, for the ↺ button

    def eid(self, name: str) -> str:
        """This tab's elem_id for ``name`` (the Generate tab keeps its historical ids: sd-prompt, sd-seed...)."""
        return f"{self.prefix}{name}"

    def finish(self) -> None:
        """Make the per-session states and the ordered control list, once every field is placed."""
        self.results, self.selected, self.last_seed = gr.State([]), gr.State(0), gr.State(-1)
        self.controls = [self.fields[name] for name in FORM_FIELDS]


def preset_dropdown(ui: FormParts, names: list[str], scale: int = 3) -> None:
    # Filled per page load (presets come and go); the handler checks names itself, so custom values are allowed.
    ui.preset = gr.Dropdown(label="Preset", choices=[NO_PRESET] + names, value=NO_PRESET, scale=scale,
                            elem_id=ui.eid("preset"), allow_custom_value=True)


def prompt_and_buttons(ui: FormParts, placeholder: str = "a lighthouse on a cliff at dawn, oil painting") -> None:
    f = ui.fields
    f["prompt"] = gr.Textbox(label=LABELS["prompt"], lines=3, elem_id=ui.eid("prompt"), placeholder=placeholder)
    ui.prompt_tokens = token_counter(ui.eid("prompt-tokens"), "Prompt tokens")
    f["negative_prompt"] = gr.Textbox(label=LABELS["negative_prompt"], lines=2, elem_id=ui.eid("negative"))
    ui.negative_tokens = token_counter(ui.eid("negative-tokens"), "Negative prompt tokens")
    styles_row(ui)
    with gr.Row():
        ui.generate = gr.Button("Generate", variant="primary", scale=3, elem_id=ui.eid("generate"),
                                elem_classes=["sd-generate-button"])
        ui.interrupt = gr.Button("Interrupt", variant="stop", scale=1, elem_id=ui.eid("interrupt"))
        ui.skip = gr.Button("Skip", scale=1, elem_id=ui.eid("skip"))


def token_counter(elem_id: str, label: str) -> Any:
    """A1111's counter under a prompt box: tokens used / the limit of the chunks used (filled on change)."""
    return gr.HTML("", label=label, elem_id=elem_id, elem_classes=["sd-tokens"], padding=False)


def styles_row(ui: FormParts, names: list[str] | None = None) -> None:
    """The Styles box (several at once, applied in the order picked), refresh, apply, and "save as a style".

    The list is filled per page load (styles.csv may change); the handlers check names themselves, so a
    script's session with an older list is told which name is unknown rather than refused by Gradio.
    """
    with gr.Row(equal_height=True):
        ui.styles = gr.Dropdown(label="Styles", choices=list(names or []), value=[], multiselect=True, scale=6,
                                allow_custom_value=True, elem_id=ui.eid("styles"),
                                info="Applied to the prompts when the job is built ({prompt} marks where yours goes).")
        ui.styles_refresh = gr.Button("↻", scale=0, min_width=48, elem_id=ui.eid("styles-refresh"))
        ui.styles_apply = gr.Button("Apply styles to prompt", scale=1, size="sm", elem_id=ui.eid("styles-apply"))
    with gr.Accordion("Save the prompts as a style", open=False, elem_id=ui.eid("style-save-box")):
        with gr.Row(equal_height=True):
            ui.style_name = gr.Textbox(label="Style name", placeholder="My style", scale=3,
                                       elem_id=ui.eid("style-name"))
            ui.save_style = gr.Button("Save style", scale=1, elem_id=ui.eid("save-style"))
        ui.style_status = gr.Markdown("", label="Style status", elem_id=ui.eid("style-status"))


def sampler_controls(ui: FormParts, samplers: list[str], schedules: list[str]) -> None:
    f = ui.fields
    with gr.Row():
        f["sampler"] = gr.Dropdown(label=LABELS["sampler"], choices=samplers, value=pick(samplers, "Euler a"),
                                   elem_id=ui.eid("sampler"))
        f["schedule"] = gr.Dropdown(label=LABELS["schedule"], choices=schedules, value=pick(schedules, "Automatic"),
                                    elem_id=ui.eid("schedule"))
    with gr.Row():
        f["steps"] = gr.Slider(1, 150, value=DEFAULTS["steps"], step=1, label=LABELS["steps"], elem_id=ui.eid("steps"))
        f["cfg_scale"] = gr.Slider(0, 30, value=DEFAULTS["cfg_scale"], step=0.5, label=LABELS["cfg_scale"],
                                   elem_id=ui.eid("cfg"))


def size_controls(ui: FormParts, max_side: int = SLIDER_MAX_SIDE, size_buttons: bool = True) -> None:
    f = ui.fields
    with gr.Row(equal_height=True):
        f["width"] = gr.Slider(64, max_side, value=DEFAULTS["width"], step=8, label=LABELS["width"],
                               elem_id=ui.eid("width"))
        f["height"] = gr.Slider(64, max_side, value=DEFAULTS["height"], step=8, label=LABELS["height"],
                                elem_id=ui.eid("height"))
    if size_buttons:
        ui.size_buttons = gr.Radio(choices=size_choices("sd1"), value=None, label="Sizes for this model",
                                   elem_id=ui.eid("sizes"), elem_classes=["sd-sizes"])


def seed_and_batch(ui: FormParts) -> None:
    f = ui.fields
    with gr.Row(equal_height=True):
        f["seed"] = gr.Number(label=LABELS["seed"], info="-1 = random", value=-1, precision=0, scale=4,
                              elem_id=ui.eid("seed"))
        ui.random_seed = gr.Button("⚄", scale=0, min_width=48, elem_id=ui.eid("seed-random"))
        ui.reuse_seed = gr.Button("↺", scale=0, min_width=48, elem_id=ui.eid("seed-reuse"))
    with gr.Row():
        f["batch_count"] = gr.Slider(1, 100, value=1, step=1, label=LABELS["batch_count"],
                                     elem_id=ui.eid("batch-count"))
        f["batch_size"] = gr.Slider(1, 8, value=1, step=1, label=LABELS["batch_size"], elem_id=ui.eid("batch-size"))


def request_options(ui: FormParts, token_merging_ratio: float = 0.0, emphasis: str = "Original") -> None:
    """The request's less common fields (VAE tiling, clip skip, emphasis, token merging), for an Advanced accordion.

    ``emphasis`` starts at the saved setting; changing it saves the setting (``form_events.wire_emphasis``).
    """
    f = ui.fields
    with gr.Row():
        f["vae_tiling"] = gr.Checkbox(label=LABELS["vae_tiling"], value=False, info="Large images with less memory.",
                                      elem_id=ui.eid("vae-tiling"))
        f["clip_skip"] = gr.Slider(1, 12, value=1, step=1, label=LABELS["clip_skip"], elem_id=ui.eid("clip-skip"))
        f["emphasis"] = gr.Dropdown(list(EMPHASIS_MODES), value=emphasis if emphasis in EMPHASIS_MODES else "Original",
                                    label=LABELS["emphasis"], elem_id=ui.eid("emphasis"),
                                    info="(word:1.2) weights: Original restores the mean, No norm does not, "
                                         "Ignore reads them as weight 1.")
    f["token_merging_ratio"] = gr.Slider(0, 0.9, value=token_merging_ratio, step=0.05,
                                         label=LABELS["token_merging_ratio"], elem_id=ui.eid("token-merging"),
                                         info="Faster on big images at some cost in detail; 0 = off.")


def results_column(ui: FormParts, send_buttons: bool = True) -> None:
    """Progress, preview, the images, their parameters and what can be done with the selected one."""
    ui.progress = gr.HTML("", label="Progress", elem_id=ui.eid("progress"))
    ui.error = gr.HTML("", label="Error", elem_id=ui.eid("error"))
    ui.preview = gr.Image(label="Preview", visible=False, interactive=False, height=256, elem_id=ui.eid("preview"))
    ui.gallery = gr.Gallery(label="Images", columns=2, height=520, object_fit="contain", preview=True,
                            elem_id=ui.eid("results"), format="png")
    with gr.Row():
        ui.reuse_image_seed = gr.Button("Reuse this seed", size="sm", elem_id=ui.eid("reuse-image-seed"))
        ui.reuse_all = gr.Button("Reuse all parameters", size="sm", elem_id=ui.eid("reuse-all"))
    if send_buttons:
        with gr.Row():
            ui.send_img2img, ui.send_inpaint = send_buttons_row(ui.eid(""))
            ui.send_extras = gr.Button("Send to extras", size="sm", elem_id=ui.eid("send-extras"))
    ui.info = gr.Textbox(label="Parameters", lines=4, interactive=False, elem_id=ui.eid("info"), buttons=["copy"])


def send_buttons_row(prefix: str) -> tuple[Any, Any]:
    """The "Send to img2img" and "Send to inpaint" buttons (inside the caller's row): ``{prefix}send-img2img``..."""
    to_img2img = gr.Button("Send to img2img", size="sm", elem_id=f"{prefix}send-img2img")
    to_inpaint = gr.Button("Send to inpaint", size="sm", elem_id=f"{prefix}send-inpaint")
    return to_img2img, to_inpaint


def pick(options: list[str], wanted: str) -> str | None:
    return wanted if wanted in options else (options[0] if options else None)


def size_choices(family: str) -> list[str]:
    return [f"{w}×{h}" for w, h in FAMILY_SIZES.get(family, FAMILY_SIZES["sd1"])]
