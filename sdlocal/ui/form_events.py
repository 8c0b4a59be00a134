"""The events of the shared form pieces (``sdlocal.ui.components.FormParts``), used by the Generate and img2img tabs.

Both tabs submit a ``GenerationRequest`` to the one job queue and stream its progress the same way; only how
the request is built differs, so a tab hands ``stream_job`` a function that builds and submits it. Every handler
is a sync function (Gradio runs those on worker threads) and turns errors into messages, never an error page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from sdlocal.presets import PresetError
from sdlocal.ui.common import FORM_FIELDS, error_box, error_text, infotext_updates
from sdlocal.ui.components import NO_PRESET, FormParts
from sdlocal.ui.progress import Waiting, done_html, job_done, progress_html, safe_progress

POLL_SECONDS = 0.25
# After the progress and error outputs: preview, gallery, results, selected, info.
_KEEP_REST = (gr.update(), gr.update(), gr.update(), gr.update())
Rows = list[tuple[int, str, str]]


# ---------------------------------------------------------------------------- presets
def on_preset(presets: Any, name: str, *values: Any, keep: tuple[str, ...] = ()) -> list[Any]:
    """Updates for (user chose a preset, *controls): the preset's values over the form; the prompt stays.

    ``keep`` names fields the preset must not change (the img2img tab keeps the size that follows its image).
    """
    if not name or name == NO_PRESET:
        return [False, *[gr.update() for _ in FORM_FIELDS]]
    try:
        chosen = presets.get(name)
    except PresetError as exc:
        gr.Warning(str(exc))
        return [False, *[gr.update() for _ in FORM_FIELDS]]
    chosen_values = {k: v for k, v in chosen.values().items() if k not in keep}
    updated = {**dict(zip(FORM_FIELDS, values, strict=True)), **chosen_values}
    return [True, *[gr.update(value=updated[n]) for n in FORM_FIELDS]]


def preset_choices(presets: Any) -> Any:
    """The preset list as a page opens (files come and go), showing no preset."""
    return gr.update(choices=[NO_PRESET] + presets.names(), value=NO_PRESET)


# ---------------------------------------------------------------------------- sizes and seeds
def on_size(choice: str | None) -> tuple[Any, Any]:
    if not choice:
        return gr.update(), gr.update()
    width, height = (int(part) for part in choice.split("×"))
    return width, height


def wire_seeds(ui: FormParts) -> None:
    """⚄ sets a random seed (-1), ↺ the first seed of this tab's last run; the size buttons set the size."""
    seed = ui.fields["seed"]
    if ui.size_buttons is not None:
        ui.size_buttons.input(on_size, inputs=ui.size_buttons, outputs=[ui.fields["width"], ui.fields["height"]],
                              api_visibility="private")
    ui.random_seed.click(lambda: -1, outputs=seed, api_visibility="private")
    ui.reuse_seed.click(lambda last: last, inputs=ui.last_seed, outputs=seed, api_visibility="private")


# ---------------------------------------------------------------------------- running a job
def run_outputs(ui: FormParts) -> list[Any]:
    """What ``stream_job`` yields to, in its order."""
    return [ui.progress, ui.error, ui.preview, ui.gallery, ui.results, ui.selected, ui.info]


def stream_job(queue: Any, submit: Callable[[], Any]) -> Iterator[tuple]:
    """Submit with ``submit()`` (build, validate and queue the request) and stream the job to its images.

    Yields (progress, error, preview, gallery, results, selected, info); returns the rows [(seed, infotext, path)]
    of the finished images (none on an error, which is shown as a message).
    """
    try:
        job = submit()
    except Exception as exc:  # noqa: BLE001 - RequestError, QueueFullError...: a message, not an error page
        gr.Warning(error_text(exc))
        yield ("", error_box(error_text(exc)), gr.update(visible=False), *_KEEP_REST)
        return []
    yield (progress_html(Waiting()), "", gr.update(visible=True, value=None), *_KEEP_REST)
    yield from follow_job(queue, job)
    return (yield from _finish(job))


def follow_job(queue: Any, job: Any) -> Iterator[tuple]:
    """Stream the job's progress, sending each preview image once, until it ends (a script job's too)."""
    shown_preview = None
    while not job_done(job):
        state = safe_progress(queue, job)
        preview_image = getattr(state, "preview", None) if state is not None else None
        preview_key = getattr(state, "preview_id", id(preview_image))
        preview_update = gr.update()
        if preview_image is not None and preview_key != shown_preview:
            shown_preview = preview_key
            preview_update = gr.update(visible=True, value=preview_image)
        yield (progress_html(state), "", preview_update, *_KEEP_REST)
        job.join(POLL_SECONDS)


