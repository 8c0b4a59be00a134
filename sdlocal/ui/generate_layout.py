"""The Generate tab's components, laid out; ``generate.py`` wires them to handlers.

``build_layout`` only places components and returns them in a ``GenerateTab``: no event is attached here, so
the page's shape can be read in one place, and another tab (img2img) can reuse the pieces it shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from sdlocal.presets import FAMILY_SIZES
from sdlocal.ui.common import DEFAULTS, FORM_FIELDS, LABELS
from sdlocal.ui.model_list import empty_state_markdown

NO_PRESET = "(keep my settings)"
LOW_MEMORY_MODES = ("off", "medvram", "lowvram")


@dataclass
class GenerateTab:
    """Every component of the tab. ``fields`` maps FORM_FIELDS names to controls; ``controls`` is them in order."""

    fields: dict[str, Any] = field(default_factory=dict)
    controls: list[Any] = field(default_factory=list)
    load: tuple[Any, list[Any]] | None = None  # (page-load handler, its outputs), for the app's Blocks.load
    status: tuple[Any, Any] | None = None  # (status text function, the status Markdown), for the app's timer
    tab: Any = None
    # the model row
    cpu_warning: Any = None
    load_status: Any = None
    model: Any = None
    refresh: Any = None
    preset: Any = None
    preset_problems: Any = None
    empty_panel: Any = None
    empty_text: Any = None
    download: Any = None
    download_status: Any = None
    # the form (the request controls are in ``fields``)
    generate: Any = None
    interrupt: Any = None
    skip: Any = None
    size_buttons: Any = None
    random_seed: Any = None
    reuse_seed: Any = None
    # Advanced
    precision: Any = None
    attention: Any = None
    fast_mode: Any = None
    attention_slicing: Any = None
    vae_slicing: Any = None
    cpu_offload: Any = None
    low_memory: Any = None  # "off", "medvram" or "lowvram"
    runtime_status: Any = None
    preset_name: Any = None
    save_preset: Any = None
    preset_status: Any = None
    # results
    progress: Any = None
    error: Any = None
    preview: Any = None
    gallery: Any = None
    reuse_image_seed: Any = None
    reuse_all: Any = None
    info: Any = None
    # per-session state
    results: Any = None  # gr.State [(seed, infotext, path)] of the run shown
    selected: Any = None  # gr.State: the index of the image selected in the results
    last_seed: Any = None  # gr.State: the first seed of the last run, for the ↺ button
    user_preset: Any = None  # gr.State: True once the user picked a preset themselves
    family: Any = None  # gr.State: the family of the model picked (for saving a preset)


def build_layout(services: Any, samplers: list[str], schedules: list[str]) -> GenerateTab:
    """Place the tab's components (inside the caller's ``gr.Tabs``) and return them."""
    ui = GenerateTab()
    with gr.Tab("Generate", id="generate") as ui.tab:
        _model_row(ui, services)
        _empty_panel(ui, services)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=360):
                _prompt_and_buttons(ui)
                _form_controls(ui, samplers, schedules)
                with gr.Accordion("Advanced", open=False, elem_id="sd-advanced"):
                    _advanced(ui, services)
            with gr.Column(scale=6, min_width=360):
                _results(ui)
        ui.results, ui.selected, ui.last_seed = gr.State([]), gr.State(0), gr.State(-1)
        ui.user_preset, ui.family = gr.State(False), gr.State("sd1")
    ui.controls = [ui.fields[name] for name in FORM_FIELDS]
    return ui


def _model_row(ui: GenerateTab, services: Any) -> None:
    ui.cpu_warning = gr.HTML("", label="CPU warning", elem_id="sd-cpu-warning", visible=False)
    ui.load_status = gr.Markdown("Starting…", label="Model status", elem_id="sd-load-status")
    with gr.Row(equal_height=True):
        # The model and preset lists are filled per page load (models and presets come and go), so a script's
        # session may not hold the current list: Gradio would refuse any name as "not in the list of choices".
        # The handlers check names themselves (unknown model or preset -> a message).
        ui.model = gr.Dropdown(
            label="Model", choices=[], value=None, scale=6, elem_id="sd-model", interactive=True,
            allow_custom_value=True,
            info="Family and short hash are shown; ⊘ marks files sdlocal cannot run, with the reason.",
        )
        ui.refresh = gr.Button("↻ Refresh", scale=1, min_width=110, elem_id="sd-refresh")
        ui.preset = gr.Dropdown(label="Preset", choices=[NO_PRESET] + services.presets.names(), value=NO_PRESET,
                                scale=3, elem_id="sd-preset", allow_custom_value=True)
    ui.preset_problems = gr.Markdown("", label="Preset problems", visible=False, elem_classes=["sd-warning"],
                                     elem_id="sd-preset-problems")


def _empty_panel(ui: GenerateTab, services: Any) -> None:
    with gr.Column(visible=False, elem_classes=["sd-empty"], elem_id="sd-empty") as ui.empty_panel:
        ui.empty_text = gr.Markdown(empty_state_markdown(services), label="No models")
        ui.download = gr.Button("Download the starter model (SD 1.5)", variant="secondary",
                                  elem_id="sd-download")
        ui.download_status = gr.Markdown("", label="Download status")


def _prompt_and_buttons(ui: GenerateTab) -> None:
    f = ui.fields
    f["prompt"] = gr.Textbox(label=LABELS["prompt"], lines=3, elem_id="sd-prompt",
                             placeholder="a lighthouse on a cliff at dawn, oil painting")
    f["negative_prompt"] = gr.Textbox(label=LABELS["negative_prompt"], lines=2, elem_id="sd-negative")
    with gr.Row():
        ui.generate = gr.Button("Generate", variant="primary", scale=3, elem_id="sd-generate")
        ui.interrupt = gr.Button("Interrupt", variant="stop", scale=1, elem_id="sd-interrupt")
        ui.skip = gr.Button("Skip", scale=1, elem_id="sd-skip")


def _form_controls(ui: GenerateTab, samplers: list[str], schedules: list[str]) -> None:
    f = ui.fields
    with gr.Row():
        f["sampler"] = gr.Dropdown(label=LABELS["sampler"], choices=samplers, value=pick(samplers, "Euler a"))
        f["schedule"] = gr.Dropdown(label=LABELS["schedule"], choices=schedules, value=pick(schedules, "Automatic"))
    with gr.Row():
        f["steps"] = gr.Slider(1, 150, value=DEFAULTS["steps"], step=1, label=LABELS["steps"], elem_id="sd-steps")
        f["cfg_scale"] = gr.Slider(0, 30, value=DEFAULTS["cfg_scale"], step=0.5, label=LABELS["cfg_scale"])
    with gr.Row(equal_height=True):
        f["width"] = gr.Slider(64, 2048, value=DEFAULTS["width"], step=8, label=LABELS["width"], elem_id="sd-width")
        f["height"] = gr.Slider(64, 2048, value=DEFAULTS["height"], step=8, label=LABELS["height"],
                                elem_id="sd-height")
    ui.size_buttons = gr.Radio(choices=size_choices("sd1"), value=None, label="Sizes for this model",
                               elem_id="sd-sizes", elem_classes=["sd-sizes"])
    with gr.Row(equal_height=True):
        f["seed"] = gr.Number(label=LABELS["seed"], info="-1 = random", value=-1, precision=0, scale=4,
                              elem_id="sd-seed")
        ui.random_seed = gr.Button("⚄", scale=0, min_width=48, elem_id="sd-seed-random")
        ui.reuse_seed = gr.Button("↺", scale=0, min_width=48, elem_id="sd-seed-reuse")
    with gr.Row():
        f["batch_count"] = gr.Slider(1, 100, value=1, step=1, label=LABELS["batch_count"])
        f["batch_size"] = gr.Slider(1, 8, value=1, step=1, label=LABELS["batch_size"])


def _advanced(ui: GenerateTab, services: Any) -> None:
    f = ui.fields
    config = getattr(services.engine, "config", None)
    with gr.Row():
        ui.precision = gr.Radio(["auto", "fp16", "bf16", "fp32"], value="auto", label="Precision",
                                elem_id="sd-precision")
        ui.attention = gr.Radio(["auto", "sdpa", "xformers"], value="auto", label="Attention",
                                elem_id="sd-attention")
    ui.fast_mode = gr.Checkbox(
        label="Fast mode", value=bool(getattr(config, "fast", False)),
        info="torch.compile, channels-last and fused attention on NVIDIA GPUs (the first image at each size "
             "compiles first); on the CPU channels-last only, a few percent faster.",
        elem_id="sd-fast")
    _memory_controls(ui, services.settings)
    ui.runtime_status = gr.Markdown("", label="Runtime status")
    with gr.Row():
        f["vae_tiling"] = gr.Checkbox(label=LABELS["vae_tiling"], value=False, info="Large images with less memory.")
        f["clip_skip"] = gr.Slider(1, 12, value=1, step=1, label=LABELS["clip_skip"])
    ratio = float(getattr(services.settings, "token_merging_ratio", 0.0) or 0.0)  # --token-merging-ratio
    f["token_merging_ratio"] = gr.Slider(0, 0.9, value=ratio, step=0.05, label=LABELS["token_merging_ratio"],
                                         info="Faster on big images at some cost in detail; 0 = off.")
    with gr.Row(equal_height=True):
        ui.preset_name = gr.Textbox(label="Save these settings as a preset", placeholder="My portrait", scale=3,
                                    elem_id="sd-preset-name")
        ui.save_preset = gr.Button("Save preset", scale=1, elem_id="sd-save-preset")
    ui.preset_status = gr.Markdown("", label="Preset status")


def _memory_controls(ui: GenerateTab, settings: Any) -> None:
    """Memory savers, initialised from the settings (flags); changing one reloads the model (see runtime.py)."""
    with gr.Row():
        ui.attention_slicing = gr.Checkbox(label="Attention slicing", elem_id="sd-attention-slicing",
                                           value=bool(getattr(settings, "attention_slicing", False)),
                                           info="Attention in pieces: less memory, a little slower.")
        ui.vae_slicing = gr.Checkbox(label="VAE slicing", value=bool(getattr(settings, "vae_slicing", False)),
                                     info="Decodes a batch one image at a time.", elem_id="sd-vae-slicing")
        ui.cpu_offload = gr.Checkbox(label="CPU offload (NVIDIA)", elem_id="sd-cpu-offload",
                                     value=bool(getattr(settings, "cpu_offload", False)),
                                     info="Each model part moves to the GPU only while it runs: far less GPU "
                                          "memory, slower.")
    ui.low_memory = gr.Radio(list(LOW_MEMORY_MODES), value=low_memory_mode(settings), label="Low memory mode",
                             elem_id="sd-low-memory",
                             info="medvram: models move to the GPU only while they run, VAE sliced (about 4 GB "
                                  "cards); lowvram: layer by layer, attention sliced too (2 GB cards; slow).")


def low_memory_mode(config: Any) -> str:
    """The radio's value for settings or an engine config: lowvram wins over medvram, as in the engine."""
    if getattr(config, "lowvram", False):
        return "lowvram"
    return "medvram" if getattr(config, "medvram", False) else "off"


def _results(ui: GenerateTab) -> None:
    ui.progress = gr.HTML("", label="Progress", elem_id="sd-progress")
    ui.error = gr.HTML("", label="Error", elem_id="sd-error")
    ui.preview = gr.Image(label="Preview", visible=False, interactive=False, height=256, elem_id="sd-preview")
    ui.gallery = gr.Gallery(label="Images", columns=2, height=520, object_fit="contain", preview=True,
                            elem_id="sd-results", format="png")
    with gr.Row():
        ui.reuse_image_seed = gr.Button("Reuse this seed", size="sm", elem_id="sd-reuse-image-seed")
        ui.reuse_all = gr.Button("Reuse all parameters", size="sm", elem_id="sd-reuse-all")
    ui.info = gr.Textbox(label="Parameters", lines=4, interactive=False, elem_id="sd-info", buttons=["copy"])


def pick(options: list[str], wanted: str) -> str | None:
    return wanted if wanted in options else (options[0] if options else None)


def size_choices(family: str) -> list[str]:
    return [f"{w}×{h}" for w, h in FAMILY_SIZES.get(family, FAMILY_SIZES["sd1"])]
