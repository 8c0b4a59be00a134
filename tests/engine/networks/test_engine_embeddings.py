"""``Engine.embeddings()``: the embeddings the current model can use, and why the others are skipped.

The tiny test models' text encoders are 32 wide (SDXL: 32 and 48), so embeddings of those widths are the ones they
load; before any model is loaded the default model's family (real widths) decides.
"""

from __future__ import annotations

from pathlib import Path

from sdlocal.engine.networks.embeddings import NO_MODEL
from tests.engine.conftest import make_engine
from tests.engine.networks import files


def _engine(models_dir: Path, data_dir: Path):
    return make_engine(models_dir, data_dir, device="cpu", precision="fp32", max_loaded_models=2)


def test_with_no_model_every_embedding_is_skipped(own: Path, data_dir: Path, tmp_path: Path) -> None:
    files.emb_params(own / "sd15.safetensors", files.vectors(1, 768))
    empty = tmp_path / "no-models"
    empty.mkdir()
    loaded, skipped = _engine(empty, data_dir).embeddings()
    assert loaded == {} and skipped["sd15"].reason == NO_MODEL


def test_the_loaded_models_widths_decide(own: Path, data_dir: Path, tiny_models_dir: Path) -> None:
    files.emb_params(own / "real.safetensors", files.vectors(1, 768))
    files.emb_params(own / "tiny.safetensors", files.vectors(2, 32))
    files.sdxl(own / "tinyxl.safetensors", files.vectors(1, 32), files.vectors(1, 48))
    engine = _engine(tiny_models_dir, data_dir)
    loaded, skipped = engine.embeddings()  # nothing loaded: the default model is an SD 1.x
    assert list(loaded) == ["real"] and sorted(skipped) == ["tiny", "tinyxl"]
    engine.load("tiny-sd1-diffusers")
    loaded, skipped = engine.embeddings()
    assert list(loaded) == ["tiny"] and loaded["tiny"].vectors == 2
    assert skipped["real"].reason == "made for SD 1.x (768-wide vectors); the loaded model is a model with 32-wide " \
                                     "vectors"
    engine.load("tiny-sdxl-diffusers")
    loaded, _ = engine.embeddings()
    assert list(loaded) == ["tinyxl"] and set(loaded["tinyxl"].tensors()) == {0, 1}


def test_the_list_is_kept_until_a_refresh(own: Path, data_dir: Path, tiny_models_dir: Path) -> None:
    engine = _engine(tiny_models_dir, data_dir)
    assert engine.embeddings() == ({}, {})
    files.emb_params(own / "late.safetensors", files.vectors(1, 768))
    assert engine.embeddings() == ({}, {})
    loaded, _ = engine.embeddings(refresh=True)
    assert list(loaded) == ["late"]
    (own / "late.safetensors").unlink()
    assert engine.embeddings(refresh=True) == ({}, {})
