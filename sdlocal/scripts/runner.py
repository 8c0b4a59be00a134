"""Running a ``ScriptPlan`` on the queue's worker: each cell is one ordinary ``engine.generate``, then the grid.

The worker calls ``run_plan`` for a script job, so a grid waits its turn like any generation, holds the GPU
for its cells only, and stops with the job's Interrupt. What is done is never thrown away: each cell's
pictures are saved as it finishes (when the plan keeps them), and an interrupted or failed grid is still
drawn and saved, with empty cells where nothing was made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sdlocal.engine.infotext import quote
from sdlocal.engine.request import EngineError, GenerationResult, Progress, RequestError, RunControl
from sdlocal.scripts.grid import draw_grid, join_grids
from sdlocal.scripts.plan import GridImage, ScriptPlan, ScriptResult

log = logging.getLogger(__name__)

# on_progress(cells_done, cells_total, the running cell's engine progress or None between cells)
ScriptProgress = Callable[[int, int, Progress | None], None]
# save(picture, parameters, seed, kind) -> the path it was saved to
Saver = Callable[[Any, str, int | None, str], Any]


def run_plan(engine: Any, plan: ScriptPlan, control: RunControl | None = None,
             on_progress: ScriptProgress | None = None, save: Saver | None = None, save_cells: bool = True,
             save_grids: bool = True) -> ScriptResult:
    """Every cell in ``plan.run_order``, then the grid(s); see the module docstring for what is kept.

    ``save_cells``/``save_grids`` turn either kind of saving off (A1111's ``do_not_save_samples`` and
    ``do_not_save_grid``); cells are saved only when the plan keeps them as well."""
    started = time.perf_counter()
    control = control if control is not None else RunControl()
    result = ScriptResult(plan=plan, cells=[None] * len(plan.cells), cell_paths=[[] for _ in plan.cells])
    before = getattr(engine.current_model, "name", None)
    total = len(plan.run_order)
    generate_seconds = 0.0
    for done, position in enumerate(plan.run_order):
        if control.interrupted:
            result.interrupted = True
            break
        _report(on_progress, done, total, None)
        cell = plan.cells[position]
        try:
            output: GenerationResult = engine.generate(
                cell.request, control=control,
                on_progress=None if on_progress is None else
                (lambda update, done=done: _report(on_progress, done, total, update)))
        except Exception as exc:  # noqa: BLE001 - the cells already made are kept and drawn
            if not result.cells_done:
                raise  # nothing to keep: the job fails with the reason, as a single generation would
            if isinstance(exc, (RequestError, EngineError)):
                log.info("%s stopped at cell %d: %s", plan.title, cell.index + 1, exc)
            else:
                log.exception("%s stopped at cell %d", plan.title, cell.index + 1)
            result.warnings.append(f"Cell {cell.index + 1} of {len(plan.cells)} failed, so the {plan.title} stopped "
                                   f"there (the cells done before it are kept): {exc}")
            break
        generate_seconds += float(output.timings.get("total", 0.0))
        result.cells[cell.index] = output
        result.warnings += [warning for warning in output.warnings if warning not in result.warnings]
        if plan.save_cells and save_cells and save is not None:
            result.cell_paths[cell.index] = _save_all(save, output, plan.output_kind, result.warnings)
        if output.interrupted:
            result.interrupted = True
            break
    _report(on_progress, total if not result.interrupted else result.cells_done, total, None)
    _restore_model(engine, before, result)
    grid_started = time.perf_counter()
    if plan.grid is not None and result.cells_done:
        result.grids = draw_plan_grids(plan, result.cells)
        if save is not None and save_grids:
            for grid in result.grids:
                grid.path = _save_one(save, grid.image, grid.infotext, grid.seed, plan.grid_kind, result.warnings)
    if result.interrupted:
        result.warnings.append(f"Interrupted: {result.cells_done} of {len(plan.cells)} cells were made; the grid "
                               "shows them, with empty cells for the rest")
    result.timings = {"generate": round(generate_seconds, 3), "grid": round(time.perf_counter() - grid_started, 3),
                      "total": round(time.perf_counter() - started, 3)}
    return result


def _report(on_progress: ScriptProgress | None, done: int, total: int, update: Progress | None) -> None:
    if on_progress is None:
        return
    try:
        on_progress(done, total, update)
    except Exception:  # noqa: BLE001 - progress is cosmetic; a grid never stops for it
        log.exception("script progress update failed")


def _save_one(save: Saver, picture: Any, infotext: str, seed: int | None, kind: str, warnings: list[str]) -> Any:
    try:
        return save(picture, infotext, seed, kind)
    except Exception as exc:  # noqa: BLE001 - a full disk must not lose the pictures in the result
        log.exception("could not save a %s picture", kind)
        warnings.append(f"Could not save a picture to {kind}: {exc}")
        return None


def _save_all(save: Saver, output: GenerationResult, kind: str, warnings: list[str]) -> list[Any]:
    paths = [_save_one(save, image.image, image.infotext, image.seed, kind, warnings) for image in output.images]
    return [path for path in paths if path is not None]


def _restore_model(engine: Any, before: str | None, result: ScriptResult) -> None:
    """A checkpoint axis leaves the model it started with loaded (A1111 does the same)."""
    now = getattr(engine.current_model, "name", None)
    if before is None or now == before:
        return
    try:
        engine.load(before)
    except Exception as exc:  # noqa: BLE001 - the grid is done; only the model in memory differs
        log.warning("could not load %s again after the grid: %s", before, exc)
        result.warnings.append(f"{before} could not be loaded again after the grid: {exc}")


def add_pairs(infotext: str, pairs: dict[str, str]) -> str:
    """``infotext`` with more ``Key: value`` pairs on its settings line, before ``Version`` as A1111 orders it."""
    if not pairs:
        return infotext
    extra = ", ".join(f"{key}: {quote(value)}" for key, value in pairs.items())
    head, _, line = infotext.rpartition("\n")
    at = line.find(", Version: ")
    line = f"{line[:at]}, {extra}{line[at:]}" if at >= 0 else (f"{line}, {extra}" if line else extra)
    return f"{head}\n{line}" if head or infotext.count("\n") else line


def draw_plan_grids(plan: ScriptPlan, cells: list[GenerationResult | None]) -> list[GridImage]:
    """The main grid first, then (when the layout asks) each Z value's sub-grid on its own."""
    layout = plan.grid
    assert layout is not None
    firsts = [cell.images[0] if cell is not None and cell.images else None for cell in cells]
    first = next(image for image in firsts if image is not None)
    cell_size = first.image.size
    infotext = add_pairs(first.infotext, plan.grid_infotext)
    subs = []
    for z in range(layout.grids):
        chunk = [image.image if image is not None else None
                 for image in firsts[z * layout.per_grid:(z + 1) * layout.per_grid]]
        subs.append(draw_grid(chunk, layout.columns, layout.rows, cell_size, layout.x_labels, layout.y_labels,
                              layout.margin, layout.draw_legend))
    main = join_grids(subs, layout.z_labels, layout.margin, layout.draw_legend) if layout.z_labels else subs[0]
    grids = [GridImage(main, infotext, first.seed)]
    if layout.sub_grids and len(subs) > 1:
        grids += [GridImage(sub, infotext, first.seed) for sub in subs]
    return grids
