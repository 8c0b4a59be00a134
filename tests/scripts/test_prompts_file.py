"""Prompts from file or textbox: A1111's line options and seed rules; a bad line is named and nothing runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdlocal.engine.infotext import parse_infotext
from sdlocal.engine.request import ImageSource, RequestError
from sdlocal.jobs import DONE, JobQueue
from sdlocal.outputs import OutputStore, read_image_parameters
from sdlocal.scripts import plan_script
from sdlocal.scripts.plan import ScriptContext
from sdlocal.styles import StyleLibrary
from tests.scripts.conftest import model_name

LINES = "prompts from file or textbox"


def ctx_for(engine, styles=None) -> ScriptContext:
    return ScriptContext(engine=engine, styles=styles)


def lines_args(text, iterate=False, same_seed=False, position="start"):
    return [iterate, same_seed, position, text]


def test_every_option_is_applied_to_its_lines_request(tmp_path: Path, engine, request_for) -> None:
    (tmp_path / "styles.csv").write_text("name,prompt,negative_prompt\nGlossy,glossy,matte\n")
    text = "\n".join([
        "a plain line",
        "",
        '--prompt "a blue" ball on grass --negative_prompt dark noisy --steps 1 --cfg_scale 5.5 --seed 7',
        "--sampler_name 'euler a' --width 72 --height 80 --batch_size 2 --n_iter 3 --clip_skip 2",
        f"--sd_model {model_name('tiny-sd1-safetensors.safetensors')} --styles Glossy",
    ])
    plan = plan_script(LINES, request_for(prompt="", seed=5), lines_args(text),
                       ctx_for(engine, StyleLibrary(tmp_path)))
    plain, options, sampler, model = (cell.request for cell in plan.cells)
    assert plan.grid is None and plan.save_cells and plan.return_cells and len(plan.cells) == 4
    assert plain.prompt == "a plain line" and plain.negative_prompt == "blurry" and plain.steps == 2
    assert (options.prompt, options.negative_prompt, options.steps, options.cfg_scale, options.seed) == \
        ("a blue ball on grass", "dark noisy blurry", 1, 5.5, 7)
    assert (sampler.sampler, sampler.width, sampler.height, sampler.batch_size, sampler.batch_count,
            sampler.clip_skip) == ("Euler a", 72, 80, 2, 3, 2)
    assert sampler.prompt == "" and sampler.seed == 5  # no prompt on the line: the UI's (empty) one
    assert model.model == "tiny-sd1-safetensors"
    assert (model.prompt, model.negative_prompt) == ("glossy", "blurry, matte")  # the style, after the line
    assert plan.images == 1 + 1 + 6 + 1 and "9 images from 4 lines" in plan.summary


def test_the_lines_prompt_goes_before_or_after_the_ui_prompt(engine, request_for) -> None:
    text = "a cat\n--prompt a dog --negative_prompt ugly"
    start = plan_script(LINES, request_for(prompt="masterpiece"), lines_args(text), ctx_for(engine))
    assert [cell.request.prompt for cell in start.cells] == ["a cat masterpiece", "a dog masterpiece"]
    assert start.cells[1].request.negative_prompt == "ugly blurry"
    end = plan_script(LINES, request_for(prompt="masterpiece"), lines_args(text, position="end"), ctx_for(engine))
    assert [cell.request.prompt for cell in end.cells] == ["masterpiece a cat", "masterpiece a dog"]
    assert end.cells[1].request.negative_prompt == "blurry ugly"


def test_seeds_follow_a1111s_two_checkboxes(engine, request_for) -> None:
    text = "one --\n--prompt two --batch_size 2\n--prompt three --seed 50\nfour"
    iterate = plan_script(LINES, request_for(seed=100), lines_args(text, iterate=True), ctx_for(engine))
    assert [cell.request.seed for cell in iterate.cells] == [100, 101, 50, 104]  # after each line's pictures
    assert iterate.cells[0].request.prompt.startswith("one --")  # a line not starting with -- is all prompt
    same = plan_script(LINES, request_for(seed=-1), lines_args(text, same_seed=True), ctx_for(engine))
    seeds = [cell.request.seed for cell in same.cells]
    assert seeds[0] != -1 and seeds == [seeds[0], seeds[0], 50, seeds[0]]
    fixed = plan_script(LINES, request_for(seed=9), lines_args(text), ctx_for(engine))
    assert [cell.request.seed for cell in fixed.cells] == [9, 9, 50, 9]
    random = plan_script(LINES, request_for(seed=-1), lines_args(text), ctx_for(engine))
    assert [cell.request.seed for cell in random.cells] == [-1, -1, 50, -1]  # each line picks its own


@pytest.mark.parametrize(("line", "says"), [
    ('--prompt "a cat', "cannot be read"),
    ("--prompt a cat --colour red", "--colour is not an option"),
    ("--subseed 5", "--subseed is an A1111 option sdlocal does not have"),
    ("--restore_faces true", "does not have"),
    ("--steps", "--steps needs a value"),
    ("--steps abc", "--steps needs a whole number, not 'abc'"),
    ("--cfg_scale high", "--cfg_scale needs a number"),
    ("--steps 500", "--steps 500 is not allowed"),
    ("--width 70", "--width 70 is not allowed"),
    ("--sampler_name Nope", "--sampler_name 'Nope' is not allowed"),
    ("--sd_model no-such-model", "--sd_model 'no-such-model' is not allowed"),
    ("--styles Nope", "--styles 'Nope' is not allowed"),
    ("--prompt a --steps 1 red", "'red' is not an option"),
])
def test_a_bad_line_is_an_error_naming_its_number_and_nothing_is_planned(engine, request_for, line, says) -> None:
    text = f"a good line\n\n--steps 1\n{line}\nanother good line"
    with pytest.raises(RequestError) as caught:
        plan_script(LINES, request_for(), lines_args(text), ctx_for(engine))
    assert caught.value.field == "prompt_txt"
    assert caught.value.allowed.startswith("line 4: ") and says in caught.value.allowed, caught.value.allowed


def test_a_plain_line_the_request_refuses_is_named_as_the_prompt(engine, request_for) -> None:
    with pytest.raises(RequestError) as caught:
        plan_script(LINES, request_for(), lines_args("a cat\na dog <lora:x:abc>"), ctx_for(engine))
    assert caught.value.field == "prompt_txt" and caught.value.value == "a dog <lora:x:abc>"
    assert caught.value.allowed.startswith("line 2: prompt ") and "not a number" in caught.value.allowed


def test_empty_text_and_bad_arguments_are_errors_naming_them(engine, request_for) -> None:
    for text in ("", "\n  \n"):
        with pytest.raises(RequestError) as caught:
            plan_script(LINES, request_for(), lines_args(text), ctx_for(engine))
        assert caught.value.field == "prompt_txt" and "one prompt per line" in caught.value.allowed
    for args, field in (([False, False, "middle", "a"], "prompt_position"), ([2, False, "start", "a"],
                                                                             "checkbox_iterate"),
                        ([False, "x", "start", "a"], "checkbox_iterate_batch"), ([False, False, "start", 5],
                                                                                   "prompt_txt")):
        with pytest.raises(RequestError) as caught:
            plan_script(LINES, request_for(), args, ctx_for(engine))
        assert caught.value.field == field


def test_a_run_on_the_queue_saves_every_picture_with_its_own_parameters(tmp_path: Path, engine, request_for) -> None:
    text = "a red cube\n--prompt a blue ball --steps 2 --seed 21 --batch_size 2\n--negative_prompt dark --seed 3"
    queue = JobQueue(engine, OutputStore(tmp_path), max_queue=4)
    try:
        plan = plan_script(LINES, request_for(prompt="", negative_prompt="", steps=1, seed=11), lines_args(text),
                           ctx_for(engine))
        job = queue.submit_script(plan)
        result = job.wait(300)
    finally:
        queue.close()
    assert job.state == DONE and result.grids == [] and result.cells_done == 3
    assert not (tmp_path / "txt2img-grids").exists()
    saved = [parse_infotext(read_image_parameters(path)) for path in job.saved_paths]
    assert all(path.parent.parent.name == "txt2img" for path in job.saved_paths)
    assert [(p.get("Prompt", ""), p.get("Negative prompt", ""), p["Steps"], p["Seed"]) for p in saved] == [
        ("a red cube", "", "1", "11"), ("a blue ball", "", "2", "21"), ("a blue ball", "", "2", "22"),
        ("", "dark", "1", "3")]
    assert [picture for picture, _, _ in result.outputs()] == [image.image for cell in result.cells
                                                               for image in cell.images]


def test_img2img_lines_keep_the_source_and_go_to_img2img(engine, request_for) -> None:
    from PIL import Image

    picture = Image.new("RGB", (64, 64), (30, 30, 200))
    base = request_for(source=ImageSource(images=[picture], denoising_strength=0.5))
    plan = plan_script(LINES, base, lines_args("a cat\n--prompt a dog --steps 3"), ctx_for(engine))
    assert plan.output_kind == "img2img" and plan.grid is None
    assert all(cell.request.source.images[0] is picture for cell in plan.cells)
    assert plan.cells[1].request.steps == 3
