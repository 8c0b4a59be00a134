"""The Generate tab's components, laid out; ``generate.py`` wires them to handlers.

``build_layout`` only places components and returns them in a ``GenerateTab``: no event is attached here, so
the page's shape can be read in one place, and another tab (img2img) can reuse the pieces it shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from sdlocal.ui.components import (
    NO_PRESET,
    FormParts,
    pick,
    preset_dropdown,
    prompt_and_buttons,
    request_options,
    results_column,
    sampler_controls,
    seed_and_batch,
    size_choices,
    size_controls,
)
from sdlocal.ui.hires import HiresSection, hires_section
from sdlocal.ui.lora_panel import lora_panel
from sdlocal.ui.model_list import empty_state_markdown
from sdlocal.ui.scripts import script_section
from sdlocal.ui.vae_select import vae_controls

__all__ = ["NO_PRESET", "GenerateTab", "build_layout", "low_memory_mode", "pick", "size_choices"]
LOW_MEMORY_MODES = ("off", "medvram", "lowvram")


@dataclass
class GenerateTab(FormParts):
    """Every component of the tab: the shared form (``FormParts``) and what only txt2img has."""

    load: tuple[Any, list[Any]] | None = None  # (page-load handler, its outputs), for the app's Blocks.load
    vae_load: tuple[Any, Any] | None = None  # (page-load handler of the VAE list, the dropdown)
    hires_load: tuple[Any, Any] | None = None  # (page-load handler of hires fix's upscaler list, the dropdown)
    status: tuple[Any, Any] | None = None  # (status text function, the status Markdown), for the app's timer
    # the model row
    cpu_warning: Any = None
    load_status: Any = None
    model: Any = None
    refresh: Any = None
    vae: Any = None  # the page's VAE (A1111's sd_vae quick setting), for txt2img and img2img (``vae_select``)
    vae_refresh: Any = None
    preset_problems: Any = None
    hires: HiresSection | None = None  # the Hires fix section (``sdlocal.ui.hires``)
    empty_panel: Any = None
    empty_text: Any = None
    download: Any = None
    download_status: Any = None
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
    # per-session state (the shared ones are in FormParts)
    user_preset: Any = None  # gr.State: True once the user picked a preset themselves
    family: Any = None  # gr.State: the family of the model picked (for saving a preset)


def build_layout(services: Any, samplers: list[str], schedules: list[str]) -> GenerateTab:
    """Place the tab's components (inside the caller's ``gr.Tabs``) and return them."""
    ui = GenerateTab(prefix="sd-")
    with gr.Tab("Generate", id="generate") as ui.tab:
        _model_row(ui, services)
        _empty_panel(ui, services)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=360):
                prompt_and_buttons(ui)
                ui.loras = lora_panel(ui)
                sampler_controls(ui, samplers, schedules)
                size_controls(ui)
                seed_and_batch(ui)
                ui.hires = hires_section(ui.prefix, samplers, schedules)
                with gr.Accordion("Advanced", open=False, elem_id="sd-advanced"):
                    _advanced(ui, services)
                ui.scripts = script_section(ui.prefix, False, services)
            with gr.Column(scale=6, min_width=360):
                results_column(ui)
        ui.finish()
        ui.user_preset, ui.family = gr.State(False), gr.State("sd1")
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
        vae_controls(ui)
        preset_dropdown(ui, services.presets.names())
    ui.preset_problems = gr.Markdown("", label="Preset problems", visible=False, elem_classes=["sd-warning"],
                                     elem_id="sd-preset-problems")


def _empty_panel(ui: GenerateTab, services: Any) -> None:
    with gr.Column(visible=False, elem_classes=["sd-empty"], elem_id="sd-empty") as ui.empty_panel:
        ui.empty_text = gr.Markdown(empty_state_markdown(services), label="No models")
        ui.download = gr.Button("Download the starter model (SD 1.5)", variant="secondary",
                                  elem_id="sd-download")
        ui.download_status = gr.Markdown("", label="Download status")


def _advanced(ui: GenerateTab, services: Any) -> None:
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
    ratio = float(getattr(services.settings, "token_merging_ratio", 0.0) or 0.0)  # --token-merging-ratio
    request_options(ui, ratio, getattr(services.settings, "emphasis", "Original"))
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
