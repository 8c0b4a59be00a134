"""The X/Y/Z plot over LoRA weights (Prompt S/R on a <lora:> tag, as A1111 users do it) and over VAEs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdlocal.engine import GenerationRequest
from sdlocal.scripts import plan_script
from sdlocal.scripts.runner import run_plan
from tests.engine.conftest import make_engine
from tests.scripts.test_xyz import SEED, ctx_for, xyz_args
from tests.scripts.test_xyz_axes import label_index

pytest.importorskip("torch")
SD1 = "tiny-sd1-safetensors"
BY_VAE = ["None", "None", "half.safetensors", "half.safetensors"]


@pytest.fixture(scope="module")
def net_engine(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny SD 1.x model with one LoRA (``sd1-lora``) and one VAE (``half``, its own VAE changed)."""
    from sdlocal.engine.networks.lora_synthetic import write_lora
    from sdlocal.engine.synthetic import build_tiny_pipeline
    from tests.engine.vae_files import write_vae

    data = tmp_path_factory.mktemp("xyz-networks")
    write_lora(build_tiny_pipeline("sd1"), data / "models" / "Lora" / "sd1-lora.safetensors", rank=4, seed=11,
               scale=2.0)
    engine = make_engine(tiny_models_dir, data, device="cpu", precision="fp32")
    engine.load(SD1)
    own = engine._pipelines().get(engine.current_model, engine._runtime_now()).pipe.vae
    write_vae(own, data / "models" / "VAE" / "half.safetensors", scale=0.5)
    engine.vaes(refresh=True)
    return engine


def single(engine, **values) -> np.ndarray:
    request = GenerationRequest(model=SD1, sampler="Euler", steps=2, width=64, height=64, seed=5, **values)
    return np.asarray(engine.generate(request).images[0].image)


def base(**values) -> GenerationRequest:
    return GenerationRequest(model=SD1, sampler="Euler", steps=2, width=64, height=64, seed=5, **values).validate()


def test_prompt_sr_over_lora_weights_gives_each_weights_single_run(net_engine) -> None:
    plan = plan_script("x/y/z plot", base(prompt="a cube <lora:sd1-lora:0>"),
                       xyz_args(label_index("Prompt S/R"), "<lora:sd1-lora:0>, <lora:sd1-lora:1>"),
                       ctx_for(net_engine))
    result = run_plan(net_engine, plan)
    without, with_lora = (np.asarray(cell.images[0].image) for cell in result.cells)
    assert (without != with_lora).any()
    assert np.array_equal(with_lora, single(net_engine, prompt="a cube <lora:sd1-lora:1>"))
    assert "Lora hashes" in result.cells[1].images[0].infotext
    assert [label[0].text for label in plan.grid.x_labels] == ["<lora:sd1-lora:0>", "<lora:sd1-lora:1>"]


def test_a_vae_axis_runs_outermost_and_each_cell_is_its_vaes_single_run(net_engine) -> None:
    plan = plan_script("x/y/z plot", base(prompt="a cube"),
                       xyz_args(SEED, "5, 6", label_index("VAE"), "none, half"), ctx_for(net_engine))
    assert [cell.request.vae for cell in plan.cells] == BY_VAE  # the names as listed
    assert [plan.cells[n].request.vae for n in plan.run_order] == BY_VAE
    seed_first = plan_script("x/y/z plot", base(prompt="a cube"),
                             xyz_args(label_index("VAE"), "None, half", SEED, "5, 6"), ctx_for(net_engine))
    assert [seed_first.cells[n].request.vae for n in seed_first.run_order] == BY_VAE
    result = run_plan(net_engine, plan)
    cell = np.asarray(result.cells[2].images[0].image)
    assert np.array_equal(cell, single(net_engine, prompt="a cube", vae="half.safetensors"))
    assert not np.array_equal(np.asarray(result.cells[0].images[0].image),
                              np.asarray(result.cells[2].images[0].image))
