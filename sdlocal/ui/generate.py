"""The Generate tab (txt2img): model picker, the form, presets, Generate/Interrupt/Skip, live progress, results.

Every event function here is plain Python over the services (engine, queue, store, presets); generation itself
runs only on the queue's worker thread, and the Generate handler is a generator that polls ``queue.progress()``
to stream the step, ETA and preview while the job runs.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from sdlocal.engine.request import GenerationRequest, RequestError
from sdlocal.presets import FAMILY_LABELS, FAMILY_SIZES, PresetError
from sdlocal.ui.common import DEFAULTS, FORM_FIELDS, LABELS, UiState, coerce_fields, error_box, error_text

NO_PRESET = "(keep my settings)"
UNSUPPORTED_PREFIX = "!unsupported:"
FALLBACK_SAMPLERS = ["Euler a", "Euler", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ SDE", "DDIM", "UniPC", "LCM"]
FALLBACK_SCHEDULES = ["Automatic", "Karras", "Exponential", "SGM Uniform"]
POLL_SECONDS = 0.25


@dataclass
class GenerateTab:
    """The components other tabs need: the form controls (in FORM_FIELDS order) and the tab itself."""

    tab: Any
    model: Any
    preset: Any
    fields: dict[str, Any]
    controls: list[Any] = field(default_factory=list)  # the FORM_FIELDS controls, in order
    user_preset: Any = None  # gr.State: True once the user picked a preset themselves


# ---------------------------------------------------------------------------- model list
def model_choices(entries: list[Any]) -> list[tuple[str, str]]:
    """Dropdown choices: supported models with family and short hash; unsupported files marked, with their reason."""
    supported = [e for e in entries if e.supported]
    unsupported = [e for e in entries if not e.supported]
    choices = [(model_label(e), e.name) for e in supported]
    choices += [(f"⊘ {e.name} (unsupported: {e.reason})", UNSUPPORTED_PREFIX + e.name) for e in unsupported]
    return choices


def model_label(entry: Any) -> str:
    family = FAMILY_LABELS.get(entry.family or "", entry.family or "?")
    extra = " inpainting" if getattr(entry, "inpainting", False) else ""
    hash_part = f" [{entry.short_hash}]" if getattr(entry, "short_hash", None) else ""
    return f"{entry.name}{hash_part} · {family}{extra}"


def models_folders(services: Any) -> list[str]:
    """The folders discovery scans, for the empty-state panel."""
    engine = services.engine
    for attr in ("scan_roots", "model_folders", "models_folders"):
        method = getattr(engine, attr, None)
        if callable(method):
            try:
                return [str(p) for p in method()]
            except Exception:  # noqa: BLE001 - a listing for display only
                break
    config = getattr(engine, "config", None)
    folders: list[str] = []
    if config is not None:
        folders.append(str(config.own_models_dir / "Stable-diffusion"))
        folders += [str(p) for p in getattr(config, "models_dirs", [])]
    return folders


def starter_dir(services: Any):
    config = getattr(services.engine, "config", None)
    if config is not None:
        return config.own_models_dir / "Stable-diffusion"
    return services.settings.data_dir / "models" / "Stable-diffusion"


def empty_state_markdown(services: Any) -> str:
    folders = "\n".join(f"- `{folder}`" for folder in models_folders(services)) or "- (none configured)"
    return (
        "### No models yet\n"
        "sdlocal needs a Stable Diffusion checkpoint (SD 1.x, SD 2.x or SDXL) as a `.safetensors` or `.ckpt` file, "
        "or a diffusers folder. Put one into any of these folders, then press **↻ Refresh**:\n"
        f"{folders}\n\n"
        "An existing AUTOMATIC1111, Forge or ComfyUI install can be used in place: start sdlocal with "
        "`--models-dir <its folder>`. Or download the standard starter model below (about 4.3 GB, checked "
        "against its published sha256)."
    )


# ---------------------------------------------------------------------------- progress
def progress_html(state: Any) -> str:
    """A progress bar with step, batch and ETA from the queue's ProgressState (duck-typed on purpose)."""
    if state is None:
        return ""
    text = html.escape(str(getattr(state, "text", "") or getattr(state, "state", "") or "Working…"))
    step = getattr(state, "step", 0) or 0
    total = getattr(state, "total_steps", 0) or 0
    fraction = getattr(state, "fraction", None)
    if fraction is None:
        fraction = step / total if total else 0.0
    parts = []
    if total:
        parts.append(f"step {step}/{total}")
    batch_count = getattr(state, "batch_count", 0) or 0
    if batch_count > 1:
        parts.append(f"batch {(getattr(state, 'batch_index', 0) or 0) + 1}/{batch_count}")
    eta = getattr(state, "eta_seconds", None)
    if eta is not None and total:
        parts.append(f"ETA {_seconds(eta)}")
    waiting = getattr(state, "queue_position", None) or 0
    if waiting:
        parts.append(f"{waiting} ahead in the queue")
    detail = " · ".join(parts)
    percent = max(0.0, min(1.0, float(fraction))) * 100
    return (
        f'<div class="sd-progress"><div class="sd-progress-bar" style="width:{percent:.1f}%"></div>'
        f'<div class="sd-progress-text">{text} {detail} ({percent:.0f}%)</div></div>'
    )


