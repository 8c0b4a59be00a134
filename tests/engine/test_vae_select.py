"""Choosing the VAE (A1111's ``sd_vae``): a VAE file swaps the decoder's module only, "None" gives the checkpoint's
own back bit for bit, "Automatic" takes the VAE named after the checkpoint, and what does not fit is refused with
the reason."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.engine.conftest import make_engine, pixels
from tests.engine.vae_files import write_diffusers_vae, write_vae

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    """An engine over a tiny SD 1.x checkpoint ``m`` (and its copy ``auto`` with ``auto.vae.safetensors`` beside
    it), with VAEs in ``<data dir>/models/VAE`` made from the model's own VAE weights."""
    from sdlocal.engine.synthetic import save_tiny_model

    root = tmp_path_factory.mktemp("vae")
    models = root / "Stable-diffusion"
    models.mkdir()
    save_tiny_model(models / "m.safetensors", family="sd1", fmt="safetensors")
    shutil.copy(models / "m.safetensors", models / "auto.safetensors")
    shutil.copytree(models / "m.config", models / "auto.config")  # the tiny shapes' config folder
    engine = make_engine(models, root / "data", device="cpu", precision="fp32")
    engine.load("m")
    own = loaded_of(engine).pipe.vae
    folder = root / "data" / "models" / "VAE"
    write_vae(own, folder / "half.safetensors", scale=0.5)
    write_vae(own, folder / "sub" / "third.pt", scale=0.3)
    write_vae(own, folder / "prefixed.safetensors", scale=0.7, prefix="first_stage_model.")
    write_vae(own, folder / "sdxl_vae.safetensors", scale=0.5)
    write_diffusers_vae(own, folder / "folder-vae", scale=0.6)
    write_vae(own, models / "auto.vae.safetensors", scale=0.4)
    engine.vaes(refresh=True)
    return engine, root


def loaded_of(engine):
    return engine._pipelines().get(engine.current_model, engine._runtime_now())


def run(engine, vae: str = "None", model: str = "m", **extra):
    from sdlocal.engine import GenerationRequest

    request = GenerationRequest(prompt="a red cube", model=model, sampler="Euler", steps=2, width=64, height=64,
                                seed=7, vae=vae, **extra)
    return engine.generate(request)


def test_a_vae_file_changes_the_decode_and_none_brings_the_original_back_bit_identical(setup) -> None:
    engine, _root = setup
    before = run(engine, "None")
    loaded = loaded_of(engine)
    unet, text_encoder, own = loaded.pipe.unet, loaded.pipe.text_encoder, loaded.pipe.vae
    swapped = run(engine, "half.safetensors")
    assert (pixels(swapped.images[0].image) != pixels(before.images[0].image)).any()
    assert loaded.pipe.vae is not own
    assert loaded.pipe.unet is unet and loaded.pipe.text_encoder is text_encoder  # nothing else reloaded
    after = run(engine, "None")
    assert loaded.pipe.vae is own
    assert (pixels(after.images[0].image) == pixels(before.images[0].image)).all()


@pytest.mark.parametrize("name", ["sub/third.pt", "prefixed.safetensors", "folder-vae"])
def test_pt_prefixed_and_diffusers_folder_vaes_load_and_differ_from_the_own(setup, name: str) -> None:
    engine, _root = setup
    own = pixels(run(engine, "None").images[0].image)
    assert (pixels(run(engine, name).images[0].image) != own).any()


def test_the_same_vae_again_swaps_nothing(setup) -> None:
    engine, _root = setup
    run(engine, "half.safetensors")
    module = loaded_of(engine).pipe.vae
    run(engine, "HALF")  # the stem, any case
    assert loaded_of(engine).pipe.vae is module


