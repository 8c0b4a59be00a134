"""The X/Y/Z plot's axes on the tiny models: checkpoints load once each, VAE, hires, img2img, seeds, Z sub-grids,
choices, the limits, and a grid's infotext set back up as the same plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdlocal.engine.infotext import parse_infotext
from sdlocal.engine.request import HiresSpec, ImageSource, RequestError
from sdlocal.scripts import plan_script
from sdlocal.scripts.plan import ScriptContext
from sdlocal.scripts.runner import run_plan
from sdlocal.scripts.xyz import args_from_infotext
from tests.scripts.test_xyz import SEED, STEPS, ctx_for, xyz_args

NOTHING = 0


def label_index(label: str, img2img: bool = False) -> int:
    from sdlocal.scripts.axes import axes_for

    return [axis.label for axis in axes_for(img2img)].index(label)


def same(a, b) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_a_checkpoint_axis_loads_each_model_once_and_runs_the_loaded_one_last(
        tmp_path: Path, tiny_models_dir: Path, request_for, monkeypatch: pytest.MonkeyPatch) -> None:
    from sdlocal.engine import loader
    from tests.engine.conftest import make_engine

    engine = make_engine(tiny_models_dir, tmp_path, device="cpu", precision="fp32", max_loaded_models=1)
    engine.load("tiny-sd1-diffusers")
    loads: list[str] = []
    real = loader.load_pipeline

    def counted(entry, *args, **kwargs):
        loads.append(entry.name)
        return real(entry, *args, **kwargs)

    monkeypatch.setattr(loader, "load_pipeline", counted)
    base = request_for(model="")
    plan = plan_script("x/y/z plot", base, xyz_args(label_index("Checkpoint name"),
                                                     "tiny-sd1-diffusers, tiny-sd1-safetensors", SEED, "1, 2"),
                       ctx_for(engine))
    ran = [plan.cells[n].request.model for n in plan.run_order]
    assert ran == ["tiny-sd1-safetensors"] * 2 + ["tiny-sd1-diffusers"] * 2
    result = run_plan(engine, plan)
    assert result.cells_done == 4
    assert loads == ["tiny-sd1-safetensors", "tiny-sd1-diffusers"]  # one load each, no reload at the end
    assert engine.current_model.name == "tiny-sd1-diffusers"
    assert [label[0].text for label in plan.grid.x_labels] == ["tiny-sd1-diffusers", "tiny-sd1-safetensors"]


def test_the_model_is_loaded_again_when_the_axis_did_not_have_it(tmp_path: Path, tiny_models_dir: Path,
                                                                  request_for) -> None:
    from tests.engine.conftest import make_engine

    engine = make_engine(tiny_models_dir, tmp_path, device="cpu", precision="fp32", max_loaded_models=1)
    engine.load("tiny-sd1-diffusers")
    plan = plan_script("x/y/z plot", request_for(model=""),
                       xyz_args(label_index("Checkpoint name"), "tiny-sd1-safetensors"), ctx_for(engine))
    run_plan(engine, plan)
    assert engine.current_model.name == "tiny-sd1-diffusers"  # as A1111 leaves it


def test_an_unknown_checkpoint_is_refused_before_anything_runs(engine, request_for) -> None:
    with pytest.raises(RequestError) as caught:
        plan_script("x/y/z plot", request_for(), xyz_args(label_index("Checkpoint name"), "no-such-model"),
                    ctx_for(engine))
    assert caught.value.field == "x_values" and "no-such-model" in str(caught.value)


def test_fixed_seeds_keep_one_seed_and_keep_minus_one_does_not(engine, request_for) -> None:
    fixed = plan_script("x/y/z plot", request_for(seed=-1), xyz_args(STEPS, "1, 2"), ctx_for(engine))
    seeds = {cell.request.seed for cell in fixed.cells}
    assert len(seeds) == 1 and -1 not in seeds
    kept = plan_script("x/y/z plot", request_for(seed=-1), xyz_args(STEPS, "1, 2", no_fixed_seeds=True),
                       ctx_for(engine))
    assert [cell.request.seed for cell in kept.cells] == [-1, -1]
    seed_axis = plan_script("x/y/z plot", request_for(), xyz_args(SEED, "-1, 5"), ctx_for(engine))
    assert seed_axis.cells[0].request.seed != -1 and seed_axis.cells[1].request.seed == 5
    assert seed_axis.grid_infotext["Fixed X Values"] == f"{seed_axis.cells[0].request.seed}, 5"


def test_vary_seeds_adds_the_position_on_that_axis(engine, request_for) -> None:
    plan = plan_script("x/y/z plot", request_for(seed=100), xyz_args(STEPS, "1, 2", label_index("CFG Scale"), "5, 7",
                                                                     vary_seeds_x=True, vary_seeds_y=True),
                       ctx_for(engine))
    assert [cell.request.seed for cell in plan.cells] == [100, 101, 102, 103]


def test_a_z_axis_gives_one_sub_grid_per_value_side_by_side(engine, request_for) -> None:
    plan = plan_script("x/y/z plot", request_for(), xyz_args(STEPS, "1, 2", NOTHING, "", SEED, "1, 2",
                                                             include_sub_grids=True), ctx_for(engine))
    assert [cell.position for cell in plan.cells] == [(0, 0, 0), (1, 0, 0), (0, 0, 1), (1, 0, 1)]
    result = run_plan(engine, plan)
    main, first, second = (grid.image for grid in result.grids)
    assert first.size == second.size and main.width >= 2 * first.width and main.height > first.height
    assert plan.summary.startswith("X/Y/Z plot will create 4 images on 2 2x1 grids")


def test_hires_axes_need_hires_fix_and_vary_the_second_pass(engine, request_for) -> None:
    with pytest.raises(RequestError, match="turn on Hires fix"):
        plan_script("x/y/z plot", request_for(), xyz_args(label_index("Hires steps"), "1, 2"), ctx_for(engine))
    base = request_for(hires=HiresSpec(scale=1.5, upscaler="Latent", steps=1, denoising_strength=0.5))
    plan = plan_script("x/y/z plot", base, xyz_args(label_index("Hires steps"), "1, 2", label_index("Denoising"),
                                                    "0.3, 0.6"), ctx_for(engine))
    assert [(c.request.hires.steps, c.request.hires.denoising_strength) for c in plan.cells] == \
        [(1, 0.3), (2, 0.3), (1, 0.6), (2, 0.6)]
    assert base.hires.steps == 1  # the cells are copies


def test_an_img2img_grid_over_denoising_has_the_single_runs(engine, request_for) -> None:
    from PIL import Image

    picture = Image.new("RGB", (64, 64), (200, 30, 30))
    base = request_for(source=ImageSource(images=[picture], denoising_strength=0.5), steps=4)
    denoising = label_index("Denoising", img2img=True)
    plan = plan_script("x/y/z plot", base, xyz_args(denoising, "0.25, 0.75"), ctx_for(engine))
    assert plan.grid_kind == "img2img-grids"
    result = run_plan(engine, plan)
    single = engine.generate(request_for(source=ImageSource(images=[picture], denoising_strength=0.75), steps=4))
    assert same(result.cells[1].images[0].image, single.images[0].image)
    with pytest.raises(RequestError) as caught:  # hires fix is txt2img's: its axes are not img2img's
        plan_script("x/y/z plot", base, xyz_args("Hires steps", "1"), ctx_for(engine))
    assert caught.value.field == "x_type" and "Denoising" in str(caught.value)


def test_list_axes_take_any_case_and_refuse_what_is_not_a_choice(engine, request_for) -> None:
    sampler = label_index("Sampler")
    plan = plan_script("x/y/z plot", request_for(), xyz_args(sampler, "euler a, EULER"), ctx_for(engine))
    assert [cell.request.sampler for cell in plan.cells] == ["Euler a", "Euler"]
    dropdown = xyz_args(sampler, "")
    dropdown[2] = ["DPM++ 2M", "Euler"]
    plan = plan_script("x/y/z plot", request_for(), dropdown, ctx_for(engine))
    assert [cell.request.sampler for cell in plan.cells] == ["DPM++ 2M", "Euler"]
    with pytest.raises(RequestError) as caught:
        plan_script("x/y/z plot", request_for(), xyz_args(sampler, "Euler, Eulr"), ctx_for(engine))
    assert caught.value.field == "x_values" and "DPM++ 2M" in str(caught.value)


def test_prompt_order_size_styles_and_clip_skip(tmp_path: Path, engine, request_for) -> None:
    from sdlocal.styles import StyleLibrary

    (tmp_path / "styles.csv").write_text('name,prompt,negative_prompt\nfilm,"{prompt}, film grain",lowres\n')
    ctx = ScriptContext(engine=engine, styles=StyleLibrary(tmp_path))
    order = plan_script("x/y/z plot", request_for(prompt="a red cube on a table"),
                        xyz_args(label_index("Prompt order"), "cube, table"), ctx)
    assert [cell.request.prompt for cell in order.cells] == ["a red cube on a table", "a red table on a cube"]
    assert [label[0].text for label in order.grid.x_labels] == ["cube, table", "table, cube"]
    size = plan_script("x/y/z plot", request_for(), xyz_args(label_index("Size"), "64x64, 96x64"), ctx)
    assert [(c.request.width, c.request.height) for c in size.cells] == [(64, 64), (96, 64)]
    styles = plan_script("x/y/z plot", request_for(prompt="a cube", negative_prompt=""),
                         xyz_args(label_index("Styles"), "film"), ctx)
    assert (styles.cells[0].request.prompt, styles.cells[0].request.negative_prompt) == ("a cube, film grain",
                                                                                         "lowres")
    clip = plan_script("x/y/z plot", request_for(), xyz_args(label_index("Clip skip"), "1-2"), ctx)
    assert [cell.request.clip_skip for cell in clip.cells] == [1, 2]


def test_a_grid_too_large_is_refused_with_its_size(engine, request_for) -> None:
    with pytest.raises(RequestError, match="megapixel grid"):
        plan_script("x/y/z plot", request_for(width=1024, height=1024), xyz_args(SEED, "1-300"), ctx_for(engine))


def test_a_grids_infotext_sets_up_the_same_plot_again(engine, request_for) -> None:
    sampler = label_index("Sampler")
    plan = plan_script("x/y/z plot", request_for(), xyz_args(STEPS, "1-2", sampler, "Euler, Euler a"),
                       ctx_for(engine))
    result = run_plan(engine, plan)
    params = parse_infotext(result.grids[0].infotext)
    args = args_from_infotext(params, img2img=False)
    assert args[:6] == ["Steps", "1-2", [], "Sampler", "Euler, Euler a", ["Euler", "Euler a"]]
    again = plan_script("x/y/z plot", request_for(), args, ctx_for(engine))
    assert [(c.request.steps, c.request.sampler) for c in again.cells] == \
        [(c.request.steps, c.request.sampler) for c in plan.cells]
    assert args_from_infotext(parse_infotext(result.cells[0].images[0].infotext), img2img=False) is None
