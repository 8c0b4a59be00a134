"""Running the script chosen under a tab's settings: plan, confirm a large grid, queue, stream, show the grid.

A tab builds its request exactly as without a script (``build()``), then ``plan_script`` turns it and the
script's positional arguments into a ``ScriptPlan`` and the queue runs it as one job
(``JobQueue.submit_script``). Every step's error is a message naming the control; a plan of more than
``CONFIRM_IMAGES`` pictures starts only on a second Generate press with the same settings.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import gradio as gr

from sdlocal.engine.request import GenerationRequest, RequestError
from sdlocal.scripts import plan_script
from sdlocal.scripts.plan import CONFIRM_IMAGES, ScriptContext, ScriptPlan
from sdlocal.ui.common import LABELS, error_box, error_text
from sdlocal.ui.form_events import follow_job
from sdlocal.ui.progress import Waiting, done_html, progress_html
from sdlocal.ui.scripts import (
    ARG_LABELS,
    SWAPS,
    XYZ,
    ScriptSection,
    axis_label,
    axis_updates,
    fill_updates,
    module,
    read_prompts_file,
    script_for_title,
    swap_updates,
)

_KEEP_REST = (gr.update(), gr.update(), gr.update(), gr.update())
Build = Callable[[], GenerationRequest]


def script_error(name: str, exc: BaseException) -> str:
    """The error as a sentence naming the script and, by its label, the control (``X values``...)."""
    title = getattr(module(name), "TITLE", name) if name else "Script"
    if isinstance(exc, RequestError) and exc.field in ARG_LABELS and exc.field not in LABELS:
        return f"{title}: {ARG_LABELS[exc.field]}: {exc.value!r} is not allowed; {exc.allowed}."
    return f"{title}: {error_text(exc)}"


def plan_key(name: str, args: list[Any], base: GenerationRequest) -> str:
    """What "the same settings" means for a confirmation: the script, its arguments and the request (the
    init images aside: they are new objects on every press)."""
    shown = replace(base, source=replace(base.source, images=[]) if base.source is not None else None)
    return repr((name, list(args), shown))


def make_plan(services: Any, build: Build, name: str, args: list[Any]) -> tuple[GenerationRequest, ScriptPlan]:
    base = build()
    return base, plan_script(name, base, args, ScriptContext.of(services))


def confirm_text(plan: ScriptPlan) -> str:
    what = "grid" if plan.grid is not None else f"{plan.title} run"
    return f"This {what} makes {plan.images} images; press Generate again to start."


def notice_box(message: str) -> str:
    return f'<div class="sd-warning" role="status">{html.escape(message)}</div>'


def run_script(services: Any, build: Build, name: str, args: list[Any], pending: Any) -> Iterator[tuple]:
    """Plan, confirm, queue and stream script ``name``; yields the tab's run outputs, then the pending state.

    Returns the rows [(seed, infotext, path)] shown (none on an error or while a confirmation is asked).
    """
    try:
        base, plan = make_plan(services, build, name, args)
    except Exception as exc:  # noqa: BLE001 - RequestError, FormError...: a message next to the controls
        message = script_error(name, exc)
        gr.Warning(message)
        yield ("", error_box(message), gr.update(visible=False), *_KEEP_REST, None)
        return []
    key = plan_key(name, args, base)
    if plan.images > CONFIRM_IMAGES and pending != key:
        yield ("", notice_box(confirm_text(plan)), gr.update(visible=False), *_KEEP_REST, key)
        return []
    try:
        job = services.queue.submit_script(plan, save=True, source="ui")
    except Exception as exc:  # noqa: BLE001 - a full queue is a message too
        gr.Warning(error_text(exc))
        yield ("", error_box(error_text(exc)), gr.update(visible=False), *_KEEP_REST, None)
        return []
    yield (progress_html(Waiting()), "", gr.update(visible=True, value=None), *_KEEP_REST, None)
    for update in follow_job(services.queue, job):
        yield (*update, gr.update())
    return (yield from _finish(job))


def result_rows(result: Any) -> list[tuple[int, str, str, Any]]:
    """(seed, parameters, saved path, picture) in ``result.outputs()``'s order: the grids, then the cells."""
    paths = [str(grid.path or "") for grid in result.grids]
    if result.plan.return_cells or not result.grids:
        for index, cell in enumerate(result.cells):
            saved = result.cell_paths[index] if index < len(result.cell_paths) else []
            paths += [str(saved[k]) if k < len(saved) and saved[k] else "" for k in range(len(cell.images if cell
                                                                                               else []))]
    return [(seed if seed is not None else -1, text, paths[i] if i < len(paths) else "", picture)
            for i, (picture, text, seed) in enumerate(result.outputs())]


