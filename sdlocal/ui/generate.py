"""The Generate tab (txt2img): the layout from ``generate_layout``, wired to handlers over the services.

Every handler is plain Python over the services (engine, queue, store, presets) and is a sync function, which
Gradio runs on a worker thread: model lookups (which may hash a file) never run on the event loop. Generation
runs only on the queue's worker thread; the Generate handler is a generator that polls ``queue.progress()`` to
stream the step, ETA and preview while the job runs.
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from sdlocal.engine.request import GenerationRequest
from sdlocal.forms import start_form
from sdlocal.presets import PresetError
from sdlocal.ui import runtime
from sdlocal.ui.common import DEFAULTS, FORM_FIELDS, UiState, coerce_fields, error_text
from sdlocal.ui.form_events import on_preset, stream_job, wire_results, wire_run, wire_seeds
from sdlocal.ui.generate_layout import NO_PRESET, GenerateTab, build_layout, size_choices
from sdlocal.ui.hires import HIRES_FIELDS, hires_spec, upscaler_update, wire_hires, wire_reuse_hires
from sdlocal.ui.lora_panel import wire_lora_panel
from sdlocal.ui.model_list import (
    UNSUPPORTED_PREFIX,
    current_model_name,
    empty_state_markdown,
    find_entry,
    load_status_text,
    model_choices,
    starter_dir,
)
from sdlocal.ui.script_run import row_text, run_script, wire_reuse_script, wire_scripts
from sdlocal.ui.styles_events import styled_form, wire_styles
from sdlocal.ui.vae_select import page_vae, request_vae, wire_reuse_vae, wire_vae


def build_generate_tab(services: Any, ui_state: UiState) -> GenerateTab:
    """The tab's components and events; ``ui.load`` and ``ui.status`` are for the app's page-load events."""
    # The engine's own tables (sdlocal.engine.samplers imports no torch): one list of names, not a copy here.
    ui = build_layout(services, list(services.engine.samplers()), list(services.engine.schedules()))
    _wire_models(ui, services)
    _wire_presets(ui, services)
    wire_seeds(ui)
    _wire_run(ui, services, ui_state)
    wire_results(ui, services.engine, ui.model)
    wire_vae(ui, services, ui_state)
    wire_reuse_vae(ui, services, ui.vae)
    wire_hires(ui.hires, ui.fields["width"], ui.fields["height"])
    wire_reuse_hires(ui.reuse_all, [ui.results, ui.selected], ui.hires)
    wire_reuse_script(ui.reuse_all, [ui.results, ui.selected], ui.scripts, services, row_text)
    runtime.wire(ui, services)
    wire_styles(ui, services)
    wire_lora_panel(ui.loras, services, ui.fields["prompt"])
    _wire_download(ui, services)
    ui.load = (lambda: page_state(services, ui_state), page_state_outputs(ui))
    ui.vae_load = (lambda: page_vae(services, ui_state), ui.vae)
    ui.hires_load = (lambda: upscaler_update(services.engine), ui.hires.fields["upscaler"])
    ui.status = (lambda: load_status_text(services), ui.load_status)
    return ui


# ---------------------------------------------------------------------------- model list
def refresh_models(services: Any, current: str | None, refresh_scan: bool = True) -> tuple[Any, Any, Any]:
    """Updates for (model, empty panel, empty text): the list of models, keeping ``current`` when it is there."""
    engine = services.engine
    try:
        entries = engine.models(refresh=refresh_scan)
    except Exception as exc:  # noqa: BLE001 - a scan error is shown, never an error page
        gr.Warning(f"Could not list models: {error_text(exc)}")
        entries = []
    supported = [e for e in entries if e.supported]
    names = [e.name for e in supported]
    value = current if current in names else current_model_name(engine, names)
    return (gr.update(choices=model_choices(entries), value=value), gr.update(visible=not supported),
            gr.update(value=empty_state_markdown(services)))


def on_model_change(services: Any, name: str | None, chose_preset: bool, *values: Any) -> list[Any]:
    """Picking a model: refuse unsupported files, offer its family's sizes and apply its preset.

    Returns updates for (model, size buttons, preset, family, *FORM_FIELDS controls).
    """
    engine, keep = services.engine, [gr.update() for _ in FORM_FIELDS]
    if not name:
        return [gr.update(), gr.update(), gr.update(), "sd1", *keep]
    if name.startswith(UNSUPPORTED_PREFIX):
        file = name[len(UNSUPPORTED_PREFIX):]
        gr.Warning(f"{file} cannot be used: {getattr(find_entry(engine, file), 'reason', 'unsupported')}")
        return [gr.update(value=current_model_name(engine, [])), gr.update(), gr.update(), "sd1", *keep]
    family = getattr(find_entry(engine, name), "family", None) or "sd1"
    sizes = gr.update(choices=size_choices(family), value=None)
    default = None if chose_preset else services.presets.for_family(family)
    if default is None:
        return [gr.update(), sizes, gr.update(), family, *keep]
    updated = {**dict(zip(FORM_FIELDS, values, strict=True)), **default.values()}
    return [gr.update(), sizes, gr.update(value=default.name), family,
            *[gr.update(value=updated[name]) for name in FORM_FIELDS]]


def _wire_models(ui: GenerateTab, services: Any) -> None:
    ui.refresh.click(lambda current: refresh_models(services, current), inputs=ui.model,
                     outputs=[ui.model, ui.empty_panel, ui.empty_text], api_name="refresh_models")

    def select_model(name: str | None, chose_preset: bool, *values: Any) -> list[Any]:
        return on_model_change(services, name, chose_preset, *values)

    ui.model.input(select_model, inputs=[ui.model, ui.user_preset, *ui.controls],
                   outputs=[ui.model, ui.size_buttons, ui.preset, ui.family, *ui.controls], api_name="select_model")


# ---------------------------------------------------------------------------- presets
def on_save_preset(presets: Any, name: str, family: str, *values: Any) -> tuple[Any, str]:
    """Save the form as a user preset: (preset dropdown update, status message)."""
    current = coerce_fields(dict(zip(FORM_FIELDS, values, strict=True)))
    try:
        saved = presets.save(name, family or "sd1", current)
    except PresetError as exc:
        return gr.update(), f"⚠ {exc}"
    return gr.update(choices=[NO_PRESET] + presets.names(), value=saved.name), f"Saved preset **{saved.name}**."


def _wire_presets(ui: GenerateTab, services: Any) -> None:
    presets = services.presets

    def apply_preset(name: str, *values: Any) -> list[Any]:
        return on_preset(presets, name, *values)

    def save_preset(name: str, family: str, *values: Any) -> tuple[Any, str]:
        return on_save_preset(presets, name, family, *values)

    ui.preset.input(apply_preset, inputs=[ui.preset, *ui.controls], outputs=[ui.user_preset, *ui.controls],
                    api_name="apply_preset")
    ui.save_preset.click(save_preset, inputs=[ui.preset_name, ui.family, *ui.controls],
                         outputs=[ui.preset, ui.preset_status], api_name="save_preset")


# ---------------------------------------------------------------------------- generate
def txt2img_request(services: Any, model_name: str | None, *values: Any) -> tuple[GenerationRequest, dict, str]:
    """(the validated request, the form as saved, the VAE) from the tab's values (see ``run``)."""
    n = len(FORM_FIELDS)
    form = coerce_fields(dict(zip(FORM_FIELDS, values[:n], strict=True)))
    styles = values[n] if len(values) > n else []
    vae = request_vae(values[n + 1] if len(values) > n + 1 else None)
    hires = hires_spec(values[n + 2:n + 2 + len(HIRES_FIELDS)])
    if model_name and model_name.startswith(UNSUPPORTED_PREFIX):
        model_name = ""
    request = GenerationRequest.build(model=model_name or "", **styled_form(services, form, styles), vae=vae,
                                      hires=hires)
    return request, form, vae


