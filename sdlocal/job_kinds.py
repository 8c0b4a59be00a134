"""How the queue's worker runs the two kinds of job besides a generation: an Extras upscale and a script.

A mixin of ``JobQueue`` (it uses the queue's engine, store, progress and counters), kept apart so each kind's
running, saving and progress text reads on its own.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdlocal.engine.request import Progress
from sdlocal.job_state import DONE, INTERRUPTED

if TYPE_CHECKING:
    from sdlocal.jobs import Job

log = logging.getLogger("sdlocal.jobs")


class ScriptAndExtrasRuns:
    """``JobQueue``'s runners for "extras" and "script" jobs (see the module docstring)."""

    engine: Any
    store: Any
    images_generated: int

    def _run_extras(self, job: Job) -> None:
        """The Extras upscale on the engine; the outputs done before an interrupt are saved and kept."""
        result = self.engine.postprocess(job.extras, on_progress=self._on_extras_progress, control=job.control)
        if job.save and (job.store or self.store) is not None:
            self._save_extras(job, result)
        self._recent_seconds.append(time.time() - (job.started or time.time()))
        job._finish(INTERRUPTED if result.interrupted else DONE, result=result)

    def _run_script(self, job: Job) -> None:
        """A script's cells on the engine, then its grid; the worker saves as it goes (see ``scripts.runner``)."""
        from sdlocal.scripts.runner import run_plan

        def save(picture: Any, parameters: str, seed: int | None, kind: str) -> Path:
            path = Path(self.store.save(picture, parameters, seed, kind=kind))
            job.saved_paths.append(path)
            return path

        saver = save if (job.save or job.save_grid) and self.store is not None else None
        result = run_plan(self.engine, job.script, control=job.control, on_progress=self._on_script_progress,
                          save=saver, save_cells=job.save, save_grids=job.save_grid)
        for cell in result.cells:
            if cell is not None:
                self.images_generated += len(cell.images)
                self._record_timing(cell)
        self._recent_seconds.append(time.time() - (job.started or time.time()))
        job._finish(INTERRUPTED if result.interrupted else DONE, result=result)

    def _on_script_progress(self, done: int, total: int, update: Progress | None) -> None:
        """Script progress: "Cell i/n" and the fraction across cells and the running cell's steps."""
        try:
            with self._progress_lock:
                state = self._progress
                shown = min(done + 1, total)
                state.text = f"Cell {shown}/{total}"
                state.job_no, state.batch_index, state.batch_count = done, done, total
                part = 0.0
                if update is not None:
                    state.step, state.total_steps = update.step, update.total_steps
                    part = update.fraction
                    if update.preview is not None:
                        state.preview = update.preview
                        state.preview_id = next(self._previews)
                state.textinfo = state.text + (f", step {state.step}/{state.total_steps}" if update else "")
                state.fraction = min(1.0, (done + part) / total) if total else 1.0
                started = self._running.started if self._running is not None else None
                if started and state.fraction > 0:
                    elapsed = time.time() - started
                    state.eta_seconds = elapsed / state.fraction * (1 - state.fraction)
        except Exception:  # noqa: BLE001 - progress is cosmetic
            log.exception("progress update failed")

    def _save_extras(self, job: Job, result: Any) -> None:
        """Each output as ``extras-images/YYYY-MM-DD/NNNNN.png`` (A1111's folder and names): the source's own
        ``parameters`` unchanged, plus the Postprocessing text as A1111 writes it (``postprocessing`` and
        ``extras`` chunks). A failed save adds a warning; the picture stays in the result."""
        for index, output in enumerate(result.images):
            extra = {"postprocessing": output.infotext, "extras": output.infotext}
            try:
                store = job.store or self.store
                job.saved_paths.append(Path(store.save(output.image, output.parameters or "", None,
                                                       kind="extras-images", extra_text=extra)))
            except Exception as exc:  # noqa: BLE001 - a full disk must not lose the pictures already made
                log.exception("could not save extras image %d", index + 1)
                result.warnings.append(f"Could not save image {index + 1} ({output.name or 'unnamed'}): {exc}")

    def _on_extras_progress(self, index: int, total: int, tiles_done: int, tiles_total: int) -> None:
        """Extras progress: "Upscaling image i/n" and the fraction across images and their tiles."""
        try:
            with self._progress_lock:
                state = self._progress
                shown = min(index + 1, total)
                state.text = f"Upscaling image {shown}/{total}"
                state.textinfo = state.text + (f", tile {tiles_done}/{tiles_total}" if tiles_total else "")
                state.job_no, state.batch_index, state.batch_count = index, index, total
                state.step, state.total_steps = tiles_done, tiles_total
                part = tiles_done / tiles_total if tiles_total else 0.0
                state.fraction = min(1.0, (index + part) / total) if total else 1.0
        except Exception:  # noqa: BLE001 - progress is cosmetic
            log.exception("progress update failed")
