"""Upscaler files: found in A1111's and ComfyUI's folders, recognised from their tensors, run in tiles."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.request import RequestError, RunControl
from sdlocal.engine.upscalers import UpscaleInterrupted, UpscalerSet
from sdlocal.engine.upscalers.detect import NotAnUpscaler, detect, shapes_of
from sdlocal.engine.upscalers.tiling import run_tiled, tile_starts
from tests.engine.upscalers.files import new_layout, old_layout, save, tiny_compact, tiny_rrdb


def picture(width: int = 24, height: int = 16, mode: str = "RGB") -> Image.Image:
    generator = torch.Generator().manual_seed(3)
    pixels = (torch.rand((height, width, len(mode)), generator=generator) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels, mode)


def library(tmp_path: Path, **config) -> UpscalerSet:
    return UpscalerSet(EngineConfig(data_dir=tmp_path, **config))


def by_name(upscalers: UpscalerSet) -> dict:
    return {info.name: info for info in upscalers.scan()}


def test_builtins_come_first_in_a1111s_order(tmp_path):
    assert [info.name for info in library(tmp_path).scan()] == ["None", "Lanczos", "Nearest"]


def test_files_are_found_in_a1111_and_comfyui_folders(tmp_path):
    own = tmp_path / "models"
    a1111 = tmp_path / "a1111"
    comfy = tmp_path / "comfy"
    save(new_layout(tiny_rrdb()), own / "ESRGAN" / "own.pth")
    save(new_layout(tiny_rrdb()), own / "RealESRGAN" / "real.pth")
    save(old_layout(tiny_rrdb()), a1111 / "models" / "ESRGAN" / "ultra.pth")
    save(tiny_compact().state_dict(), comfy / "models" / "upscale_models" / "compact.safetensors")
    found = by_name(library(tmp_path, models_dirs=[a1111, comfy]))
    assert {"own", "real", "ultra", "compact"} <= set(found)
    assert all(found[name].usable for name in ("own", "real", "ultra", "compact"))


def test_shape_comes_from_the_tensors_not_the_name(tmp_path):
    folder = tmp_path / "models" / "ESRGAN"
    save(new_layout(tiny_rrdb(upsamples=2, unshuffle=2)), folder / "4x_misnamed.pth", wrap="params_ema")
    save(old_layout(tiny_rrdb(blocks=3, upsamples=1)), folder / "8x_old.pth")
    save(tiny_compact(convs=3, scale=2).state_dict(), folder / "4x_compact.pth", wrap="params")
    found = by_name(library(tmp_path))
    assert found["4x_misnamed"].scale == 2 and "2 blocks" in found["4x_misnamed"].architecture
    assert found["8x_old"].scale == 2 and "3 blocks" in found["8x_old"].architecture
    assert found["4x_compact"].scale == 2 and "SRVGGNetCompact, 3 convs" in found["4x_compact"].architecture


def test_both_rrdb_layouts_load_into_the_same_network():
    model = tiny_rrdb()
    image = torch.rand(1, 3, 12, 12)
    with torch.inference_mode():
        expected = model(image)
    for state in (new_layout(model), old_layout(model)):
        found = detect(shapes_of(state))
        network = found.build().eval()
        network.load_state_dict(found.convert(state), strict=True)
        with torch.inference_mode():
            assert torch.equal(network(image), expected)


def test_unusable_files_are_listed_with_the_reason(tmp_path):
    folder = tmp_path / "models" / "ESRGAN"
    folder.mkdir(parents=True)

    class Payload:
        def __reduce__(self):
            return (print, ("this would run",))

    (folder / "code.pth").write_bytes(pickle.dumps({"weight": Payload()}))
    torch.save({"layers.0.residual_group.blocks.0.attn.relative_position_bias_table": torch.zeros(3)},
               str(folder / "swin.pth"))
    (folder / "broken.safetensors").write_bytes(b"not a file")
    (folder / "notes.txt").write_text("ignored: not an upscaler suffix")
    found = by_name(library(tmp_path))
    assert not found["code"].usable and "code" in found["code"].reason
    assert not found["swin"].usable and "SwinIR" in found["swin"].reason
    assert not found["broken"].usable and found["broken"].reason
    assert "notes" not in found
    with pytest.raises(RequestError, match="SwinIR") as caught:
        library(tmp_path).find("swin", "hr_upscaler")
    assert caught.value.field == "hr_upscaler"


def test_an_unknown_name_lists_the_choices(tmp_path):
    with pytest.raises(RequestError, match="Lanczos") as caught:
        library(tmp_path).find("Lanczoz")
    assert caught.value.field == "upscaler_1" and "did you mean Lanczos" in str(caught.value)


def test_tiles_cover_with_the_overlap():
    assert tile_starts(100, 200, 16) == [0]
    starts = tile_starts(500, 192, 32)
    assert starts[0] == 0 and starts[-1] == 500 - 192
    assert all(b - a <= 192 - 32 for a, b in zip(starts, starts[1:], strict=False))


def test_tiled_equals_untiled_within_one_level():
    model = tiny_rrdb(blocks=3)
    image = torch.rand(1, 3, 80, 72)
    with torch.inference_mode():
        whole = model(image).clamp(0, 1)
    tiles = []
    tiled = run_tiled(model, image, 4, 40, 16, on_progress=lambda done, total: tiles.append((done, total)))
    assert len(tiles) > 1 and tiles[-1][0] == tiles[-1][1]
    assert (tiled.clamp(0, 1) - whole).abs().max().item() <= 1 / 255


def test_upscale_follows_a1111s_rule(tmp_path):
    save(new_layout(tiny_rrdb(upsamples=1)), tmp_path / "models" / "ESRGAN" / "2x.pth")
    upscalers = library(tmp_path)
    source = picture()
    runs: list[int] = []
    original = upscalers._run_model

    def counting(*args, **kwargs):
        runs.append(1)
        return original(*args, **kwargs)

    upscalers._run_model = counting
    assert upscalers.upscale(source, "2x", 48, 32).size == (48, 32) and len(runs) == 1
    assert upscalers.upscale(source, "2x", 80, 40).size == (80, 40) and len(runs) == 3  # 2x twice, then Lanczos
    assert upscalers.upscale(source, "2x", 12, 8).size == (12, 8) and len(runs) == 3  # smaller: only a resize
    with_alpha = upscalers.upscale(picture(mode="RGBA"), "2x", 48, 32)
    assert with_alpha.mode == "RGBA" and with_alpha.size == (48, 32)


def test_builtins_resize(tmp_path):
    upscalers = library(tmp_path)
    source = picture()
    assert upscalers.upscale(source, "Lanczos", 48, 32) == source.resize((48, 32), Image.Resampling.LANCZOS)
    assert upscalers.upscale(source, "None", 48, 32) == source.resize((48, 32), Image.Resampling.LANCZOS)
    assert upscalers.upscale(source, "nearest", 48, 32) == source.resize((48, 32), Image.Resampling.NEAREST)


def test_interrupt_stops_between_tiles(tmp_path):
    save(new_layout(tiny_rrdb()), tmp_path / "models" / "ESRGAN" / "4x.pth")
    control = RunControl()
    control.interrupt()
    with pytest.raises(UpscaleInterrupted):
        library(tmp_path).upscale(picture(), "4x", 96, 64, control=control)


def test_a_changed_file_is_read_again(tmp_path):
    path = save(new_layout(tiny_rrdb(upsamples=2)), tmp_path / "models" / "ESRGAN" / "model.pth")
    upscalers = library(tmp_path)
    assert by_name(upscalers)["model"].scale == 4
    save(new_layout(tiny_rrdb(upsamples=1, features=12)), path)
    assert by_name(upscalers)["model"].scale == 2


def test_the_engine_lists_and_runs_upscalers(tmp_path):
    from sdlocal.engine import Engine

    save(new_layout(tiny_rrdb()), tmp_path / "models" / "ESRGAN" / "4x.pth")
    engine = Engine(EngineConfig(data_dir=tmp_path, device="cpu"))
    assert [info.name for info in engine.upscalers()] == ["None", "Lanczos", "Nearest", "4x"]
    assert engine.upscale(picture(), "4x", 96, 64).size == (96, 64)


def test_not_an_upscaler_is_explained():
    with pytest.raises(NotAnUpscaler, match="Stable Diffusion checkpoint"):
        detect({"model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3]})
