"""The upscaler folders (sdlocal's, A1111's and ComfyUI's, extra_model_paths.yaml), A1111's upscale rule to an
exact size, and the engine's list and upscale."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from sdlocal.engine.config import EngineConfig  # noqa: E402
from sdlocal.engine.networks.folders import upscaler_dirs  # noqa: E402
from sdlocal.engine.request import RunControl  # noqa: E402
from sdlocal.engine.upscalers import UpscaleInterrupted, UpscalerSet  # noqa: E402
from tests.engine.upscalers.files import save, tiny_compact, tiny_rrdb  # noqa: E402


def test_folders_are_sdlocals_a1111s_comfyuis_and_the_yaml_ones_each_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    own = [data / "models" / "ESRGAN", data / "models" / "RealESRGAN"]
    a1111 = tmp_path / "a1111"
    comfy = tmp_path / "comfy"
    extra = tmp_path / "elsewhere" / "up"
    for folder in (*own, a1111 / "models" / "ESRGAN", a1111 / "models" / "RealESRGAN",
                   comfy / "models" / "upscale_models", extra):
        folder.mkdir(parents=True)
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(f"other:\n  base_path: {tmp_path / 'elsewhere'}\n  upscale_models: up\n", encoding="utf-8")
    config = EngineConfig(data_dir=data, models_dirs=[a1111, comfy / "models", a1111],
                          extra_model_paths=[yaml_file])
    assert upscaler_dirs(config) == [*own, a1111 / "models" / "ESRGAN", a1111 / "models" / "RealESRGAN",
                                     comfy / "models" / "upscale_models", extra]


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(height, width, 3, generator=generator) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB")


@pytest.fixture()
def upscalers(tmp_path: Path) -> UpscalerSet:
    folder = tmp_path / "models" / "ESRGAN"
    save(tiny_rrdb(upsamples=1).state_dict(), folder / "two.pth")
    save(tiny_compact(scale=4).state_dict(), folder / "four.safetensors")
    return UpscalerSet(EngineConfig(data_dir=tmp_path))


def test_builtins_resize_to_the_exact_size(upscalers: UpscalerSet) -> None:
    source = picture(20, 10)
    lanczos = upscalers.upscale(source, "Lanczos", 50, 30)
    assert lanczos.size == (50, 30)
    assert upscalers.upscale(source, "None", 50, 30).tobytes() == lanczos.tobytes()
    nearest = upscalers.upscale(source, "nearest", 40, 20)
    assert nearest.getpixel((1, 1)) == source.getpixel((0, 0))


def test_a_model_runs_again_until_it_covers_the_target_then_lanczos_gives_the_exact_size(
        upscalers: UpscalerSet) -> None:
    passes: list[tuple[int, int]] = []
    real = upscalers.run_model

    def counted(info, image, **kwargs):
        passes.append(image.size)
        return real(info, image, **kwargs)

    upscalers.run_model = counted  # type: ignore[method-assign]
    out = upscalers.upscale(picture(16, 12), "two", 100, 40)
    assert out.size == (100, 40)
    assert passes == [(16, 12), (32, 24), (64, 48)]  # 3 passes at most: 128x96 covers 100x40
    passes.clear()
    assert upscalers.upscale(picture(16, 12), "two", 600, 400).size == (600, 400)
    assert len(passes) == 3  # never a fourth pass, Lanczos does the rest
    passes.clear()
    assert upscalers.upscale(picture(16, 12), "four", 16, 12).size == (16, 12) and passes == []


def test_tiled_equals_untiled_within_one_level(upscalers: UpscalerSet) -> None:
    source = picture(70, 50, seed=3)
    for name in ("two", "four"):
        info = upscalers.find(name)
        whole = upscalers.run_model(info, source, tile=512, overlap=0)
        tiled = upscalers.run_model(info, source, tile=32, overlap=16)
        assert whole.size == tiled.size == (70 * info.scale, 50 * info.scale)
        difference = np.abs(np.asarray(whole, dtype=np.int16) - np.asarray(tiled, dtype=np.int16))
        assert difference.max() <= 1


def test_interrupt_between_tiles_stops_and_progress_counts_tiles(upscalers: UpscalerSet) -> None:
    control = RunControl()
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if done == 2:
            control.interrupt()

    with pytest.raises(UpscaleInterrupted):
        upscalers.upscale(picture(56, 56), "four", 224, 224, control=control, on_progress=progress, tile=32,
                          overlap=8)
    assert seen == [(0, 4), (1, 4), (2, 4)]
    done: list[tuple[int, int]] = []
    upscalers.upscale(picture(56, 56), "four", 224, 224, on_progress=lambda d, t: done.append((d, t)), tile=32,
                      overlap=8)
    assert done[-1] == (4, 4)


def test_the_engine_lists_builtins_and_files_and_upscales_on_its_device(upscalers: UpscalerSet) -> None:
    from sdlocal.engine.engine import Engine

    engine = Engine(EngineConfig(data_dir=upscalers.config.data_dir, device="cpu"))
    names = [e.name for e in engine.upscalers()]
    assert names == ["None", "Lanczos", "Nearest", "four", "two"]
    assert engine.upscaler_set() is engine.upscaler_set()
    assert engine.upscale(picture(8, 8), "four", 32, 32).size == (32, 32)
    save(tiny_compact().state_dict(), upscalers.config.data_dir / "models" / "ESRGAN" / "new.pth")
    assert "new" not in [e.name for e in engine.upscalers()]
    assert "new" in [e.name for e in engine.upscalers(refresh=True)]


def test_old_esrgan_keys_load_into_the_same_network_as_real_esrgan_keys(tmp_path: Path) -> None:
    from tests.engine.upscalers.files import new_to_old

    network = tiny_rrdb(blocks=2, seed=5)
    folder = tmp_path / "models" / "ESRGAN"
    save({"params_ema": network.state_dict()}, folder / "new.pth")
    save(new_to_old(network.state_dict(), 2, 2), folder / "old.pth")
    found = UpscalerSet(EngineConfig(data_dir=tmp_path))
    source = picture(12, 10, seed=1)
    new, old = (found.run_model(found.find(name), source) for name in ("new", "old"))
    pixels = torch.from_numpy(np.asarray(source, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        direct = (network(pixels)[0].clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert new.size == (48, 40) and new.tobytes() == old.tobytes() == direct.tobytes()


def test_x2plus_runs_on_odd_sizes_and_gives_twice_the_size(tmp_path: Path) -> None:
    save(tiny_rrdb(unshuffle=2).state_dict(), tmp_path / "models" / "RealESRGAN" / "RealESRGAN_x2plus.pth")
    found = UpscalerSet(EngineConfig(data_dir=tmp_path))
    info = found.find("realesrgan_x2plus")
    assert info.scale == 2
    assert found.run_model(info, picture(15, 9)).size == (30, 18)


def test_the_engines_interrupt_reaches_an_upscale_between_tiles(upscalers: UpscalerSet) -> None:
    from sdlocal.engine.engine import Engine

    engine = Engine(EngineConfig(data_dir=upscalers.config.data_dir, device="cpu"))
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        engine.interrupt()

    with pytest.raises(UpscaleInterrupted):
        engine.upscale(picture(300, 40), "four", 1200, 160, on_progress=progress)
    assert seen == [0] and not engine.busy
