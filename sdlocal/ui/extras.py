"""The Extras tab: upscale finished pictures with one or two upscalers (the layout from ``extras_layout``).

The handler builds the engine's ``ExtrasRequest`` from the form and submits it to the one job queue
(``queue.submit_extras``), which runs it on the worker and saves each picture under
``outputs/extras-images/YYYY-MM-DD/`` with the source's parameters and A1111's Postprocessing text. Like the
Generate handler it is a generator that polls the queue's progress; Interrupt stops between pictures and tiles
and keeps what is done. Other tabs send a picture here through ``ui.send`` (``ExtrasSend``), never by import.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from sdlocal.ui.common import FormError, error_box, error_text
from sdlocal.ui.extras_layout import RESIZE_TABS, SOURCES, ExtrasTab, build_layout
from sdlocal.ui.progress import Waiting, done_html, job_done, progress_html, safe_progress
from sdlocal.ui.upscaler_list import upscaler_names

POLL_SECONDS = 0.25
# (progress, error, gallery, info): the handler's outputs
_KEEP = (gr.update(), gr.update())


def build_extras_tab(services: Any, tabs: Any) -> ExtrasTab:
    """The tab's components and events; ``ui.load`` fills the upscaler lists as a page opens."""
    ui = build_layout()

    def generate(*values: Any) -> Iterator[tuple]:
        yield from run(services, *values)

    def do_interrupt() -> str:
        services.queue.interrupt()
        return "Interrupting after the current tile…"

    ui.generate.click(generate, inputs=ui.inputs, outputs=[ui.progress, ui.error, ui.gallery, ui.info],
                      concurrency_limit=None, api_name="extras")
    ui.interrupt.click(do_interrupt, outputs=ui.progress, queue=False, api_name="extras_interrupt")
    ui.load = (lambda: upscaler_updates(services.engine), [ui.upscaler_1, ui.upscaler_2])
    ui.send = ExtrasSend(outputs=[tabs, ui.source_tabs, ui.source, ui.image])
    return ui


def upscaler_updates(engine: Any) -> list[Any]:
    """The two upscaler lists as a page opens: choices only, so a late load never changes a value picked."""
    names = upscaler_names(engine)
    return [gr.update(choices=names), gr.update(choices=names)]


# ---------------------------------------------------------------------------- the request
def source_images(source: str, image: Any, files: Any, input_dir: str) -> list[Any]:
    """The pictures of the open source tab, each with its own parameters text (``ExtrasImage``)."""
    from sdlocal.engine.extras import load_folder, load_images

    if source == SOURCES[1]:
        paths = [getattr(item, "name", item) for item in files or []]
        if not paths:
            raise FormError("Batch Process: add one or more image files first.")
        return load_images(paths, "imageList")
    if source == SOURCES[2]:
        return load_folder(input_dir, "input_dir")
    if not image:
        raise FormError("Single Image: drop a picture first.")
    return load_images([image], "image")


def build_request(source: str, image: Any, files: Any, input_dir: str, resize_mode: str, scale: Any, width: Any,
                  height: Any, crop: Any, upscaler_1: str, upscaler_2: str, visibility: Any) -> Any:
    """The ``ExtrasRequest`` for the form; the queue validates it (sizes, upscaler names) as it is submitted."""
    from sdlocal.engine.extras import ExtrasRequest

    return ExtrasRequest(
        images=source_images(source, image, files, input_dir),
        resize_mode=resize_mode if resize_mode in RESIZE_TABS else RESIZE_TABS[0],
        scale=scale, width=_whole(width), height=_whole(height), crop=bool(crop),
        upscaler_1=upscaler_1 or "None", upscaler_2=upscaler_2 or "None", upscaler_2_visibility=visibility,
    )