def _finish(job: Any) -> Iterator[tuple]:
    failure, result = getattr(job, "error", None), getattr(job, "result", None)
    if failure is not None or result is None:
        message = error_text(failure) if failure is not None else "The script ended without a result."
        gr.Warning(message)
        yield ("", error_box(message), gr.update(visible=False), *_KEEP_REST, gr.update())
        return []
    shown = result_rows(result)
    grids = len(result.grids)
    images = [(path or picture, "Grid" if i < grids else f"Seed {seed}")
              for i, (seed, _text, path, picture) in enumerate(shown)]
    rows = [(seed, text, path) for seed, text, path, _picture in shown]
    warnings = list(result.warnings or [])
    for warning in warnings:
        gr.Warning(warning)
    info = rows[0][1] if rows else ""
    if warnings:
        info = "\n".join(f"⚠ {warning}" for warning in warnings) + ("\n\n" + info if info else "")
    yield (done_html(result, len(images)), "", gr.update(visible=False), images, rows, 0, info, gr.update())
    return rows


def summary_text(services: Any, build: Build, name: str | None, args: list[Any]) -> str:
    """The line under the script's controls: ``plan.summary`` with the tab's settings, or why it cannot run."""
    if name is None:
        return ""
    try:
        _base, plan = make_plan(services, build, name, args)
    except Exception as exc:  # noqa: BLE001 - shown where the user is typing
        return f"⚠ {script_error(name, exc)}"
    text = plan.summary or f"{plan.title} will create {plan.images} images."
    if plan.images > CONFIRM_IMAGES:
        text += f" More than {CONFIRM_IMAGES} images: Generate asks once more before it starts."
    return text


# ---------------------------------------------------------------------------------------------- wiring
def wire_scripts(part: ScriptSection, services: Any, base_inputs: list[Any],
                 build_from: Callable[[tuple[Any, ...]], GenerationRequest], also: list[Any] | None = None) -> None:
    """The dropdown shows the chosen script's group; the summary follows the script's controls and ``also``
    (the tab's controls that change the count: prompt, steps, batch...); the axes' events."""
    def choose(title: str) -> list[Any]:
        name = script_for_title(title)
        return [gr.update(visible=name == known) for known in part.groups] + [gr.update(visible=name is not None)]

    part.choice.change(choose, inputs=part.choice, outputs=[*part.groups.values(), part.summary],
                       api_visibility="private")
    n = len(base_inputs)

    def summary(*values: Any) -> str:
        name, args = part.read(values[n:])
        return summary_text(services, lambda: build_from(values[:n]), name, args)

    inputs = [*base_inputs, *part.inputs]
    for control in [*part.inputs, *(also or [])]:
        control.change(summary, inputs=inputs, outputs=part.summary, api_visibility="private",
                       trigger_mode="always_last", show_progress="hidden")
    if XYZ in part.args:
        _wire_axes(part, services)
    if part.upload is not None:
        part.upload.upload(read_prompts_file, inputs=part.upload, outputs=[part.prompt_text, part.upload_note],
                           api_visibility="private")


def _wire_axes(part: ScriptSection, services: Any) -> None:
    img2img, csv = part.img2img, part.csv_mode
    for axis in part.axes:
        def on_type(label: str, text: str, picked: list[str], csv_mode: bool) -> list[Any]:
            return axis_updates(services, label, text, picked, bool(csv_mode), img2img)

        def on_fill(label: str, csv_mode: bool) -> list[Any]:
            return fill_updates(services, label, bool(csv_mode), img2img)

        axis.type.input(on_type, inputs=[axis.type, axis.text, axis.dropdown, csv],
                        outputs=[axis.text, axis.dropdown, axis.fill], api_visibility="private",
                        queue=False)
        axis.fill.click(on_fill, inputs=[axis.type, csv], outputs=[axis.text, axis.dropdown],
                        api_visibility="private", queue=False)
    by_letter = {axis.letter: axis for axis in part.axes}

    def on_csv(csv_mode: bool, *values: Any) -> list[Any]:
        out = []
        for i in range(len(part.axes)):
            label, text, picked = values[3 * i:3 * i + 3]
            out += axis_updates(services, label, text, picked, bool(csv_mode), img2img)
        return out

    everything = [control for axis in part.axes for control in (axis.type, axis.text, axis.dropdown)]
    csv.input(on_csv, inputs=[csv, *everything],
              outputs=[c for axis in part.axes for c in (axis.text, axis.dropdown, axis.fill)],
              api_visibility="private")
    for first, second in SWAPS:
        a, b = by_letter[first], by_letter[second]

        def on_swap(la: str, ta: str, pa: list[str], lb: str, tb: str, pb: list[str], csv_mode: bool) -> list[Any]:
            return swap_updates(services, (la, ta, pa), (lb, tb, pb), bool(csv_mode), img2img)

        part.swaps[first + second].click(
            on_swap, inputs=[a.type, a.text, a.dropdown, b.type, b.text, b.dropdown, csv],
            outputs=[a.type, a.text, a.dropdown, a.fill, b.type, b.text, b.dropdown, b.fill],
            api_visibility="private")