def test_infotext_names_the_vae_file_and_its_a1111_hash_and_reads_back(setup) -> None:
    from sdlocal.engine.infotext import infotext_to_request_fields, parse_infotext

    engine, root = setup
    result = run(engine, "half.safetensors")
    digest = hashlib.sha256((root / "data" / "models" / "VAE" / "half.safetensors").read_bytes()).hexdigest()
    params = parse_infotext(result.images[0].infotext)
    assert params["VAE hash"] == digest[:10] and params["VAE"] == "half.safetensors"
    assert (result.vae_name, result.vae_hash) == ("half.safetensors", digest[:10])
    assert infotext_to_request_fields(params)["vae"] == "half.safetensors"
    own = parse_infotext(run(engine, "None").images[0].infotext)
    assert "VAE" not in own and "VAE hash" not in own


def test_automatic_uses_the_vae_beside_the_checkpoint_named_after_it(setup) -> None:
    engine, _root = setup
    result = run(engine, "Automatic", model="auto")
    assert result.vae_name == "auto.vae.safetensors"
    assert run(engine, "Automatic", model="m").vae_name == ""  # none named after m: its own
    # and the model list does not show auto.vae.safetensors as a (broken) model of its own
    assert [e.name for e in engine.models(refresh=True) if "vae" in e.name.lower()] == []


def test_img2img_decodes_with_the_chosen_vae_too(setup) -> None:
    from PIL import Image

    from sdlocal.engine.request import ImageSource

    engine, _root = setup
    source = Image.new("RGB", (64, 64), (120, 60, 30))

    def img2img(vae: str):
        return run(engine, vae, source=ImageSource(images=[source], denoising_strength=0.6))

    own = img2img("None")
    swapped = img2img("half.safetensors")
    loaded = loaded_of(engine)
    assert all(variant.vae is loaded.pipe.vae for variant in loaded.variants.values())
    assert (pixels(swapped.images[0].image) != pixels(own.images[0].image)).any()
    assert (pixels(img2img("None").images[0].image) == pixels(own.images[0].image)).all()


def test_an_unknown_vae_is_a_request_error_naming_the_closest(setup) -> None:
    from sdlocal.engine.request import RequestError

    engine, _root = setup
    with pytest.raises(RequestError) as caught:
        run(engine, "hafl.safetensors")
    assert caught.value.field == "vae" and "half.safetensors" in caught.value.allowed


def test_a_vae_of_another_family_is_refused_naming_both(setup) -> None:
    from sdlocal.engine.request import RequestError

    engine, _root = setup
    run(engine, "None")
    own = loaded_of(engine).pipe.vae
    with pytest.raises(RequestError) as caught:
        run(engine, "sdxl_vae.safetensors")
    assert caught.value.field == "vae"
    assert "SDXL VAE" in caught.value.allowed and "SD 1.x/2.x" in caught.value.allowed
    assert loaded_of(engine).pipe.vae is own  # the model keeps its VAE


def test_a_vae_whose_shapes_do_not_fit_the_model_is_refused_with_the_reason(setup, tmp_path: Path) -> None:
    from sdlocal.engine.networks.vaes import read_vae
    from sdlocal.engine.request import RequestError
    from sdlocal.engine.synthetic import build_tiny_pipeline
    from sdlocal.engine.vae import use

    engine, _root = setup
    other = build_tiny_pipeline("sd1").vae
    state_path = write_vae(other, tmp_path / "wide.safetensors")
    from safetensors.torch import load_file, save_file

    state = load_file(str(state_path))
    state["decoder.conv_in.weight"] = torch.zeros(64, 4, 3, 3)
    save_file(state, str(state_path))
    with pytest.raises(RequestError, match="do not fit this model's VAE"):
        use(loaded_of(engine), read_vae(state_path, "wide.safetensors"), engine._runtime_now())


def test_a_pickled_vae_that_holds_code_is_refused(setup, tmp_path: Path) -> None:
    import argparse

    from sdlocal.engine.networks.vaes import VaeFile
    from sdlocal.engine.request import RequestError
    from sdlocal.engine.vae import read_pickle

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": argparse.Namespace(run="anything")}}, path)  # an object, not a tensor
    with pytest.raises(RequestError, match="could run code"):
        read_pickle(VaeFile(name="evil.pt", path=path, format="ckpt", layout="ldm"))