def output_store(output_dir: str | None) -> Any:
    """The store for "Batch from Directory"'s output folder, or None for the outputs folder (the queue saves).

    The folder is made if it is missing; a path that is a file, or cannot be made, is refused before any work.
    """
    from sdlocal.outputs import OutputStore

    text = (output_dir or "").strip()
    if not text:
        return None
    folder = Path(text).expanduser()
    if folder.exists() and not folder.is_dir():
        raise FormError(f"Output directory: {text} is a file; give a folder, or leave it blank for the outputs.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FormError(f"Output directory: {text} cannot be made ({exc.strerror or exc}).") from None
    return OutputStore(folder)


# ---------------------------------------------------------------------------- running
def run(services: Any, source: str, image: Any, files: Any, input_dir: str, output_dir: str, resize_mode: str,
        scale: Any, width: Any, height: Any, crop: Any, upscaler_1: str, upscaler_2: str,
        visibility: Any) -> Iterator[tuple]:
    """Submit the upscale and stream it: yields (progress, error, gallery, info); errors are messages."""
    try:
        store = output_store(output_dir) if source == SOURCES[2] else None
        request = build_request(source, image, files, input_dir, resize_mode, scale, width, height, crop,
                                upscaler_1, upscaler_2, visibility)
        job = services.queue.submit_extras(request, source="ui", store=store)
    except Exception as exc:  # noqa: BLE001 - RequestError, FormError, QueueFullError...: a message
        message = error_text(exc)
        gr.Warning(message)
        yield ("", error_box(message), *_KEEP)
        return
    yield (progress_html(Waiting()), "", *_KEEP)
    while not job_done(job):
        yield (progress_html(safe_progress(services.queue, job)), "", *_KEEP)
        job.join(POLL_SECONDS)
    yield finish(job, store)


def finish(job: Any, store: Any = None) -> tuple:
    """The finished job's pictures (the saved files, which keep their text chunks) and their Postprocessing text."""
    failure, result = getattr(job, "error", None), getattr(job, "result", None)
    if failure is not None or result is None:
        message = error_text(failure) if failure is not None else "The job ended without a result."
        gr.Warning(message)
        return ("", error_box(message), *_KEEP)
    warnings = list(getattr(result, "warnings", []) or [])
    paths = [str(path) for path in getattr(job, "saved_paths", None) or []]
    saved = paths
    if store is not None:  # the chosen output folder: the page does not serve it, so show the pictures
        paths = []
    images = []
    for index, output in enumerate(result.images):
        # a saved file under the outputs folder (the page may serve it, with its parameters); else the picture
        picture = paths[index] if index < len(paths) else output.image
        images.append((picture, output.name or f"Image {index + 1}"))
    for warning in warnings:
        gr.Warning(warning)
    return (done_html(result, len(images)), "", images, info_html(result, saved))



def info_html(result: Any, saved: list[str]) -> str:
    """A1111's html_info: each picture's Postprocessing text (and where it was saved)."""
    rows = []
    for index, output in enumerate(result.images):
        text = output.infotext or "Nothing ran (Upscaler 1 is None): the picture is unchanged."
        where = f'<br><span class="sd-badge">{html.escape(saved[index])}</span>' if index < len(saved) else ""
        name = html.escape(output.name or f"Image {index + 1}")
        rows.append(f"<p><b>{name}</b>: {html.escape(text)}{where}</p>")
    return "".join(rows)


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# ---------------------------------------------------------------------------- send to extras
def send_updates(path: str | None, count: int = 4) -> list[Any]:
    """Updates for (the page's tabs, the source tabs, the source state, the picture): the Extras tab's Single
    Image with ``path``; nothing changes (and a message says why) without a picture."""
    if not path:
        gr.Warning("Generate an image first; then it can be sent to Extras.")
        return [gr.update() for _ in range(count)]
    return [gr.Tabs(selected="extras"), gr.Tabs(selected="extras-single"), SOURCES[0], path]


@dataclass
class ExtrasSend:
    """The Extras tab's side of "Send to extras" (``send_updates``), for the tabs with results."""

    outputs: list[Any]

    def connect(self, button: Any, pick: Any, inputs: list[Any]) -> None:
        """Clicking ``button`` sends the picture ``pick(*inputs)`` names ((path, text) as ``send.Pick``)."""
        def send(*values: Any) -> list[Any]:
            return send_updates(pick(*values)[0], len(self.outputs))

        button.click(send, inputs=inputs, outputs=self.outputs, api_visibility="private")
