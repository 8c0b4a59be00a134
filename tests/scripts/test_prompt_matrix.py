"""Prompt matrix on the tiny model: A1111's prompts, positions, seeds and legends; a cell is its single run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdlocal.engine.infotext import parse_infotext
from sdlocal.engine.request import ImageSource, RequestError
from sdlocal.jobs import DONE, JobQueue
from sdlocal.outputs import OutputStore, read_image_parameters
from sdlocal.scripts import plan_script, script_info, script_names
from sdlocal.scripts.grid import INACTIVE
from sdlocal.scripts.plan import Label, ScriptContext
from sdlocal.scripts.prompt_matrix import args_from_infotext, prompt_from_infotext
from sdlocal.scripts.runner import add_pairs, run_plan

MATRIX = "prompt matrix"


def ctx_for(engine) -> ScriptContext:
    return ScriptContext(engine=engine)


def matrix_args(put_at_start=False, different_seeds=False, prompt_type="positive", delimiter="comma", margin=0):
    return [put_at_start, different_seeds, prompt_type, delimiter, margin]


def test_two_parts_make_four_cells_in_a_2x2_grid_with_one_seed(engine, request_for) -> None:
    plan = plan_script(MATRIX, request_for(prompt="a photo|red hat|blue background", seed=42), matrix_args(),
                       ctx_for(engine))
    assert [cell.request.prompt for cell in plan.cells] == [
        "a photo", "a photo, red hat", "a photo, blue background", "a photo, red hat, blue background"]
    assert [cell.position for cell in plan.cells] == [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)]
    assert (plan.grid.columns, plan.grid.rows) == (2, 2)
    assert {cell.request.seed for cell in plan.cells} == {42}
    assert all(cell.request.negative_prompt == "blurry" for cell in plan.cells)
    assert plan.save_cells and plan.return_cells and plan.images == 4
    assert "4 images" in plan.summary and "2x2" in plan.summary


def test_three_parts_take_part_i_on_bit_i_with_the_first_two_on_the_columns(engine, request_for) -> None:
    plan = plan_script(MATRIX, request_for(prompt="cat| hat ,|scarf|boots"), matrix_args(), ctx_for(engine))
    assert (plan.grid.columns, plan.grid.rows) == (4, 2) and len(plan.cells) == 8
    by_position = {cell.position[:2]: cell.request.prompt for cell in plan.cells}
    assert by_position[(0, 0)] == "cat"
    assert by_position[(1, 0)] == "cat, hat"  # stripped of spaces and the trailing comma
    assert by_position[(3, 0)] == "cat, hat, scarf"
    assert by_position[(1, 1)] == "cat, hat, boots"  # cell 5 = bits 0 and 2
    assert by_position[(2, 1)] == "cat, scarf, boots"
    assert plan.grid.x_labels == [
        [Label("hat", False), Label("scarf", False)], [Label("hat", True), Label("scarf", False)],
        [Label("hat", False), Label("scarf", True)], [Label("hat", True), Label("scarf", True)]]
    assert plan.grid.y_labels == [[Label("boots", False)], [Label("boots", True)]]


def test_put_at_start_and_the_space_delimiter(engine, request_for) -> None:
    plan = plan_script(MATRIX, request_for(prompt="a photo|red hat|blue background"),
                       matrix_args(put_at_start=True, delimiter="space"), ctx_for(engine))
    assert [cell.request.prompt for cell in plan.cells] == [
        "a photo", "red hat a photo", "blue background a photo", "red hat blue background a photo"]


def test_a_negative_matrix_splits_the_negative_prompt_and_keeps_the_prompt(engine, request_for) -> None:
    plan = plan_script(MATRIX, request_for(prompt="a red cube", negative_prompt="blurry|dark|noisy"),
                       matrix_args(prompt_type="negative"), ctx_for(engine))
    assert [cell.request.negative_prompt for cell in plan.cells] == [
        "blurry", "blurry, dark", "blurry, noisy", "blurry, dark, noisy"]
    assert {cell.request.prompt for cell in plan.cells} == {"a red cube"}
    params = parse_infotext(add_pairs("a red cube\nNegative prompt: blurry\nSteps: 2, Seed: 1", plan.grid_infotext))
    assert args_from_infotext(params, False) == matrix_args(prompt_type="negative")
    assert prompt_from_infotext(params) == ("negative_prompt", "blurry|dark|noisy")
    with pytest.raises(RequestError) as caught:  # the positive prompt has no "|": fine, the negative one is split
        plan_script(MATRIX, request_for(prompt="a|b", negative_prompt="blurry"), matrix_args(prompt_type="negative"),
                    ctx_for(engine))
    assert caught.value.field == "negative_prompt"


def test_different_seeds_count_up_from_a_seed_fixed_first(engine, request_for) -> None:
    plan = plan_script(MATRIX, request_for(prompt="a|b|c", seed=-1), matrix_args(different_seeds=True),
                       ctx_for(engine))
    first = plan.cells[0].request.seed
    assert first != -1 and plan.base.seed == first
    assert [cell.request.seed for cell in plan.cells] == [first, first + 1, first + 2, first + 3]
    same = plan_script(MATRIX, request_for(prompt="a|b|c", seed=-1), matrix_args(), ctx_for(engine))
    assert len({cell.request.seed for cell in same.cells}) == 1 and same.cells[0].request.seed != -1


def test_bad_arguments_and_prompts_are_errors_naming_the_field(engine, request_for) -> None:
    ctx = ctx_for(engine)
    with pytest.raises(RequestError) as caught:
        plan_script(MATRIX, request_for(prompt="a photo of a cat"), matrix_args(), ctx)
    assert caught.value.field == "prompt" and "'|'" in caught.value.allowed
    with pytest.raises(RequestError) as caught:
        plan_script(MATRIX, request_for(prompt="a||b"), matrix_args(), ctx)
    assert caught.value.field == "prompt" and "part 1 is empty" in caught.value.allowed
    for index, value, field in ((2, "both", "prompt_type"), (3, "tab", "variations_delimiter"),
                                (4, 501, "margin_size"), (4, "wide", "margin_size"), (0, "maybe", "put_at_start")):
        args = matrix_args()
        args[index] = value
        with pytest.raises(RequestError) as caught:
            plan_script(MATRIX, request_for(prompt="a|b"), args, ctx)
        assert caught.value.field == field
    with pytest.raises(RequestError) as caught:
        plan_script(MATRIX, request_for(prompt="a" + "|b" * 14), matrix_args(), ctx)  # 16384 cells
    assert caught.value.field == "prompt" and "at most" in caught.value.allowed
    with pytest.raises(RequestError) as caught:  # 1024 cells of 512x512: 268 megapixels
        plan_script(MATRIX, request_for(prompt="a" + "|b" * 10, width=512, height=512), matrix_args(), ctx)
    assert caught.value.field == "prompt" and "megapixel" in caught.value.allowed
    with pytest.raises(RequestError) as caught:
        plan_script(MATRIX, request_for(prompt="a|b"), matrix_args() + [True], ctx)
    assert caught.value.field == "script_args"


def test_a_cell_is_the_single_run_of_its_prompt_and_the_grid_has_struck_through_legends(engine, request_for) -> None:
    plan = plan_script(MATRIX, request_for(prompt="a cube|red|shiny", steps=1, seed=3), matrix_args(margin=4),
                       ctx_for(engine))
    result = run_plan(engine, plan)
    assert result.cells_done == 4 and not result.interrupted
    for index in (1, 3):
        single = engine.generate(request_for(prompt=plan.cells[index].request.prompt, steps=1, seed=3))
        assert np.array_equal(np.asarray(result.cells[index].images[0].image), np.asarray(single.images[0].image))
    grid = np.asarray(result.grids[0].image)
    assert grid.shape[1] > 2 * 64 + 4 and grid.shape[0] > 2 * 64 + 4  # cells, margin and legends
    assert (grid.reshape(-1, 3) == INACTIVE).all(axis=1).any()  # an inactive part is drawn grey
    assert len(result.outputs()) == 1 + 4  # the grid, then every cell


def test_the_grid_and_the_cells_are_saved_and_the_grid_reads_back(tmp_path: Path, engine, request_for) -> None:
    queue = JobQueue(engine, OutputStore(tmp_path), max_queue=4)
    prompt = "a cube|red, glossy|on grass"
    try:
        plan = plan_script(MATRIX, request_for(prompt=prompt, steps=1),
                           matrix_args(different_seeds=True, delimiter="space"), ctx_for(engine))
        job = queue.submit_script(plan)
        result = job.wait(300)
    finally:
        queue.close()
    assert job.state == DONE and len(result.grids) == 1
    assert result.grids[0].path.parent.parent.name == "txt2img-grids"
    cells = sorted((tmp_path / "txt2img").glob("*/*.png"))
    assert len(cells) == 4
    prompts = sorted(parse_infotext(read_image_parameters(path))["Prompt"] for path in cells)
    assert prompts == sorted(cell.request.prompt for cell in plan.cells)
    params = parse_infotext(read_image_parameters(result.grids[0].path))
    assert params["Script"] == "Prompt matrix" and params["Prompt matrix"] == prompt
    assert args_from_infotext(params, False) == matrix_args(different_seeds=True, delimiter="space")
    assert prompt_from_infotext(params) == ("prompt", prompt)
    assert args_from_infotext({"Script": "X/Y/Z plot"}, False) is None and prompt_from_infotext({}) is None


def test_the_scripts_are_listed_in_a1111s_order_with_their_ui_labels(engine) -> None:
    assert script_names() == ["prompt matrix", "prompts from file or textbox", "x/y/z plot"]
    info = {(item.name, item.is_img2img): item for item in script_info(ctx_for(engine))}
    matrix = info[("prompt matrix", True)].to_dict()["args"]
    assert [arg["label"] for arg in matrix] == [
        "Put variable parts at start of prompt", "Use different seed for each picture", "Select prompt",
        "Select joining char", "Grid margins (px)"]
    assert matrix[2]["choices"] == ["positive", "negative"] and matrix[3]["value"] == "comma"
    lines = info[("prompts from file or textbox", False)].to_dict()["args"]
    assert [arg["label"] for arg in lines] == ["Iterate seed every line", "Use same random seed for all lines",
                                               "Insert prompts at the", "List of prompt inputs"]
    assert lines[2]["choices"] == ["start", "end"]


def test_an_img2img_matrix_keeps_the_source_in_every_cell(engine, request_for) -> None:
    from PIL import Image

    picture = Image.new("RGB", (64, 64), (200, 30, 30))
    base = request_for(prompt="a cube|red", source=ImageSource(images=[picture], denoising_strength=0.5))
    plan = plan_script(MATRIX, base, matrix_args(), ctx_for(engine))
    assert plan.output_kind == "img2img" and plan.grid_kind == "img2img-grids"
    assert all(cell.request.source.images[0] is picture for cell in plan.cells)
    assert [cell.request.prompt for cell in plan.cells] == ["a cube", "a cube, red"]
    assert (plan.grid.columns, plan.grid.rows, plan.grid.y_labels) == (2, 1, [])  # one part: no row legend
