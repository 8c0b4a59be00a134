"""Textual-inversion embedding files, as A1111 reads them: the trigger is the file name, and what the file is
(which model it fits, how many vectors it takes) comes from its tensors, never from its name.

A file that is not a usable embedding is still listed, with a reason that says what is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.networks.embeddings import Embedding, EmbeddingLibrary, read_embedding
from sdlocal.engine.request import EngineError
from tests.engine.networks import files


def scan_one(path: Path) -> Embedding:
    return read_embedding(path, path.stem)


# ---------------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize("suffix", [".pt", ".bin"])
def test_an_a1111_file_is_read_from_string_to_param_with_its_training_notes(own: Path, suffix: str) -> None:
    tensor = files.vectors(2, 768)
    path = files.a1111_pt(own / f"EasyNegative{suffix}", tensor, step=1500, sd_checkpoint="81761151",
                          sd_checkpoint_name="v1-5-pruned-emaonly")
    found = scan_one(path)
    assert (found.name, found.widths, found.family, found.vectors, found.shape) == ("EasyNegative", (768,), "sd1",
                                                                                    2, 768)
    assert (found.step, found.sd_checkpoint, found.sd_checkpoint_name) == (1500, "81761151", "v1-5-pruned-emaonly")
    assert found.reason == "" and found.usable
    loaded = found.tensors()
    assert list(loaded) == [0] and loaded[0].dtype == torch.float32 and torch.equal(loaded[0], tensor)


def test_a_one_dimensional_tensor_is_one_vector(own: Path) -> None:
    found = scan_one(files.a1111_pt(own / "one.pt", torch.ones(768)))
    assert (found.vectors, found.widths) == (1, (768,)) and found.tensors()[0].shape == (1, 768)


def test_a1111_notes_of_the_wrong_type_are_left_out(own: Path) -> None:
    found = scan_one(files.a1111_pt(own / "odd.pt", files.vectors(1, 768), step="many", sd_checkpoint=None))
    assert found.usable and (found.step, found.sd_checkpoint, found.sd_checkpoint_name) == (None, None, None)


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".safetensors"])
@pytest.mark.parametrize("shape", [(1024,), (3, 1024)])
def test_a_diffusers_single_tensor_file_is_an_embedding(own: Path, suffix: str, shape: tuple[int, ...]) -> None:
    tensor = torch.randn(*shape)
    found = scan_one(files.single_tensor(own / f"cat-toy{suffix}", tensor))
    assert (found.name, found.family, found.widths, found.vectors) == ("cat-toy", "sd2", (1024,), 1 if
                                                                      len(shape) == 1 else 3)
    assert torch.equal(found.tensors()[0], tensor.reshape(-1, 1024))


def test_a_safetensors_with_emb_params(own: Path) -> None:
    tensor = files.vectors(4, 768, seed=3)
    found = scan_one(files.emb_params(own / "style.safetensors", tensor))
    assert (found.family, found.vectors, found.shape, found.step) == ("sd1", 4, 768, None)
    assert found._tensors is None  # read when used, not at scan time
    assert torch.equal(found.tensors()[0], tensor) and found.tensors() is found.tensors()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_an_sdxl_embedding_has_a_tensor_per_text_encoder(own: Path, suffix: str) -> None:
    clip_l, clip_g = files.vectors(2, 768, seed=1), files.vectors(2, 1280, seed=2)
    found = scan_one(files.sdxl(own / f"negativeXL{suffix}", clip_l, clip_g))
    assert (found.family, found.widths, found.shape, found.vectors) == ("sdxl", (768, 1280), 2048, 2)
    loaded = found.tensors()
    assert torch.equal(loaded[0], clip_l) and torch.equal(loaded[1], clip_g)


def test_half_precision_files_give_float32_tensors(own: Path) -> None:
    found = scan_one(files.emb_params(own / "half.safetensors", files.vectors(1, 768).half()))
    assert found.tensors()[0].dtype == torch.float32


@pytest.mark.parametrize(("widths", "family"), [((768,), "sd1"), ((1024,), "sd2"), ((768, 1280), "sdxl"),
                                                 ((32,), None), ((32, 48), None), ((512,), None)])
def test_the_family_comes_from_the_widths(own: Path, widths: tuple[int, ...], family: str | None) -> None:
    path = own / "x.safetensors"
    if len(widths) == 2:
        files.sdxl(path, files.vectors(1, widths[0]), files.vectors(1, widths[1]))
    else:
        files.emb_params(path, files.vectors(1, widths[0]))
    found = scan_one(path)
    assert (found.widths, found.family, found.usable) == (widths, family, True)


def test_the_name_is_never_read_for_the_family(own: Path) -> None:
    found = scan_one(files.emb_params(own / "sdxl_negative_XL.safetensors", files.vectors(1, 768)))
    assert found.family == "sd1"


# ---------------------------------------------------------------------------------------------- unsupported
def _unsupported(path: Path) -> Embedding:
    found = scan_one(path)
    assert (found.family, found.widths, found.usable, found.vectors, found.shape) == (None, (), False, 0, 0)
    assert found.name == path.stem
    return found


@pytest.mark.parametrize(("make", "words"), [
    (lambda d: files.garbage(d / "junk.safetensors"), "not a safetensors file"),
    (lambda d: files.garbage(d / "junk.pt"), "cannot be read as a PyTorch file"),
    (lambda d: files.truncated_safetensors(d / "cut.safetensors"), "truncated"),
    (lambda d: files.header_only(d / "notjson.safetensors", b"{oops"), "not JSON"),
    (lambda d: files.lora(d / "detail-tweaker.safetensors"), "is a LoRA, not an embedding: move it to models/Lora"),
    (lambda d: files.checkpoint(d / "model.safetensors"), "move it to models/Stable-diffusion"),
    (lambda d: files.sdxl(d / "uneven.safetensors", files.vectors(1, 768), files.vectors(2, 1280)),
     "different vector counts"),
    (lambda d: files.single_tensor(d / "ints.safetensors", torch.ones(1, 768, dtype=torch.int32)), "not floats"),
    (lambda d: files.single_tensor(d / "ints.pt", torch.ones(1, 768, dtype=torch.int64)), "not floats"),
    (lambda d: files.single_tensor(d / "cube.safetensors", torch.ones(2, 2, 768)), "not [vectors, width]"),
    (lambda d: files.emb_params(d / "long.safetensors", torch.ones(76, 768)), "at most 75 fit in a prompt chunk"),
    (lambda d: files._save(d / "list.pt", [1, 2]), "not a dict of tensors"),  # type: ignore[arg-type]
    (lambda d: files._save(d / "notes.pt", {"a": 1, "b": "x"}), "not a textual-inversion embedding"),
])
def test_a_file_that_is_no_usable_embedding_is_listed_with_the_reason(own: Path, make, words: str) -> None:
    assert words in _unsupported(make(own)).reason


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".safetensors"])
def test_an_empty_file_is_unsupported(own: Path, suffix: str) -> None:
    (own / f"empty{suffix}").write_bytes(b"")
    assert "empty" in _unsupported(own / f"empty{suffix}").reason


def test_a_broken_link_is_unsupported(own: Path) -> None:
    (own / "gone.pt").symlink_to(own / "missing.pt")
    reason = _unsupported(own / "gone.pt").reason
    assert "cannot be read (FileNotFoundError" in reason and "link" in reason


def test_a_huge_pickle_is_refused_unread(own: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sdlocal.engine.networks import formats

    monkeypatch.setattr(formats, "MAX_PICKLE_BYTES", 1000)
    assert "too large for an embedding" in _unsupported(files.a1111_pt(own / "big.pt", files.vectors(4, 768))).reason


def test_a_pickle_that_would_run_code_is_refused_without_running_it(own: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    found = _unsupported(files.malicious_pt(own / "trojan.pt", marker))
    assert "names posix.system" in found.reason and "use a .safetensors version" in found.reason
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- tensors, hash
def test_the_shorthash_is_the_first_12_hex_of_the_file_sha256_computed_once(own: Path) -> None:
    path = files.emb_params(own / "hashed.safetensors", files.vectors(1, 768))
    found = scan_one(path)
    first = found.shorthash
    assert first == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    files.emb_params(path, files.vectors(1, 768, seed=9))
    assert found.shorthash == first  # not read again
    assert scan_one(path).shorthash == hashlib.sha256(path.read_bytes()).hexdigest()[:12] != first


def test_a_hand_built_embedding_uses_its_tensors(tmp_path: Path) -> None:
    tensor = torch.ones(1, 32)
    built = Embedding(name="x", path=tmp_path / "none.pt", widths=(32,), vectors=1, shape=32, _tensors={0: tensor})
    assert built.tensors()[0] is tensor
    assert len(built.shorthash) == 12 and built.shorthash == Embedding("x", tmp_path, _tensors={0: tensor}).shorthash


def test_a_file_that_changed_since_the_scan_is_a_clear_error(own: Path) -> None:
    path = files.emb_params(own / "moving.safetensors", files.vectors(1, 768))
    found = scan_one(path)
    files.emb_params(path, files.vectors(1, 1024))
    with pytest.raises(EngineError, match="changed since it was listed.*Refresh"):
        found.tensors()
    path.unlink()
    with pytest.raises(EngineError, match="cannot be read now"):
        found.tensors()


def test_scanning_safetensors_never_imports_torch(own: Path, data_dir: Path) -> None:
    files.emb_params(own / "a.safetensors", files.vectors(2, 768))
    files.sdxl(own / "sub" / "b.safetensors", files.vectors(1, 768), files.vectors(1, 1280))
    files.garbage(own / "c.safetensors")
    code = ("import sys; from pathlib import Path; from sdlocal.engine.config import EngineConfig; "
            "from sdlocal.engine.networks.embeddings import EmbeddingLibrary; "
            f"lib = EmbeddingLibrary(EngineConfig(data_dir=Path({str(data_dir)!r}))); "
            "found = lib.scan(); loaded, skipped = lib.for_model((768,)); "
            "print(len(found), sorted(loaded), sorted(skipped), 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "['a']", "['b',", "'c']", "False"]


def test_discovery_never_raises_on_a_folder_of_bad_files(own: Path, config: EngineConfig, tmp_path: Path) -> None:
    files.garbage(own / "a.pt")
    files.truncated_safetensors(own / "b.safetensors")
    (own / "c.bin").write_bytes(b"")
    (own / "d.pt").symlink_to(own / "nowhere")
    files.malicious_pt(own / "e.pt", tmp_path / "ran")
    files.emb_params(own / "good.safetensors", files.vectors(1, 768))
    found = {e.name: e for e in EmbeddingLibrary(config).scan()}
    assert sorted(found) == ["a", "b", "c", "d", "e", "good"]
    assert [name for name, e in found.items() if e.usable] == ["good"]
    assert all(e.reason for name, e in found.items() if name != "good")


def test_a_skipped_embedding_written_in_the_prompt_is_named_in_a_warning(tmp_path: Path) -> None:
    from sdlocal.engine.networks.embeddings import skipped_in_prompt

    other = Embedding(name="EasyNegative", path=tmp_path / "EasyNegative.pt", widths=(768,), family="sd1",
                      vectors=8, shape=768, reason="made for SD 1.x (768-wide vectors); the loaded model is SDXL")
    broken = Embedding(name="broken", path=tmp_path / "broken.pt", reason="not an embedding")
    skipped = {"EasyNegative": other, "broken": broken}

    warnings = skipped_in_prompt(["a cat", "(easynegative:1.2), worst quality"], {}, skipped)
    assert len(warnings) == 1 and "'EasyNegative'" in warnings[0] and "made for SD 1.x" in warnings[0]
    assert skipped_in_prompt(["EasyNegativeV2, a cat", "brokenness"], {}, skipped) == []  # whole words only
    once = skipped_in_prompt(["broken BREAK broken", "broken"], {}, skipped)
    assert len(once) == 1 and "not an embedding" in once[0]  # one warning per name
    assert skipped_in_prompt(["EasyNegative"], {"EasyNegative": other}, skipped) == []  # one of that name is used
