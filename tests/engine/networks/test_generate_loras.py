"""``<lora:name:weight>`` in the prompt merges the LoRA file into the loaded model for that run, as A1111 does:
weight 0 is no LoRA, weight 1 changes the image, two combine, a te-only weight changes only the text encoder, a
run without tags gets the model's own weights back bit for bit, and the infotext names each LoRA with its kohya
hash while keeping the tags in the prompt."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
import torch

from sdlocal.engine.infotext import infotext_to_request_fields, parse_infotext
from sdlocal.engine.networks.lora_synthetic import write_lora
from sdlocal.engine.synthetic import build_tiny_pipeline
from tests.engine.conftest import make_engine, pixels

SD1 = "tiny-sd1-safetensors"
SDXL = "tiny-sdxl-safetensors"


@pytest.fixture(scope="module")
def shapes():
    """Tiny pipelines with the tiny models' module names and shapes, to write LoRAs for them."""
    return {family: build_tiny_pipeline(family) for family in ("sd1", "sdxl")}


@pytest.fixture(scope="module")
def lora_engine(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory, shapes):
    data = tmp_path_factory.mktemp("lora-data")
    folder = data / "models" / "Lora"
    folder.mkdir(parents=True)
    for fmt in ("lora", "locon", "loha", "lokr", "dora", "peft"):
        write_lora(shapes["sd1"], folder / f"sd1-{fmt}.safetensors", fmt=fmt, rank=4, seed=11, scale=2.0)
    write_lora(shapes["sd1"], folder / "sd1-other.safetensors", rank=4, seed=12, scale=2.0)
    write_lora(shapes["sdxl"], folder / "xl" / "sdxl-lora.safetensors", rank=4, seed=13, scale=2.0)
    write_lora(shapes["sd1"], folder / "kohya-named.safetensors", rank=4, seed=14, scale=2.0,
               metadata={"ss_output_name": "pixelart"})
    return make_engine(tiny_models_dir, data, device="cpu", precision="fp32", max_loaded_models=4)


def _run(engine, request_for, prompt: str, model: str = SD1, **values: object):
    return engine.generate(request_for(model=model, prompt=prompt, seed=99, **values))


def _weights(engine, model: str) -> dict[str, torch.Tensor]:
    entry = engine.find_model(model)
    pipe = engine._pipelines().get(entry, engine._runtime_now()).pipe
    return {f"{name}.{key}": value.clone() for name in ("text_encoder", "text_encoder_2", "unet")
            if getattr(pipe, name, None) is not None for key, value in getattr(pipe, name).state_dict().items()}


def _lora_hashes(infotext: str) -> str | None:
    return parse_infotext(infotext).get("Lora hashes")