def _finish(job: Any):
    """Yield the finished job's images (or its error); return its rows [(seed, infotext, path)]."""
    failure, result = getattr(job, "error", None), getattr(job, "result", None)
    if failure is not None or result is None:
        message = error_text(failure) if failure is not None else "The job ended without a result."
        gr.Warning(message)
        yield ("", error_box(message), gr.update(visible=False), *_KEEP_REST)
        return []
    paths = list(getattr(job, "paths", None) or getattr(result, "paths", None) or [])
    rows, images = [], []
    for index, image in enumerate(result.images):
        path = str(paths[index]) if index < len(paths) else ""
        rows.append((image.seed, image.infotext, path))
        # The saved file (with its parameters chunk) when there is one, so a download keeps the parameters.
        images.append((path or image.image, f"Seed {image.seed}"))
    for warning in list(getattr(result, "warnings", []) or []):
        gr.Warning(warning)
    yield (done_html(result, len(images)), "", gr.update(visible=False), images, rows, 0, rows[0][1] if rows else "")
    return rows


def wire_run(ui: FormParts, queue: Any, handler: Callable[..., Any], inputs: list[Any],
             names: dict[str, str | None], extra_outputs: list[Any] | None = None) -> list[Any]:
    """Generate (button and the prompt's Enter), Interrupt and Skip; returns the two generate events.

    ``names`` gives the API names of "generate", "interrupt" and "skip" (None: private). Interrupt and Skip act
    on the queue's running job whichever tab started it, as in A1111. ``extra_outputs`` follow ``run_outputs``
    (the Script section's confirmation state), so the handler yields those too.
    """
    def do_interrupt() -> str:
        queue.interrupt()
        return "Interrupting after the current step…"

    def do_skip() -> str:
        queue.skip()
        return "Skipping the current batch…"

    outputs = run_outputs(ui) + list(extra_outputs or [])
    event = ui.generate.click(handler, inputs=inputs, outputs=outputs, concurrency_limit=None,
                              **_api(names.get("generate")))
    submitted = ui.fields["prompt"].submit(handler, inputs=inputs, outputs=outputs, api_visibility="private")
    for finished in (event, submitted):
        finished.then(lambda rows: rows[0][0] if rows else -1, inputs=ui.results, outputs=ui.last_seed,
                      api_visibility="private")
    ui.interrupt.click(do_interrupt, outputs=ui.progress, queue=False, **_api(names.get("interrupt")))
    ui.skip.click(do_skip, outputs=ui.progress, queue=False, **_api(names.get("skip")))
    return [event, submitted]


def _api(name: str | None) -> dict[str, Any]:
    return {"api_name": name} if name else {"api_visibility": "private"}


# ---------------------------------------------------------------------------- results
def selected_row(rows: Rows, index: int) -> tuple[int, str, str] | None:
    """The (seed, infotext, path) of the image selected in the results, or None before any run."""
    if not rows:
        return None
    return rows[min(max(int(index or 0), 0), len(rows) - 1)]


def wire_results(ui: FormParts, engine: Any, model: Any) -> None:
    """Selecting an image shows its parameters; "Reuse" puts its seed, or all of them, back into the form."""
    def on_select(rows: Rows, evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else 0
        if not rows or index >= len(rows):
            return 0, ""
        return index, rows[index][1]

    def reuse_selected_seed(rows: Rows, index: int):
        row = selected_row(rows, index)
        if row is None:
            gr.Warning("Generate an image first; then its seed can be reused.")
            return gr.update()
        return row[0]

    def reuse_selected_all(rows: Rows, index: int) -> list[Any]:
        row = selected_row(rows, index)
        if row is None:
            gr.Warning("Generate an image first; then its parameters can be reused.")
            return [gr.update() for _ in range(len(FORM_FIELDS) + 1)]
        return infotext_updates(engine, row[1])

    ui.gallery.select(on_select, inputs=ui.results, outputs=[ui.selected, ui.info], api_visibility="private")
    ui.reuse_image_seed.click(reuse_selected_seed, inputs=[ui.results, ui.selected], outputs=ui.fields["seed"],
                              api_visibility="private")
    ui.reuse_all.click(reuse_selected_all, inputs=[ui.results, ui.selected], outputs=[model, *ui.controls],
                       api_visibility="private")