def test_an_fp16_fix_vae_runs_in_fp16_where_the_models_own_is_upcast(tmp_path: Path) -> None:
    from sdlocal.engine.config import EngineConfig
    from sdlocal.engine.devices import resolve_runtime
    from sdlocal.engine.loader import LoadedModel, _place
    from sdlocal.engine.networks.vaes import read_vae
    from sdlocal.engine.synthetic import build_tiny_pipeline
    from sdlocal.engine.vae import use

    runtime = resolve_runtime(EngineConfig(data_dir=tmp_path, device="cpu", precision="fp16"), cpu_flags=set())
    pipe = build_tiny_pipeline("sdxl")
    pipe.vae.register_to_config(force_upcast=True)
    _place(pipe, runtime)
    assert pipe.vae.dtype == torch.float32  # SDXL's own VAE: force_upcast
    loaded = LoadedModel(entry=None, pipe=pipe, family="sdxl", load_seconds=0.0, runtime_key=())
    fix = read_vae(write_vae(pipe.vae, tmp_path / "sdxl-vae-fp16-fix.safetensors"), "sdxl-vae-fp16-fix.safetensors")
    assert fix.force_upcast is False and fix.family == "sdxl"
    use(loaded, fix, runtime)
    assert pipe.vae.dtype == torch.float16 and pipe.vae.config.force_upcast is False
    folder = read_vae(write_diffusers_vae(pipe.vae, tmp_path / "fixed", force_upcast=False), "fixed")
    assert folder.force_upcast is False
    use(loaded, None, runtime)
    assert pipe.vae.dtype == torch.float32


def test_automatic_falls_back_to_the_own_vae_with_a_warning_when_the_named_one_does_not_fit(tmp_path: Path) -> None:
    from sdlocal.engine.config import EngineConfig
    from sdlocal.engine.networks.vaes import VaeLibrary
    from sdlocal.engine.vae import choose
    from tests.engine.vae_files import SIXTEEN_CHANNELS, write_tensors

    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"")
    write_tensors(tmp_path / "model.vae.safetensors", SIXTEEN_CHANNELS)
    vae, warnings = choose(VaeLibrary(EngineConfig(data_dir=tmp_path / "data")), "Automatic", checkpoint, "sd1")
    assert vae is None and "model.vae.safetensors" in warnings[0] and "16-channel" in warnings[0]


def test_a_swapped_in_vae_gets_fast_modes_changes_and_the_requests_tiling(tmp_path: Path) -> None:
    from sdlocal.engine.config import EngineConfig
    from sdlocal.engine.devices import resolve_runtime
    from sdlocal.engine.loader import LoadedModel, _place
    from sdlocal.engine.networks.vaes import read_vae
    from sdlocal.engine.synthetic import build_tiny_pipeline
    from sdlocal.engine.vae import use

    runtime = resolve_runtime(EngineConfig(data_dir=tmp_path, device="cpu", precision="fp32"), cpu_flags=set())
    pipe = build_tiny_pipeline("sd1")
    _place(pipe, runtime)
    loaded = LoadedModel(entry=None, pipe=pipe, family="sd1", load_seconds=0.0, runtime_key=(), vae_tiling=True,
                         vae_upcast=True, fast_applied=["channels-last memory format (unet, vae)"])
    use(loaded, read_vae(write_vae(pipe.vae, tmp_path / "x.safetensors"), "x.safetensors"), runtime)
    weight = pipe.vae.decoder.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert pipe.vae.use_tiling and loaded.vae_upcast is False


def test_a_vae_cut_short_after_it_was_listed_is_refused_not_a_crash(setup, tmp_path: Path) -> None:
    from sdlocal.engine.networks.vaes import read_vae
    from sdlocal.engine.request import RequestError
    from sdlocal.engine.vae import use

    engine, _root = setup
    run(engine, "None")
    path = write_vae(loaded_of(engine).pipe.vae, tmp_path / "cut.safetensors")
    listed = read_vae(path, "cut.safetensors")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RequestError, match="truncated"):
        use(loaded_of(engine), listed, engine._runtime_now())