def run(services: Any, ui_state: UiState, model_name: str | None, *values: Any):
    """Submit the txt2img request to the queue and stream its progress; errors become a message, never a crash.

    ``values`` are the FORM_FIELDS controls, then the styles picked (applied to the prompts here; the saved
    form keeps the prompts as typed), then the page's VAE, then the Hires fix section (``HIRES_FIELDS``; the
    saved form leaves it out). Yields (progress, error, preview, gallery, results, selected, info).
    """
    saved: dict[str, Any] = {}

    def submit() -> Any:
        request, form, vae = txt2img_request(services, model_name, *values)
        unsupported = not model_name or model_name.startswith(UNSUPPORTED_PREFIX)
        saved.update({"model": "" if unsupported else model_name, "form": form, "vae": vae})
        ui_state.save(saved)
        return services.queue.submit(request, save=True, source="ui")

    rows = yield from stream_job(services.queue, submit)
    if rows and saved:
        ui_state.save({**saved, "last_seed": rows[0][0]})


def _wire_run(ui: GenerateTab, services: Any, ui_state: UiState) -> None:
    base_inputs = [ui.model, *ui.controls, ui.styles, ui.vae, *ui.hires.controls]
    n = len(base_inputs)

    def build(values: tuple[Any, ...]) -> GenerationRequest:
        return txt2img_request(services, *values)[0]

    def generate(*values: Any):
        name, args = ui.scripts.read(values[n:-1])
        if name is None:
            for update in run(services, ui_state, *values[:n]):
                yield (*update, gr.update())
            return
        yield from run_script(services, lambda: build(values[:n]), name, args, values[-1])

    names = {"generate": "generate", "interrupt": "interrupt", "skip": "skip"}
    inputs = [*base_inputs, *ui.scripts.inputs, ui.scripts.pending]
    events = wire_run(ui, services.queue, generate, inputs, names, extra_outputs=[ui.scripts.pending])
    for finished in events:
        finished.then(lambda: cpu_banner_update(services), outputs=ui.cpu_warning, api_visibility="private")
    counted = [ui.fields[name] for name in ("prompt", "steps", "batch_count", "batch_size", "width", "height")]
    wire_scripts(ui.scripts, services, base_inputs, build, also=[*counted, ui.hires.fields["enabled"]])