def _seconds(value: float) -> str:
    value = max(0.0, float(value))
    return f"{value:.0f} s" if value < 90 else f"{value / 60:.1f} min"


# ---------------------------------------------------------------------------- the tab
def build_generate_tab(services: Any, ui_state: UiState) -> GenerateTab:
    engine, queue, presets = services.engine, services.queue, services.presets
    samplers = _safe_list(engine.samplers, FALLBACK_SAMPLERS)
    schedules = _safe_list(engine.schedules, FALLBACK_SCHEDULES)

    with gr.Tab("Generate", id="generate") as tab:
        cpu_warning = gr.HTML("", label="CPU warning", elem_id="sd-cpu-warning", visible=False)
        load_status = gr.Markdown("Starting…", label="Model status", elem_id="sd-load-status")
        with gr.Row(equal_height=True):
            # The model and preset lists are filled per page load (models and presets come and go), so a
            # script's session may not hold the current list: Gradio would refuse any name as "not in the list
            # of choices". The handlers check names themselves (unknown model or preset -> a message).
            model = gr.Dropdown(
                label="Model", choices=[], value=None, scale=6, elem_id="sd-model", interactive=True,
                allow_custom_value=True,
                info="Family and short hash are shown; ⊘ marks files sdlocal cannot run, with the reason.",
            )
            refresh = gr.Button("↻ Refresh", scale=1, min_width=110, elem_id="sd-refresh")
            preset = gr.Dropdown(
                label="Preset", choices=[NO_PRESET] + presets.names(), value=NO_PRESET, scale=3, elem_id="sd-preset",
                allow_custom_value=True,
            )
        preset_problems = gr.Markdown("", label="Preset problems", visible=False, elem_classes=["sd-warning"],
                                      elem_id="sd-preset-problems")

        with gr.Column(visible=False, elem_classes=["sd-empty"], elem_id="sd-empty") as empty_panel:
            empty_text = gr.Markdown(empty_state_markdown(services), label="No models")
            download = gr.Button("Download the starter model (SD 1.5)", variant="secondary", elem_id="sd-download")
            download_status = gr.Markdown("", label="Download status")

        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=360):
                prompt = gr.Textbox(label=LABELS["prompt"], lines=3, elem_id="sd-prompt",
                                    placeholder="a lighthouse on a cliff at dawn, oil painting")
                negative = gr.Textbox(label=LABELS["negative_prompt"], lines=2, elem_id="sd-negative")
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary", scale=3, elem_id="sd-generate")
                    interrupt_btn = gr.Button("Interrupt", variant="stop", scale=1, elem_id="sd-interrupt")
                    skip_btn = gr.Button("Skip", scale=1, elem_id="sd-skip")
                with gr.Row():
                    sampler = gr.Dropdown(label=LABELS["sampler"], choices=samplers, value=_pick(samplers, "Euler a"))
                    schedule = gr.Dropdown(label=LABELS["schedule"], choices=schedules,
                                           value=_pick(schedules, "Automatic"))
                with gr.Row():
                    steps = gr.Slider(1, 150, value=DEFAULTS["steps"], step=1, label=LABELS["steps"],
                                      elem_id="sd-steps")
                    cfg = gr.Slider(0, 30, value=DEFAULTS["cfg_scale"], step=0.5, label=LABELS["cfg_scale"])
                with gr.Row(equal_height=True):
                    width = gr.Slider(64, 2048, value=DEFAULTS["width"], step=8, label=LABELS["width"],
                                      elem_id="sd-width")
                    height = gr.Slider(64, 2048, value=DEFAULTS["height"], step=8, label=LABELS["height"],
                                       elem_id="sd-height")
                size_buttons = gr.Radio(
                    choices=_size_choices("sd1"), value=None, label="Sizes for this model", elem_id="sd-sizes",
                    elem_classes=["sd-sizes"],
                )
                with gr.Row(equal_height=True):
                    seed = gr.Number(label=LABELS["seed"], info="-1 = random", value=-1, precision=0, scale=4,
                                     elem_id="sd-seed")
                    random_seed = gr.Button("⚄", scale=0, min_width=48, elem_id="sd-seed-random")
                    reuse_seed = gr.Button("↺", scale=0, min_width=48, elem_id="sd-seed-reuse")
                with gr.Row():
                    batch_count = gr.Slider(1, 100, value=1, step=1, label=LABELS["batch_count"])
                    batch_size = gr.Slider(1, 8, value=1, step=1, label=LABELS["batch_size"])
                with gr.Accordion("Advanced", open=False, elem_id="sd-advanced"):
                    with gr.Row():
                        precision = gr.Radio(["auto", "fp16", "bf16", "fp32"], value="auto", label="Precision",
                                             elem_id="sd-precision")
                        attention = gr.Radio(["auto", "sdpa", "xformers"], value="auto", label="Attention",
                                             elem_id="sd-attention")
                    fast_mode = gr.Checkbox(
                        label="Fast mode", value=bool(getattr(getattr(engine, "config", None), "fast", False)),
                        info="torch.compile, channels-last and fused attention on NVIDIA GPUs (the first image at "
                             "each size compiles first); on the CPU channels-last only, a few percent faster.",
                        elem_id="sd-fast")
                    runtime_status = gr.Markdown("", label="Runtime status")
                    with gr.Row():
                        vae_tiling = gr.Checkbox(label=LABELS["vae_tiling"], value=False,
                                                 info="Large images with less memory.")
                        clip_skip = gr.Slider(1, 12, value=1, step=1, label=LABELS["clip_skip"])
                    token_merging = gr.Slider(0, 0.9, value=0, step=0.05, label=LABELS["token_merging_ratio"],
                                              info="Faster on big images at some cost in detail; 0 = off.")
                    with gr.Row(equal_height=True):
                        preset_name = gr.Textbox(label="Save these settings as a preset", placeholder="My portrait",
                                                 scale=3, elem_id="sd-preset-name")
                        save_preset = gr.Button("Save preset", scale=1, elem_id="sd-save-preset")
                    preset_status = gr.Markdown("", label="Preset status")
            with gr.Column(scale=6, min_width=360):
                progress = gr.HTML("", label="Progress", elem_id="sd-progress")
                error = gr.HTML("", label="Error", elem_id="sd-error")
                preview = gr.Image(label="Preview", visible=False, interactive=False, height=256, elem_id="sd-preview")
                gallery = gr.Gallery(label="Images", columns=2, height=520, object_fit="contain", preview=True,
                                     elem_id="sd-results", format="png")
                with gr.Row():
                    reuse_image_seed = gr.Button("Reuse this seed", size="sm", elem_id="sd-reuse-image-seed")
                    reuse_all = gr.Button("Reuse all parameters", size="sm", elem_id="sd-reuse-all")
                info = gr.Textbox(label="Parameters", lines=4, interactive=False, elem_id="sd-info",
                                  buttons=["copy"])

        results = gr.State([])  # [(seed, infotext, path)] of the run shown
        selected = gr.State(0)
        last_seed = gr.State(-1)
        user_preset = gr.State(False)
        family = gr.State("sd1")

    fields = {
        "prompt": prompt, "negative_prompt": negative, "sampler": sampler, "schedule": schedule, "steps": steps,
        "cfg_scale": cfg, "width": width, "height": height, "seed": seed, "batch_count": batch_count,
        "batch_size": batch_size, "clip_skip": clip_skip, "token_merging_ratio": token_merging,
        "vae_tiling": vae_tiling,
    }
    controls = [fields[name] for name in FORM_FIELDS]
    ui = GenerateTab(tab=tab, model=model, preset=preset, fields=fields, controls=controls, user_preset=user_preset)

    # -------------------------------------------------------------- model list and loading status
    def refresh_models(current: str | None, refresh_scan: bool = True):
        try:
            entries = engine.models(refresh=refresh_scan)
        except Exception as exc:  # noqa: BLE001 - a scan error is shown, never an error page
            gr.Warning(f"Could not list models: {error_text(exc)}")
            entries = []
        choices = model_choices(entries)
        supported = [e for e in entries if e.supported]
        names = [e.name for e in supported]
        value = current if current in names else _current_model_name(engine, names)
        return (
            gr.update(choices=choices, value=value),
            gr.update(visible=not supported),
            gr.update(value=empty_state_markdown(services)),
        )

    refresh.click(lambda current: refresh_models(current), inputs=model, outputs=[model, empty_panel, empty_text],
                  api_name="refresh_models")

    def on_model_change(name: str | None, chose_preset: bool, *values: Any):
        """Picking a model: refuse unsupported files, offer its family's sizes and apply its preset."""
        unchanged = [gr.update() for _ in controls]
        if not name:
            return [gr.update(), gr.update(), gr.update(), "sd1", *unchanged]
        if name.startswith(UNSUPPORTED_PREFIX):
            entry = _find(engine, name[len(UNSUPPORTED_PREFIX):])
            gr.Warning(f"{name[len(UNSUPPORTED_PREFIX):]} cannot be used: {getattr(entry, 'reason', 'unsupported')}")
            return [gr.update(value=_current_model_name(engine, [])), gr.update(), gr.update(), "sd1", *unchanged]
        entry = _find(engine, name)
        fam = getattr(entry, "family", None) or "sd1"
        sizes = gr.update(choices=_size_choices(fam), value=None)
        if chose_preset:
            return [gr.update(), sizes, gr.update(), fam, *unchanged]
        default = presets.for_family(fam)
        if default is None:
            return [gr.update(), sizes, gr.update(), fam, *unchanged]
        current = dict(zip(FORM_FIELDS, values, strict=True))
        updated = {**current, **default.values()}
        return [gr.update(), sizes, gr.update(value=default.name), fam,
                *[gr.update(value=updated[name]) for name in FORM_FIELDS]]

    model.input(on_model_change, inputs=[model, user_preset, *controls],
                outputs=[model, size_buttons, preset, family, *controls], api_name="select_model")

    # -------------------------------------------------------------- presets
    def on_preset(name: str, *values: Any):
        if not name or name == NO_PRESET:
            return [False, *[gr.update() for _ in controls]]
        try:
            chosen = presets.get(name)
        except PresetError as exc:
            gr.Warning(str(exc))
            return [False, *[gr.update() for _ in controls]]
        current = dict(zip(FORM_FIELDS, values, strict=True))
        updated = {**current, **chosen.values()}
        return [True, *[gr.update(value=updated[n]) for n in FORM_FIELDS]]

    preset.input(on_preset, inputs=[preset, *controls], outputs=[user_preset, *controls], api_name="apply_preset")

    def on_save_preset(name: str, fam: str, *values: Any):
        current = coerce_fields(dict(zip(FORM_FIELDS, values, strict=True)))
        try:
            saved = presets.save(name, fam or "sd1", current)
        except PresetError as exc:
            return gr.update(), f"⚠ {exc}"
        return gr.update(choices=[NO_PRESET] + presets.names(), value=saved.name), f"Saved preset **{saved.name}**."

    save_preset.click(on_save_preset, inputs=[preset_name, family, *controls], outputs=[preset, preset_status],
                      api_name="save_preset")

    # -------------------------------------------------------------- sizes and seeds
    def on_size(choice: str | None):
        if not choice:
            return gr.update(), gr.update()
        w, h = (int(part) for part in choice.split("×"))
        return w, h

    size_buttons.input(on_size, inputs=size_buttons, outputs=[width, height], api_visibility="private")
    random_seed.click(lambda: -1, outputs=seed, api_visibility="private")
    reuse_seed.click(lambda last: last, inputs=last_seed, outputs=seed, api_visibility="private")

    # -------------------------------------------------------------- generate
    def run(model_name: str | None, *values: Any):
        """Submit the request to the queue and stream its progress; errors become a message, never a crash."""
        form = coerce_fields(dict(zip(FORM_FIELDS, values, strict=True)))
        if model_name and model_name.startswith(UNSUPPORTED_PREFIX):
            model_name = ""
        # After the progress and error outputs: preview hidden, gallery, results, selected and info unchanged.
        blank = (gr.update(visible=False), gr.update(), gr.update(), gr.update(), gr.update())
        try:
            request = GenerationRequest.build(model=model_name or "", **form)
        except RequestError as exc:
            gr.Warning(error_text(exc))
            yield ("", error_box(error_text(exc)), *blank)
            return
        ui_state.save({"model": model_name or "", "form": form})
        try:
            job = queue.submit(request, save=True, source="ui")
        except Exception as exc:  # noqa: BLE001 - QueueFullError and friends: a message, not an error page
            gr.Warning(error_text(exc))
            yield ("", error_box(error_text(exc)), *blank)
            return
        yield (progress_html(_Waiting()), "", gr.update(visible=True, value=None), gr.update(), gr.update(),
               gr.update(), gr.update())
        shown_preview = None
        while not _job_done(job):
            state = _safe_progress(queue, job)
            preview_image = getattr(state, "preview", None) if state is not None else None
            preview_key = getattr(state, "preview_id", id(preview_image))
            preview_update = gr.update()
            if preview_image is not None and preview_key != shown_preview:  # send each preview once
                shown_preview = preview_key
                preview_update = gr.update(visible=True, value=preview_image)
            yield (progress_html(state), "", preview_update, gr.update(), gr.update(), gr.update(), gr.update())
            job.join(POLL_SECONDS)
        failure = getattr(job, "error", None)
        result = getattr(job, "result", None)
        if failure is not None or result is None:
            message = error_text(failure) if failure is not None else "The job ended without a result."
            gr.Warning(message)
            yield ("", error_box(message), gr.update(visible=False), gr.update(), gr.update(), gr.update(), gr.update())
            return
        paths = list(getattr(job, "paths", None) or getattr(result, "paths", None) or [])
        rows = []
        images = []
        for index, image in enumerate(result.images):
            path = str(paths[index]) if index < len(paths) else ""
            rows.append((image.seed, image.infotext, path))
            # The saved file (with its parameters chunk) when there is one, so a download keeps the parameters.
            images.append((path or image.image, f"Seed {image.seed}"))
        seconds = (getattr(result, "timings", {}) or {}).get("total")
        done = f"Done: {len(images)} image{'s' if len(images) != 1 else ''}"
        if seconds:
            done += f" in {seconds:.1f} s"
        if result.interrupted:
            done = f"Interrupted: kept {len(images)} finished image{'s' if len(images) != 1 else ''}"
        warnings = list(getattr(result, "warnings", []) or [])
        for warning in warnings:
            gr.Warning(warning)
        bar = f'<div class="sd-progress sd-done"><div class="sd-progress-text">{html.escape(done)}</div></div>'
        first_info = rows[0][1] if rows else ""
        yield (bar, "", gr.update(visible=False), images, rows, 0, first_info)
        if rows:
            ui_state.save({"model": model_name or "", "form": {**form, "seed": form.get("seed", -1)},
                           "last_seed": rows[0][0]})

    run_outputs = [progress, error, preview, gallery, results, selected, info]
    generate_event = generate_btn.click(run, inputs=[model, *controls], outputs=run_outputs, api_name="generate",
                                        concurrency_limit=None)
    prompt.submit(run, inputs=[model, *controls], outputs=run_outputs, api_visibility="private")
    generate_event.then(lambda rows: rows[0][0] if rows else -1, inputs=results, outputs=last_seed,
                        api_visibility="private")

    def do_interrupt() -> str:
        queue.interrupt()
        return "Interrupting after the current step…"

    def do_skip() -> str:
        queue.skip()
        return "Skipping the current batch…"

    interrupt_btn.click(do_interrupt, outputs=progress, api_name="interrupt", queue=False)
    skip_btn.click(do_skip, outputs=progress, api_name="skip", queue=False)

    # -------------------------------------------------------------- results
    def on_select(rows: list, evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else 0
        if not rows or index >= len(rows):
            return 0, ""
        return index, rows[index][1]

    gallery.select(on_select, inputs=results, outputs=[selected, info], api_visibility="private")

    def reuse_selected_seed(rows: list, index: int):
        if not rows:
            gr.Warning("Generate an image first; then its seed can be reused.")
            return gr.update()
        return rows[min(index, len(rows) - 1)][0]

    reuse_image_seed.click(reuse_selected_seed, inputs=[results, selected], outputs=seed, api_visibility="private")

    def reuse_selected_all(rows: list, index: int):
        if not rows:
            gr.Warning("Generate an image first; then its parameters can be reused.")
            return [gr.update() for _ in range(len(controls) + 1)]
        return fill_from_infotext(engine, rows[min(index, len(rows) - 1)][1])

    reuse_all.click(reuse_selected_all, inputs=[results, selected], outputs=[model, *controls],
                    api_visibility="private")

    # -------------------------------------------------------------- precision / attention
    def on_runtime(prec: str, attn: str):
        caps = _capabilities(services)
        for kind, value, table in (("Precision", prec, getattr(caps, "precisions", {})),
                                   ("Attention", attn, getattr(caps, "attentions", {}))):
            reason = (table or {}).get(value, "")
            if value != "auto" and reason:
                gr.Warning(f"{kind} {value} cannot be used here: {reason}")
                revert = (gr.update(value="auto"), gr.update()) if kind == "Precision" else (gr.update(),
                                                                                           gr.update(value="auto"))
                return *revert, f"⚠ {kind} {value} cannot be used here: {reason}"
        try:
            message = apply_runtime_options(services, precision=prec, attention=attn)
        except Exception as exc:  # noqa: BLE001
            gr.Warning(error_text(exc))
            return gr.update(), gr.update(), f"⚠ {error_text(exc)}"
        return gr.update(), gr.update(), message

    precision.input(on_runtime, inputs=[precision, attention], outputs=[precision, attention, runtime_status],
                    api_name="set_runtime")
    attention.input(on_runtime, inputs=[precision, attention], outputs=[precision, attention, runtime_status],
                    api_visibility="private")

    def on_fast(flag: bool):
        try:
            return apply_runtime_options(services, fast=bool(flag))
        except Exception as exc:  # noqa: BLE001
            gr.Warning(error_text(exc))
            return f"⚠ {error_text(exc)}"

    fast_mode.input(on_fast, inputs=[fast_mode], outputs=[runtime_status], api_name="set_fast_mode")

    # -------------------------------------------------------------- starter download
    def do_download(progress_bar=gr.Progress()):  # noqa: B008 - gradio's documented pattern
        from sdlocal.starter import StarterDownloadError, download_starter

        def report(done: int, total: int) -> None:
            progress_bar(done / total if total else None, desc=f"{done / 1e9:.2f} of {total / 1e9:.2f} GB")

        try:
            path = download_starter(starter_dir(services), progress=report)
        except StarterDownloadError as exc:
            gr.Warning(str(exc))
            return f"⚠ {exc}", *refresh_models(None)
        return f"Downloaded and verified `{path}`.", *refresh_models(None)

    download.click(do_download, outputs=[download_status, model, empty_panel, empty_text], api_name="download_starter")

    # -------------------------------------------------------------- page load
    def on_load():
        saved = ui_state.load()
        choices_update, empty_update, empty_text_update = refresh_models(saved.get("model"), refresh_scan=False)
        form = {**DEFAULTS, **{k: v for k, v in (saved.get("form") or {}).items() if k in DEFAULTS}}
        caps = _capabilities(services)
        problems = list(getattr(presets, "problems", []))
        problem_md = ""
        if problems:
            problem_md = "**Some preset files were skipped:**\n" + "\n".join(f"- `{p}`" for p in problems)
        preset_update, chose = gr.update(choices=[NO_PRESET] + presets.names()), False
        wanted = getattr(services.settings, "preset", None)
        if wanted:  # --preset at start wins over the saved form
            try:
                form.update(presets.get(wanted).values())
                preset_update, chose = gr.update(choices=[NO_PRESET] + presets.names(), value=wanted), True
            except PresetError as exc:
                problem_md = (problem_md + "\n" if problem_md else "") + f"**--preset:** {exc}"
        warn = [w for w in (getattr(caps, "warnings", None) or [])]
        warn_html = "".join(f'<div class="sd-cpu">⚠ {html.escape(w)}</div>' for w in warn)
        return [
            choices_update, empty_update, empty_text_update,
            gr.update(value=problem_md, visible=bool(problem_md)),
            gr.update(value=warn_html, visible=bool(warn)),
            _runtime_update("precision", caps), _runtime_update("attention", caps),
            saved.get("last_seed", -1), preset_update, chose,
            *[gr.update(value=form[name]) for name in FORM_FIELDS],
        ]

    load_outputs = [model, empty_panel, empty_text, preset_problems, cpu_warning, precision, attention, last_seed,
                    preset, user_preset, *controls]
    ui.load = (on_load, load_outputs)  # type: ignore[attr-defined]
    ui.status = (lambda: load_status_text(services), load_status)  # type: ignore[attr-defined]
    return ui


# ---------------------------------------------------------------------------- helpers over services
def fill_from_infotext(engine: Any, text: str) -> list[Any]:
    """Updates for [model, *FORM_FIELDS] from an A1111 parameters text; fields it does not name stay as they are."""
    from sdlocal.engine.infotext import infotext_to_request_fields, parse_infotext

    params = parse_infotext(text or "")
    values = infotext_to_request_fields(params)
    model_update = gr.update()
    wanted = values.get("model") or params.get("Model")
    model_hash = params.get("Model hash")
    if wanted or model_hash:
        entry = None
        for key in (model_hash, wanted):
            if key:
                entry = _find(engine, key)
                if entry is not None:
                    break
        if entry is not None and entry.supported:
            model_update = gr.update(value=entry.name)
        elif wanted:
            gr.Info(f"The model {wanted!r} from these parameters is not here; keeping the current model.")
    updates = [model_update]
    for name in FORM_FIELDS:
        updates.append(gr.update(value=values[name]) if name in values else gr.update())
    return updates


def apply_runtime_options(services: Any, precision: str | None = None, attention: str | None = None,
                          fast: bool | None = None) -> str:
    """Reload the model with another precision/attention/fast mode, through the queue so it never races a run."""
    engine, queue = services.engine, services.queue
    configure = getattr(engine, "configure", None) or getattr(engine, "set_runtime_options", None)
    if configure is None:
        raise RuntimeError("this engine cannot change precision or attention while running; restart with the flag")

    def reload() -> None:
        configure(**changes)
        if engine.current_model is not None:
            engine.load(engine.current_model.name)

    asked = (("precision", precision), ("attention", attention), ("fast", fast))
    changes: dict[str, Any] = {key: value for key, value in asked if value is not None}
    submit_call = getattr(queue, "submit_call", None)
    if submit_call is None:
        reload()
    else:
        job = submit_call(reload, label="Reloading the model")
        job.wait(600)  # re-raises the reload's error, shown to the user
    if fast is not None:
        loaded = engine.current_model is not None
        state = "on" if fast else "off"
        return f"Fast mode **{state}**" + ("; the model was reloaded." if loaded else
                                           "; it applies when a model loads.")
    return f"Using precision **{precision}** and attention **{attention}**; the model was reloaded."


def load_status_text(services: Any) -> str:
    """One line for the loading banner: what the background load is doing, or which model is ready."""
    status = getattr(services, "load_status", None)
    if callable(status):
        status = status()
    engine = services.engine
    current = getattr(engine, "current_model", None)
    if current is not None:
        return f"✔ Ready: **{current.name}** ({FAMILY_LABELS.get(current.family or '', current.family)})"
    if status:
        return f"{status}"
    try:
        if not any(entry.supported for entry in engine.models()):
            return "⚠ No model to load yet: add one (see below), then press ↻ Refresh."
    except Exception:  # noqa: BLE001 - the banner must never fail
        pass
    return "Loading the model in the background… the page works meanwhile."


def _runtime_update(kind: str, caps: Any):
    table = getattr(caps, f"{kind}s", None) or {}
    chosen = getattr(caps, kind, None)
    if not table:
        return gr.update()
    usable = [name for name, reason in table.items() if not reason]
    reasons = "; ".join(f"{name}: {reason}" for name, reason in table.items() if reason)
    info = f"Now: {chosen}" + (f" ({caps.precision_reason})" if kind == "precision" and caps.precision_reason else "")
    if reasons:
        info += f". Unavailable here: {reasons}"
    choices = ["auto"] + [name for name in table if name != "auto"]
    return gr.update(choices=choices, info=info, interactive=len(usable) > 1)


def _capabilities(services: Any) -> Any:
    caps = getattr(services, "capabilities", None)
    if callable(caps):
        caps = caps()
    if caps is None:
        try:
            caps = services.engine.capabilities()
        except Exception:  # noqa: BLE001 - shown as unknown, never an error page
            return None
    return caps


def _current_model_name(engine: Any, names: list[str]) -> str | None:
    current = getattr(engine, "current_model", None)
    if current is not None:
        return current.name
    return names[0] if names else None


def _find(engine: Any, name: str) -> Any:
    try:
        return engine.find_model(name)
    except Exception:  # noqa: BLE001 - unknown names are simply not found
        return None


def _job_done(job: Any) -> bool:
    done = getattr(job, "done", None)
    if callable(done):
        return bool(done())
    if done is not None:
        return bool(done)
    return getattr(job, "result", None) is not None or getattr(job, "error", None) is not None


def _safe_progress(queue: Any, job: Any = None) -> Any:
    """The queue's progress as seen by this job (its place in the queue while it waits)."""
    try:
        return queue.progress(job)
    except Exception:  # noqa: BLE001 - progress is cosmetic
        return None


def _safe_list(method: Any, fallback: list[str]) -> list[str]:
    try:
        return list(method()) or fallback
    except Exception:  # noqa: BLE001
        return fallback


def _pick(options: list[str], wanted: str) -> str | None:
    return wanted if wanted in options else (options[0] if options else None)


def _size_choices(family: str) -> list[str]:
    return [f"{w}×{h}" for w, h in FAMILY_SIZES.get(family, FAMILY_SIZES["sd1"])]


class _Waiting:
    text = "Queued…"
    step = 0
    total_steps = 0
