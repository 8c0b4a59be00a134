"""X/Y/Z plot on the tiny models: cells equal single runs, axes change what they say, the grid reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdlocal.engine.infotext import parse_infotext
from sdlocal.engine.request import RequestError, RunControl
from sdlocal.jobs import DONE, INTERRUPTED, JobQueue
from sdlocal.outputs import OutputStore, read_image_parameters
from sdlocal.scripts import plan_script
from sdlocal.scripts.axes import axes_for
from sdlocal.scripts.plan import ScriptContext
from sdlocal.scripts.runner import run_plan

STEPS, SEED, PROMPT_SR = 4, 1, 7  # A1111's txt2img axis indices


def xyz_args(x_type=STEPS, x_values="", y_type=0, y_values="", z_type=0, z_values="", **flags):
    """A1111's 18 positional arguments; ``flags`` by name (draw_legend, include_lone_images, ...)."""
    names = ["draw_legend", "include_lone_images", "include_sub_grids", "no_fixed_seeds", "vary_seeds_x",
             "vary_seeds_y", "vary_seeds_z", "margin_size", "csv_mode"]
    defaults = {"draw_legend": True, "margin_size": 0}
    return [x_type, x_values, [], y_type, y_values, [], z_type, z_values, []] + \
        [flags.get(name, defaults.get(name, False)) for name in names]


def ctx_for(engine) -> ScriptContext:
    current = engine.current_model
    return ScriptContext(engine=engine, current_model=current.name if current else "")


def test_a_2x2_grid_over_steps_and_seed_has_the_four_single_runs(engine, request_for) -> None:
    base = request_for(steps=2, seed=10)
    plan = plan_script("x/y/z plot", base, xyz_args(STEPS, "1, 2", SEED, "10, 11", include_lone_images=True),
                       ctx_for(engine))
    assert [(c.request.steps, c.request.seed) for c in plan.cells] == [(1, 10), (2, 10), (1, 11), (2, 11)]
    result = run_plan(engine, plan)
    assert result.cells_done == 4 and not result.interrupted
    for cell in plan.cells:
        single = engine.generate(request_for(steps=cell.request.steps, seed=cell.request.seed))
        assert np.array_equal(np.asarray(result.cells[cell.index].images[0].image),
                              np.asarray(single.images[0].image)), cell.position
    grid = result.grids[0].image
    assert grid.width >= 2 * 64 and grid.height >= 2 * 64  # two columns, two rows, plus the legends


def test_prompt_sr_replaces_the_first_value_in_each_cell(engine, request_for) -> None:
    plan = plan_script("x/y/z plot", request_for(prompt="a red cube on a table"),
                       xyz_args(PROMPT_SR, "red, blue, green"), ctx_for(engine))
    assert [cell.request.prompt for cell in plan.cells] == ["a red cube on a table", "a blue cube on a table",
                                                            "a green cube on a table"]
    with pytest.raises(RequestError) as caught:
        plan_script("x/y/z plot", request_for(prompt="a cube"), xyz_args(PROMPT_SR, "red, blue"), ctx_for(engine))
    assert caught.value.field == "x_values" and "must appear in the prompt" in str(caught.value)


def test_a_bad_value_is_an_error_naming_the_argument_before_anything_runs(engine, request_for) -> None:
    with pytest.raises(RequestError) as caught:
        plan_script("x/y/z plot", request_for(), xyz_args(STEPS, "1, 500"), ctx_for(engine))
    assert caught.value.field == "x_values" and "steps" in str(caught.value)
    with pytest.raises(RequestError) as caught:
        plan_script("x/y/z plot", request_for(), xyz_args(99, "1"), ctx_for(engine))
    assert caught.value.field == "x_type"
    sigma = [a.label for a in axes_for(False)].index("Sigma Churn")
    with pytest.raises(RequestError, match="cannot be plotted") as caught:
        plan_script("x/y/z plot", request_for(), xyz_args(sigma, "1"), ctx_for(engine))