# ---------------------------------------------------------------------------- starter download
def _wire_download(ui: GenerateTab, services: Any) -> None:
    def do_download(progress_bar=gr.Progress()):  # noqa: B008 - gradio's documented pattern
        from sdlocal.starter import StarterDownloadError, download_starter

        def report(done: int, total: int) -> None:
            progress_bar(done / total if total else None, desc=f"{done / 1e9:.2f} of {total / 1e9:.2f} GB")

        try:
            path = download_starter(starter_dir(services), progress=report)
        except StarterDownloadError as exc:
            gr.Warning(str(exc))
            return f"⚠ {exc}", *refresh_models(services, None)
        return f"Downloaded and verified `{path}`.", *refresh_models(services, None)

    ui.download.click(do_download, outputs=[ui.download_status, ui.model, ui.empty_panel, ui.empty_text],
                      api_name="download_starter")


# ---------------------------------------------------------------------------- page load
def page_state_outputs(ui: GenerateTab) -> list[Any]:
    """The components ``page_state`` fills, in its order."""
    return [ui.model, ui.empty_panel, ui.empty_text, ui.preset_problems, ui.cpu_warning, *runtime.load_outputs(ui),
            ui.last_seed, ui.preset, ui.user_preset, ui.size_buttons, ui.family, *ui.controls]


def page_state(services: Any, ui_state: UiState) -> list[Any]:
    """What a page shows when it opens: the models, the saved (or first-start) form, warnings and problems.

    With no saved form (a first start) the form gets the shown model's family preset and the Preset box its
    name, as picking that model would; the user has not chosen it, so picking another model still applies its own.
    """
    presets = services.presets
    saved = ui_state.load()
    model_update, empty_update, empty_text_update = refresh_models(services, saved.get("model"), refresh_scan=False)
    entry = find_entry(services.engine, model_update.get("value")) if model_update.get("value") else None
    family = getattr(entry, "family", None) or "sd1"
    saved_form = {k: v for k, v in (saved.get("form") or {}).items() if k in DEFAULTS}
    start = start_form(saved_form, services.settings, presets, family if entry is not None else None)
    form = {**DEFAULTS, **{k: v for k, v in start.values.items() if k in DEFAULTS}}
    form["emphasis"] = getattr(services.settings, "emphasis", DEFAULTS["emphasis"])  # a setting, not a form value
    caps = runtime.capabilities(services)
    return [
        model_update, empty_update, empty_text_update, _problems_update(presets, start.preset_problem),
        _warnings_update(caps, services), *runtime.load_updates(services, caps),
        saved.get("last_seed", -1), gr.update(choices=[NO_PRESET] + presets.names(), value=start.preset or NO_PRESET),
        start.chose, gr.update(choices=size_choices(family), value=None), family,
        *[gr.update(value=form[name]) for name in FORM_FIELDS],
    ]


def _problems_update(presets: Any, preset_problem: str) -> Any:
    """The preset files that were skipped, and why ``--preset`` could not be applied."""
    problems = [f"- `{p}`" for p in getattr(presets, "problems", [])]
    text = "**Some preset files were skipped:**\n" + "\n".join(problems) if problems else ""
    if preset_problem:
        text = (text + "\n" if text else "") + f"**--preset:** {preset_problem}"
    return gr.update(value=text, visible=bool(text))


def _warnings_update(caps: Any, services: Any) -> Any:
    """The device warnings and, on the CPU, the measured time per image (``Services.cpu_banner``)."""
    lines = [f"⚠ {warning}" for warning in getattr(caps, "warnings", None) or []]
    banner = getattr(services, "cpu_banner", None)
    if getattr(caps, "device", None) == "cpu" and callable(banner):
        lines.append(banner())
    return gr.update(value="".join(f'<div class="sd-cpu">{html.escape(line)}</div>' for line in lines),
                     visible=bool(lines))


def cpu_banner_update(services: Any) -> Any:
    """The banner again after a generation, so the time per image follows the newest measurement."""
    return _warnings_update(runtime.capabilities(services), services)
