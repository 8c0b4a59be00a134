"""A random-weight file at SD 1.5's real shapes loads through the bundled config offline and generates."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine.conftest import make_engine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def realsize_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdlocal.engine.synthetic import build_realsize_sd15_file

    folder = tmp_path_factory.mktemp("realsize")
    build_realsize_sd15_file(folder / "sd15-random.safetensors")
    return folder


def test_realsize_file_has_sd15_shapes(realsize_dir: Path) -> None:
    from safetensors import safe_open

    path = realsize_dir / "sd15-random.safetensors"
    assert 1.9e9 < path.stat().st_size < 2.3e9
    with safe_open(str(path), framework="pt") as fh:
        key = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
        assert fh.get_slice(key).get_shape() == [320, 768]
        assert fh.get_slice("model.diffusion_model.input_blocks.0.0.weight").get_shape() == [320, 4, 3, 3]
    assert not (realsize_dir / "sd15-random.config").exists()  # it must load through the bundled sd1 config


def test_realsize_loads_offline_and_generates(no_network, realsize_dir: Path, tmp_path: Path, request_for) -> None:
    engine = make_engine(realsize_dir, tmp_path, device="cpu")
    entry = engine.find_model("sd15-random")
    assert (entry.family, entry.format, entry.supported, entry.inpainting) == ("sd1", "safetensors", True, False)
    result = engine.generate(request_for(model="sd15-random", steps=2, width=64, height=64))
    assert result.images[0].image.size == (64, 64)
    assert result.timings["load"] > 0
    assert no_network.attempts == []