# ---------------------------------------------------------------------------------------------- from a grid
def infotext_script_updates(services: Any, part: ScriptSection, text: str) -> list[Any]:
    """Updates for (Script dropdown, *groups, summary, *the X/Y/Z controls) from a parameters text: an X/Y/Z
    grid's text chooses the plot and fills its axes; any other text leaves the section as it is."""
    keep = [gr.update() for _ in range(len(script_restore_outputs(part)))]
    if XYZ not in part.args or not text:
        return keep
    from sdlocal.engine.infotext import parse_infotext
    from sdlocal.scripts import xyz

    reader = getattr(xyz, "args_from_infotext", None)
    try:
        args = reader(parse_infotext(text), part.img2img) if reader is not None else None
    except (RequestError, ValueError, TypeError, KeyError):
        args = None
    if not args:
        return keep
    named = {name: (args[i] if i < len(args) else default) for i, (name, default) in enumerate(xyz.ARGS)}
    updates = [gr.update(value=xyz.TITLE), *[gr.update(visible=name == XYZ) for name in part.groups],
               gr.update(visible=True)]
    csv_mode = bool(named["csv_mode"])
    for axis in part.axes:
        label = axis_label(named[f"{axis.letter}_type"], part.img2img)
        text = str(named[f"{axis.letter}_values"] or "")
        text_update, dropdown_update, fill_update = axis_updates(
            services, label, text, list(named[f"{axis.letter}_values_dropdown"] or []), csv_mode, part.img2img)
        if text_update.get("visible") and "value" not in text_update:
            text_update["value"] = text
        updates += [gr.update(value=label), text_update, dropdown_update, fill_update]
    for name in ("draw_legend", "no_fixed_seeds", "include_lone_images", "include_sub_grids", "vary_seeds_x",
                 "vary_seeds_y", "vary_seeds_z", "margin_size", "csv_mode"):
        updates.append(gr.update(value=named[name]))
    return updates


def wire_reuse_script(button: Any, inputs: list[Any], part: ScriptSection, services: Any,
                      pick: Callable[..., str]) -> None:
    """``button`` (Reuse all parameters, PNG Info's and the Gallery's sends) also sets the X/Y/Z plot up again
    from a grid's parameters; ``pick(*inputs)`` gives the text."""
    outputs = script_restore_outputs(part)
    if not outputs:
        return

    def reuse(*values: Any) -> list[Any]:
        return infotext_script_updates(services, part, pick(*values) or "")

    button.click(reuse, inputs=inputs, outputs=outputs, api_visibility="private")


def row_text(rows: list, index: int) -> str:
    """The parameters of the image selected in a tab's results (rows of (seed, infotext, path))."""
    if not rows:
        return ""
    return rows[min(max(int(index or 0), 0), len(rows) - 1)][1]


def script_restore_outputs(part: ScriptSection) -> list[Any]:
    """What ``infotext_script_updates`` fills, in its order."""
    if XYZ not in part.args:
        return []
    from sdlocal.scripts import xyz

    controls = dict(zip((name for name, _ in xyz.ARGS), part.args[XYZ], strict=True))
    axes = [c for axis in part.axes for c in (axis.type, axis.text, axis.dropdown, axis.fill)]
    rest = [controls[name] for name in ("draw_legend", "no_fixed_seeds", "include_lone_images", "include_sub_grids",
                                        "vary_seeds_x", "vary_seeds_y", "vary_seeds_z", "margin_size", "csv_mode")]
    return [part.choice, *part.groups.values(), part.summary, *axes, *rest]
