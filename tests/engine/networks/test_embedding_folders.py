"""Where embeddings are found (sdlocal's own folder, A1111/Forge and ComfyUI installs, extra_model_paths.yaml),
which file a trigger name means, what a refresh re-reads, and which embeddings a model can use.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.networks import embeddings as embeddings_module
from sdlocal.engine.networks.embeddings import NO_MODEL, EmbeddingLibrary
from tests.engine.networks import files


def names(library: EmbeddingLibrary) -> list[str]:
    return [e.name for e in library.scan()]


def small(path: Path, width: int = 768) -> Path:
    return files.emb_params(path, files.vectors(1, width))


# ---------------------------------------------------------------------------------------------- folders
def test_the_own_folder_and_its_subfolders(own: Path, config: EngineConfig) -> None:
    small(own / "a.safetensors")
    small(own / "negative" / "deep" / "b.safetensors")
    (own / "notes.txt").write_text("not an embedding")
    small(own / ".hidden" / "c.safetensors")
    found = {e.name: e for e in EmbeddingLibrary(config).scan()}
    assert sorted(found) == ["a", "b"]  # the trigger is the file name, whatever the subfolder
    assert found["b"].path == own / "negative" / "deep" / "b.safetensors"


def _a1111(root: Path) -> Path:
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    small(root / "embeddings" / "a1111.safetensors")
    return root


def _comfy(root: Path) -> Path:
    (root / "models" / "checkpoints").mkdir(parents=True)
    small(root / "models" / "embeddings" / "comfy.safetensors")
    return root


@pytest.mark.parametrize(("make", "given", "expected"), [
    (_a1111, lambda root: root, "a1111"),  # the install folder
    (_a1111, lambda root: root / "models", "a1111"),  # its models folder: embeddings are beside it
    (_comfy, lambda root: root, "comfy"),
    (_comfy, lambda root: root / "models", "comfy"),
])
def test_a_models_dir_root_given_as_the_install_or_its_models_folder(data_dir: Path, tmp_path: Path, make, given,
                                                                     expected: str) -> None:
    root = make(tmp_path / "install")
    library = EmbeddingLibrary(EngineConfig(data_dir=data_dir, models_dirs=[given(root)]))
    assert names(library) == [expected]


def test_extra_model_paths_yaml_embeddings_sections(data_dir: Path, tmp_path: Path) -> None:
    small(tmp_path / "comfy" / "models" / "embeddings" / "one.safetensors")
    small(tmp_path / "comfy" / "more" / "two.safetensors")
    small(tmp_path / "elsewhere" / "three.safetensors")
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(f"comfyui:\n  base_path: comfy\n  checkpoints: models/checkpoints\n"
                         f"  embeddings: |\n    models/embeddings\n    more\n"
                         f"other:\n  base_path: {tmp_path}\n  embeddings:\n    - elsewhere\n")
    library = EmbeddingLibrary(EngineConfig(data_dir=data_dir, extra_model_paths=[yaml_file]))
    assert names(library) == ["one", "two", "three"]


def test_each_folder_is_looked_in_once(own: Path, data_dir: Path, tmp_path: Path) -> None:
    small(own / "only.safetensors")
    (tmp_path / "link").symlink_to(data_dir)  # the data dir again, as an A1111-style root through a link
    (own / "loop").symlink_to(own)  # a folder inside itself
    library = EmbeddingLibrary(EngineConfig(data_dir=data_dir, models_dirs=[data_dir, tmp_path / "link"]))
    assert names(library) == ["only"]
    assert len(library.folders()) == 1


def test_a_folder_that_cannot_be_listed_is_a_listed_entry(own: Path, config: EngineConfig,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    small(own / "fine.safetensors")
    small(own / "locked" / "hidden.safetensors")
    files.lock_folder(monkeypatch, "locked")
    found = EmbeddingLibrary(config).scan()
    assert [e.name for e in found if e.usable] == ["fine"]
    locked = next(e for e in found if not e.usable)
    assert locked.path == own / "locked" and "cannot be listed (PermissionError" in locked.reason


# ---------------------------------------------------------------------------------------------- names
def test_a_name_clash_keeps_the_first_found(own: Path, data_dir: Path, tmp_path: Path) -> None:
    first = small(own / "EasyNegative.safetensors")
    root = _a1111(tmp_path / "a1111")
    second = small(root / "embeddings" / "easynegative.safetensors")
    library = EmbeddingLibrary(EngineConfig(data_dir=data_dir, models_dirs=[root]))
    found = {e.path: e for e in library.scan()}
    assert found[first].reason == "" and found[second].reason == f"another embedding has this name: {first}"
    loaded, skipped = library.for_model((768,))
    assert loaded["EasyNegative"].path == first and skipped["easynegative"].path == second
    assert "a1111" in loaded


def test_skipped_entries_with_one_name_are_all_listed(own: Path, config: EngineConfig) -> None:
    files.garbage(own / "x.pt")
    files.garbage(own / "sub" / "x.safetensors")
    _, skipped = EmbeddingLibrary(config).for_model((768,))
    assert sorted(skipped) == ["x", "x (2)"]


# ---------------------------------------------------------------------------------------------- refresh
def test_a_scan_reads_only_new_and_changed_files(own: Path, config: EngineConfig,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    small(own / "kept.safetensors")
    changed = small(own / "changed.safetensors")
    gone = small(own / "gone.safetensors")
    library = EmbeddingLibrary(config)
    assert sorted(names(library)) == ["changed", "gone", "kept"]
    reads: list[str] = []
    real = embeddings_module.read_info
    monkeypatch.setattr(embeddings_module, "read_info", lambda path: reads.append(path.name) or real(path))
    gone.unlink()
    files.sdxl(changed, files.vectors(1, 768), files.vectors(1, 1280))
    small(own / "new.safetensors")
    found = {e.name: e for e in library.scan()}
    assert sorted(found) == ["changed", "kept", "new"] and found["changed"].family == "sdxl"
    assert sorted(reads) == ["changed.safetensors", "new.safetensors"]
    assert library.entries() == list(found.values())


# ---------------------------------------------------------------------------------------------- for a model
def test_for_model_loads_those_that_fit_and_says_why_the_others_do_not(own: Path, config: EngineConfig) -> None:
    small(own / "sd15.safetensors")
    files.sdxl(own / "xl.safetensors", files.vectors(1, 768), files.vectors(1, 1280))
    small(own / "tiny.safetensors", width=32)
    files.lora(own / "lora.safetensors")
    library = EmbeddingLibrary(config)
    loaded, skipped = library.for_model((768, 1280))
    assert list(loaded) == ["xl"] and loaded["xl"].reason == ""
    assert skipped["sd15"].reason == ("made for SD 1.x (768-wide vectors); the loaded model is SDXL (768- and "
                                      "1280-wide vectors)")
    assert skipped["tiny"].reason == ("made for a model with 32-wide vectors; the loaded model is SDXL (768- and "
                                      "1280-wide vectors)")
    assert "is a LoRA" in skipped["lora"].reason
    loaded, skipped = library.for_model((32,))
    assert list(loaded) == ["tiny"]
    assert skipped["sd15"].reason.endswith("the loaded model is a model with 32-wide vectors")
    assert [e.name for e in library.scan() if e.usable] == ["sd15", "tiny", "xl"]  # reasons went on copies


def test_with_no_model_every_embedding_is_skipped(own: Path, config: EngineConfig) -> None:
    small(own / "sd15.safetensors")
    loaded, skipped = EmbeddingLibrary(config).for_model(())
    assert loaded == {} and skipped["sd15"].reason == NO_MODEL
