"""Upscaler files are recognised from their tensors' names and shapes, in both ESRGAN key styles, never from
their names; files that are not upscalers (or need code to open) are listed with the reason."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from sdlocal.engine.config import EngineConfig  # noqa: E402
from sdlocal.engine.upscalers import UpscalerSet  # noqa: E402
from sdlocal.engine.upscalers.detection import NotAnUpscaler, detect, read_shapes  # noqa: E402
from tests.engine.upscalers.files import new_to_old, save, tiny_compact, tiny_rrdb  # noqa: E402


def shapes(state):
    return {k: list(v.shape) for k, v in state.items()}


def test_real_esrgan_keys_give_blocks_features_growth_and_scale() -> None:
    found = detect(shapes(tiny_rrdb(blocks=3, features=8, growth=4).state_dict()))
    assert found.kind == "rrdbnet" and found.mapping is None
    c = found.config
    assert (c.blocks, c.features, c.growth, c.scale, c.unshuffle) == (3, 8, 4, 4, 1)
    assert found.label == "ESRGAN (RRDBNet, 3 blocks, 8 features)"


def test_old_esrgan_keys_give_the_scale_from_the_number_of_upsample_convs() -> None:
    for upsamples, scale in ((1, 2), (2, 4), (3, 8)):
        state = new_to_old(tiny_rrdb(blocks=2, upsamples=upsamples).state_dict(), 2, upsamples)
        assert "model.1.sub.0.RDB1.conv1.0.weight" in state
        found = detect(shapes(state))
        assert found.kind == "rrdbnet" and found.mapping is not None
        assert (found.config.blocks, found.scale) == (2, scale)


def test_x2plus_folds_pixels_into_12_input_channels_and_is_2x() -> None:
    found = detect(shapes(tiny_rrdb(unshuffle=2).state_dict()))
    assert found.config.unshuffle == 2 and found.config.in_channels == 3 and found.scale == 2
    assert detect(shapes(tiny_rrdb(unshuffle=4).state_dict())).scale == 1


def test_the_compact_model_gives_convs_features_and_scale() -> None:
    found = detect(shapes(tiny_compact(convs=3, features=8, scale=2).state_dict()))
    assert found.kind == "srvgg"
    assert (found.config.convs, found.config.features, found.scale) == (3, 8, 2)


def test_other_architectures_and_other_files_say_what_they_are() -> None:
    with pytest.raises(NotAnUpscaler, match="SwinIR"):
        detect({"layers.0.residual_group.blocks.0.attn.relative_position_bias_table": [225, 6]})
    with pytest.raises(NotAnUpscaler, match="SPAN is not supported"):
        detect({"block_1.c1_r.sk.weight": [48, 48, 1, 1]})
    with pytest.raises(NotAnUpscaler, match="Stable Diffusion checkpoint"):
        detect({"model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3]})
    with pytest.raises(NotAnUpscaler, match="not an upscaler architecture"):
        detect({"foo.weight": [3, 3]})


def test_params_ema_is_unwrapped_and_safetensors_reads_only_the_header(tmp_path: Path) -> None:
    state = tiny_rrdb().state_dict()
    pth = save({"params_ema": state, "params": state}, tmp_path / "a.pth")
    st = save(state, tmp_path / "b.safetensors")
    assert read_shapes(pth) == read_shapes(st) == shapes(state)


def library(data_dir: Path) -> UpscalerSet:
    return UpscalerSet(EngineConfig(data_dir=data_dir))


def test_the_list_has_builtins_then_files_with_the_scale_from_the_shapes(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "ESRGAN"
    save(tiny_rrdb(upsamples=1).state_dict(), folder / "4x_foo.pth")  # named 4x, really 2x
    save(new_to_old(tiny_rrdb().state_dict(), 2, 2), tmp_path / "models" / "RealESRGAN" / "4x-UltraSharp.pth")
    save(tiny_compact().state_dict(), folder / "realesr-general-x4v3.safetensors")
    entries = library(tmp_path).scan()
    assert [e.name for e in entries[:3]] == ["None", "Lanczos", "Nearest"]
    by_name = {e.name: e for e in entries}
    assert by_name["4x_foo"].scale == 2 and by_name["4x_foo"].usable
    assert by_name["4x-UltraSharp"].scale == 4 and by_name["4x-UltraSharp"].architecture.startswith("ESRGAN")
    assert by_name["realesr-general-x4v3"].architecture.startswith("Real-ESRGAN compact")


class NotWeights:
    pass


def test_a_pickle_that_needs_code_and_unsupported_suffixes_are_listed_with_the_reason(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "ESRGAN"
    folder.mkdir(parents=True)
    torch.save({"x": NotWeights()}, folder / "evil.pth", pickle_module=pickle)
    (folder / "model.onnx").write_bytes(b"onnx")
    by_name = {e.name: e for e in library(tmp_path).scan()}
    assert not by_name["evil"].usable and "was not opened" in by_name["evil"].reason
    assert "NotWeights" in by_name["evil"].reason
    assert not by_name["model"].usable and ".onnx files are not supported" in by_name["model"].reason


def test_find_is_case_blind_and_refuses_unknown_and_unusable_names_naming_the_field(tmp_path: Path) -> None:
    from sdlocal.engine.request import RequestError

    folder = tmp_path / "models" / "ESRGAN"
    save(tiny_rrdb().state_dict(), folder / "Good.pth")
    (folder / "bad.pth").write_bytes(b"")
    found = library(tmp_path)
    assert found.find("good").name == "Good" and found.find("lanczos").name == "Lanczos"
    with pytest.raises(RequestError, match="hr_upscaler.*the upscalers are: None, Lanczos, Nearest, Good"):
        found.find("missing", "hr_upscaler")
    with pytest.raises(RequestError, match="upscaler_2.*cannot be used.*empty"):
        found.find("bad", "upscaler_2")