def _kohya(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha256(data[8 + struct.unpack("<Q", data[:8])[0]:]).hexdigest()[:12]


def test_weight_zero_is_no_lora_and_weight_one_changes_the_image(lora_engine, request_for):
    plain = _run(lora_engine, request_for, "a red cube")
    zero = _run(lora_engine, request_for, "a red cube <lora:sd1-lora:0>")
    one = _run(lora_engine, request_for, "a red cube <lora:sd1-lora:1>")
    assert (pixels(zero.images[0].image) == pixels(plain.images[0].image)).all()
    assert (pixels(one.images[0].image) != pixels(plain.images[0].image)).any()
    assert _lora_hashes(zero.images[0].infotext) is None
    assert not one.warnings


@pytest.mark.parametrize("fmt", ["lora", "locon", "loha", "lokr", "dora", "peft"])
def test_every_format_changes_the_image_and_a_run_without_it_is_the_model_again(lora_engine, request_for, fmt):
    before = _run(lora_engine, request_for, "a red cube")
    weights = _weights(lora_engine, SD1)
    with_lora = _run(lora_engine, request_for, f"a red cube <lora:sd1-{fmt}:1>")
    assert not with_lora.warnings, with_lora.warnings
    assert (pixels(with_lora.images[0].image) != pixels(before.images[0].image)).any()
    after = _run(lora_engine, request_for, "a red cube")
    assert (pixels(after.images[0].image) == pixels(before.images[0].image)).all()
    assert all(torch.equal(value, weights[key]) for key, value in _weights(lora_engine, SD1).items())


def test_two_loras_combine_and_lyco_is_the_same_tag(lora_engine, request_for):
    first = _run(lora_engine, request_for, "a cube <lora:sd1-lora:1>").images[0]
    second = _run(lora_engine, request_for, "a cube <lyco:sd1-other:1>").images[0]
    both = _run(lora_engine, request_for, "a cube <lora:sd1-lora:1> <lyco:sd1-other:1>").images[0]
    assert (pixels(both.image) != pixels(first.image)).any() and (pixels(both.image) != pixels(second.image)).any()
    path = lora_engine.config.data_dir / "models" / "Lora"
    assert _lora_hashes(both.infotext) == (f"sd1-lora: {_kohya(path / 'sd1-lora.safetensors')}, "
                                           f"sd1-other: {_kohya(path / 'sd1-other.safetensors')}")


def test_a_text_encoder_only_weight_changes_only_the_text_encoder(lora_engine, request_for):
    _run(lora_engine, request_for, "a cube")
    original = _weights(lora_engine, SD1)
    _run(lora_engine, request_for, "a cube <lora:sd1-lora:1:0>")
    patched = _weights(lora_engine, SD1)
    changed = {key.split(".")[0] for key, value in patched.items() if not torch.equal(value, original[key])}
    assert changed == {"text_encoder"}
    _run(lora_engine, request_for, "a cube <lora:sd1-lora:unet=0.5:te=0>")
    changed = {key.split(".")[0] for key, value in _weights(lora_engine, SD1).items()
               if not torch.equal(value, original[key])}
    assert changed == {"unet"}


def test_fifty_changes_of_the_lora_set_leave_no_drift(lora_engine, request_for):
    before = _run(lora_engine, request_for, "a cube").images[0]
    entry = lora_engine.find_model(SD1)
    loaded = lora_engine._pipelines().get(entry, lora_engine._runtime_now())
    sets = ["<lora:sd1-lora:{w}>", "<lora:sd1-loha:{w}> <lora:sd1-lora:0.3>", "<lora:sd1-dora:{w}:0.2>",
            "<lora:sd1-lokr:{w}>", ""]
    for i in range(50):
        prompt = "a cube " + sets[i % len(sets)].format(w=round(0.1 * (i % 9) - 0.3, 1))
        lora_engine._activate_networks(loaded, request_for(model=SD1, prompt=prompt))
    after = _run(lora_engine, request_for, "a cube").images[0]
    assert (pixels(after.image) == pixels(before.image)).all()


def test_the_infotext_keeps_the_tags_so_reuse_brings_them_back(lora_engine, request_for):
    image = _run(lora_engine, request_for, "a red cube, <lora:pixelart:0.8>").images[0]
    assert image.infotext.startswith("a red cube, <lora:pixelart:0.8>\n")
    path = lora_engine.config.data_dir / "models" / "Lora" / "kohya-named.safetensors"
    assert _lora_hashes(image.infotext) == f"pixelart: {_kohya(path)}"
    assert infotext_to_request_fields(parse_infotext(image.infotext))["prompt"] == "a red cube, <lora:pixelart:0.8>"


def test_the_tags_are_not_read_by_the_text_encoder(lora_engine, request_for):
    plain = _run(lora_engine, request_for, "a red cube").images[0]
    unknown = _run(lora_engine, request_for, "a red cube<lora:sd1-lora:0>")
    assert (pixels(unknown.images[0].image) == pixels(plain.image)).all()


def test_an_unknown_name_is_a_warning_with_the_closest_names(lora_engine, request_for):
    plain = _run(lora_engine, request_for, "a red cube").images[0]
    result = _run(lora_engine, request_for, "a red cube <lora:sd1-lorra:1>")
    assert (pixels(result.images[0].image) == pixels(plain.image)).all()
    (warning,) = result.warnings
    assert "no LoRA named 'sd1-lorra'" in warning and "sd1-lora" in warning


def test_a_lora_for_another_model_is_skipped_with_a_warning(lora_engine, request_for):
    plain = _run(lora_engine, request_for, "a red cube").images[0]
    result = _run(lora_engine, request_for, "a red cube <lora:xl/sdxl-lora:1>")
    assert (pixels(result.images[0].image) == pixels(plain.image)).all()
    assert len(result.warnings) == 1 and "skipped" in result.warnings[0]


def test_an_sdxl_lora_changes_both_text_encoders_and_the_unet(lora_engine, request_for):
    _run(lora_engine, request_for, "a cube", model=SDXL)
    original = _weights(lora_engine, SDXL)
    result = _run(lora_engine, request_for, "a cube <lora:sdxl-lora:1>", model=SDXL)
    assert not result.warnings
    changed = {key.split(".")[0] for key, value in _weights(lora_engine, SDXL).items()
               if not torch.equal(value, original[key])}
    assert changed == {"text_encoder", "text_encoder_2", "unet"}


def test_a_tag_in_the_negative_prompt_is_taken_out_with_a_warning(lora_engine, request_for):
    plain = _run(lora_engine, request_for, "a red cube", negative_prompt="blurry").images[0]
    result = _run(lora_engine, request_for, "a red cube", negative_prompt="blurry<lora:sd1-lora:1>")
    assert (pixels(result.images[0].image) == pixels(plain.image)).all()
    assert any("negative prompt are not applied" in w for w in result.warnings)


def test_a_lora_whose_family_differs_from_the_model_is_skipped_before_it_is_read(tmp_path):
    from types import SimpleNamespace

    from sdlocal.engine.networks.activation import LoraActivator
    from sdlocal.engine.networks.lora import LoraFile

    xl = LoraFile(name="detail-xl", path=tmp_path / "missing.safetensors", alias="detail-xl", format="lora",
                  family="sdxl")
    library = SimpleNamespace(find=lambda name: xl, closest=lambda name: [])
    activation = LoraActivator(library).prepare(SimpleNamespace(family="sd1", pipe=object()),
                                                "a cat <lora:detail-xl:1>", "")
    assert activation.patches == [] and activation.hashes is None
    (warning,) = activation.warnings
    assert "made for SDXL and the loaded model is SD 1.x" in warning