def test_the_grid_infotext_names_the_axes_and_reads_back(tmp_path: Path, engine, request_for) -> None:
    queue = JobQueue(engine, OutputStore(tmp_path), max_queue=4)
    try:
        plan = plan_script("x/y/z plot", request_for(), xyz_args(STEPS, "1-2", SEED, "5, 6"), ctx_for(engine))
        job = queue.submit_script(plan)
        result = job.wait(300)
    finally:
        queue.close()
    assert job.state == DONE and len(result.grids) == 1
    grid_path = result.grids[0].path
    assert grid_path.parent.parent.name == "txt2img-grids"
    params = parse_infotext(read_image_parameters(grid_path))
    assert params["Script"] == "X/Y/Z plot"
    assert (params["X Type"], params["X Values"], params["Y Type"], params["Y Values"]) == \
        ("Steps", "1-2", "Seed", "5, 6")
    assert params["Steps"] == "1" and params["Seed"] == "5"  # the first cell's own settings
    assert not list((tmp_path / "txt2img").glob("*/*.png"))  # cells are kept only when asked


def test_an_interrupted_grid_is_saved_with_the_cells_done(tmp_path: Path, engine, request_for) -> None:
    plan = plan_script("x/y/z plot", request_for(), xyz_args(SEED, "1, 2, 3, 4", include_lone_images=True),
                       ctx_for(engine))
    control = RunControl()
    saved = []

    def on_progress(done, total, update):
        if done == 2 and update is None:
            control.interrupt()

    def save(picture, parameters, seed, kind):
        saved.append(kind)
        return tmp_path / f"{len(saved)}.png"

    result = run_plan(engine, plan, control=control, on_progress=on_progress, save=save)
    assert result.interrupted and result.cells_done == 2
    assert saved == ["txt2img", "txt2img", "txt2img-grids"]
    assert result.grids[0].image.size == (4 * 64, 64 + result.grids[0].image.height - 64)
    last = np.asarray(result.grids[0].image)[-64:, -64:]
    assert not last.any()  # the cells not run are empty


def test_the_queue_interrupt_stops_a_script_job(tmp_path: Path, engine, request_for) -> None:
    queue = JobQueue(engine, OutputStore(tmp_path), max_queue=4)
    try:
        plan = plan_script("x/y/z plot", request_for(steps=3), xyz_args(SEED, "1-6"), ctx_for(engine))
        job = queue.submit_script(plan)
        queue.submit_call(lambda: None)  # the queue goes on after it
        while queue.progress().job_kind != "script" or queue.progress().batch_index < 1:  # in the second cell
            assert not job.join(0.01), "the grid finished before it could be interrupted"
        assert queue.interrupt()
        result = job.wait(300)
    finally:
        queue.close()
    assert job.state == INTERRUPTED and 1 <= result.cells_done < 6 and result.grids


class FailingEngine:
    """The tiny engine, except that the n-th generate raises (a model gone, out of memory)."""

    def __init__(self, engine, fail_at: int) -> None:
        self.engine, self.fail_at, self.calls = engine, fail_at, 0
        self.current_model = engine.current_model

    def generate(self, request, on_progress=None, control=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("CUDA out of memory (pretend)")
        return self.engine.generate(request, on_progress=on_progress, control=control)


def test_a_failing_cell_keeps_the_cells_before_it_and_a_first_failure_fails_the_job(engine, request_for) -> None:
    plan = plan_script("x/y/z plot", request_for(), xyz_args(SEED, "1, 2, 3"), ctx_for(engine))
    result = run_plan(FailingEngine(engine, fail_at=3), plan)
    assert result.cells_done == 2 and result.grids and "Cell 3 of 3 failed" in result.warnings[-1]
    with pytest.raises(RuntimeError, match="out of memory"):
        run_plan(FailingEngine(engine, fail_at=1), plan)
