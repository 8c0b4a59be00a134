"""Where LoRAs are found (sdlocal's own ``models/Lora``, A1111/Forge ``Lora`` and ``LyCORIS``, ComfyUI ``loras``,
``extra_model_paths.yaml``), what each is named, which file a name means, what a refresh re-reads, previews, and
the kohya hash that A1111 and civitai know a LoRA by.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.engine import Engine
from sdlocal.engine.networks import loras as loras_module
from sdlocal.engine.networks.lora import LoraFile
from sdlocal.engine.networks.loras import LoraLibrary
from tests.engine.networks import files
from tests.engine.networks import lora_files as lf


@pytest.fixture
def lora_dir(data_dir: Path) -> Path:
    """``<data dir>/models/Lora``."""
    folder = data_dir / "models" / "Lora"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def library(config: EngineConfig, lora_dir: Path) -> LoraLibrary:
    return LoraLibrary(config)


def names(library: LoraLibrary) -> list[str]:
    return [entry.name for entry in library.scan()]


def by_name(library: LoraLibrary) -> dict[str, LoraFile]:
    return {entry.name: entry for entry in library.scan()}


# ---------------------------------------------------------------------------------------------- folders
def test_the_name_is_the_path_below_the_folder_without_the_suffix(lora_dir: Path, library: LoraLibrary) -> None:
    lf.small(lora_dir / "detail.safetensors")
    lf.small(lora_dir / "styles" / "pixel-art.safetensors")
    lf.small(lora_dir / "styles" / "deep" / "v1.5.pt")
    lf.small(lora_dir / ".hidden" / "secret.safetensors")
    (lora_dir / "notes.txt").write_text("not a LoRA")
    (lora_dir / "detail.png").write_bytes(b"png")
    found = by_name(library)
    assert sorted(found) == ["detail", "styles/deep/v1.5", "styles/pixel-art"]
    assert found["styles/pixel-art"].path == lora_dir / "styles" / "pixel-art.safetensors"
    assert found["styles/pixel-art"].alias == "pixel-art" and all(entry.usable for entry in found.values())


def _a1111(root: Path) -> Path:
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    lf.small(root / "models" / "Lora" / "a1111.safetensors")
    lf.small(root / "models" / "LyCORIS" / "lycoris.safetensors")
    return root


def _comfy(root: Path) -> Path:
    (root / "models" / "checkpoints").mkdir(parents=True)
    lf.small(root / "models" / "loras" / "comfy.safetensors")
    return root


@pytest.mark.parametrize(("make", "given", "expected"), [
    (_a1111, lambda root: root, ["a1111", "lycoris"]),  # the install folder
    (_a1111, lambda root: root / "models", ["a1111", "lycoris"]),  # its models folder
    (_comfy, lambda root: root, ["comfy"]),
    (_comfy, lambda root: root / "models", ["comfy"]),
])
def test_a_models_dir_root_given_as_the_install_or_its_models_folder(data_dir: Path, tmp_path: Path, make, given,
                                                                     expected: list[str]) -> None:
    root = make(tmp_path / "install")
    assert names(LoraLibrary(EngineConfig(data_dir=data_dir, models_dirs=[given(root)]))) == expected


def test_the_own_folder_comes_first_then_the_roots_then_extra_model_paths(lora_dir: Path, data_dir: Path,
                                                                          tmp_path: Path) -> None:
    lf.small(lora_dir / "own.safetensors")
    root = _comfy(tmp_path / "comfy")
    lf.small(tmp_path / "shared" / "one.safetensors")
    lf.small(tmp_path / "shared2" / "two.safetensors")
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(f"mine:\n  base_path: {tmp_path}\n  loras: |\n    shared\n    shared2\n")
    library = LoraLibrary(EngineConfig(data_dir=data_dir, models_dirs=[root], extra_model_paths=[yaml_file]))
    assert names(library) == ["own", "comfy", "one", "two"]


def test_each_folder_and_file_is_looked_at_once(lora_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    lf.small(lora_dir / "only.safetensors")
    (lora_dir / "loop").symlink_to(lora_dir)  # a folder inside itself
    (tmp_path / "root" / "models").mkdir(parents=True)
    (tmp_path / "root" / "models" / "Lora").symlink_to(lora_dir)  # the same folder as an A1111 root's
    library = LoraLibrary(EngineConfig(data_dir=data_dir, models_dirs=[tmp_path / "root"]))
    assert names(library) == ["only"] and len(library.folders()) == 1


def test_a_folder_that_cannot_be_listed_is_an_entry_with_the_reason(lora_dir: Path, library: LoraLibrary,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    lf.small(lora_dir / "fine.safetensors")
    lf.small(lora_dir / "locked" / "inside.safetensors")
    files.lock_folder(monkeypatch, "locked")
    found = library.scan()
    assert [entry.usable for entry in found] == [True, False]
    assert found[1].path == lora_dir / "locked" and "cannot be listed (PermissionError" in found[1].reason


def test_no_lora_folder_at_all_is_an_empty_list(config: EngineConfig) -> None:
    assert LoraLibrary(config).scan() == []


# ---------------------------------------------------------------------------------------------- names
def test_the_first_of_two_files_with_one_name_wins_every_scan(lora_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    lf.small(lora_dir / "Detail.safetensors")
    root = _comfy(tmp_path / "comfy")
    lf.small(root / "models" / "loras" / "detail.safetensors")  # the same name but for case
    library = LoraLibrary(EngineConfig(data_dir=data_dir, models_dirs=[root]))
    for _ in range(2):
        first, _comfy_entry, second = library.scan()
        assert first.usable and first.path == lora_dir / "Detail.safetensors"
        assert not second.usable and second.reason == f"another LoRA has this name: {first.path}"
    assert library.find("detail").path == first.path


def test_find_by_name_then_stem_then_alias_without_case(lora_dir: Path, library: LoraLibrary) -> None:
    lf.small(lora_dir / "styles" / "pixel-art.safetensors", metadata={"ss_output_name": "PixelArtV2"})
    lf.small(lora_dir / "pixel-art2.safetensors", metadata={"ss_output_name": "styles/pixel-art"})
    library.scan()
    assert library.find("styles/pixel-art").name == "styles/pixel-art"  # the name before another's alias
    assert library.find("STYLES/Pixel-Art").name == "styles/pixel-art"
    assert library.find("styles\\pixel-art").name == "styles/pixel-art"  # as a Windows user writes it
    assert library.find("pixel-art").name == "styles/pixel-art"  # the stem
    assert library.find(" pixelartv2 ").name == "styles/pixel-art"  # the alias
    assert library.find("pixel-art2").name == "pixel-art2"
    assert library.find("nothing") is None


def test_find_prefers_a_usable_file_of_a_name(lora_dir: Path, library: LoraLibrary) -> None:
    files.garbage(lora_dir / "broken" / "detail.safetensors")
    lf.small(lora_dir / "detail.safetensors")
    files.garbage(lora_dir / "only-broken.safetensors")
    library.scan()
    assert library.find("detail").path == lora_dir / "detail.safetensors"
    unusable = library.find("only-broken")
    assert unusable is not None and not unusable.usable and "not a safetensors file" in unusable.reason


def test_closest_names_usable_loras_like_the_one_asked_for(lora_dir: Path, library: LoraLibrary) -> None:
    lf.small(lora_dir / "styles" / "pixel-art.safetensors")
    lf.small(lora_dir / "pixel-art-xl.safetensors")
    lf.small(lora_dir / "detail-tweaker.safetensors", metadata={"ss_output_name": "add_detail"})
    files.garbage(lora_dir / "pixel-arts.safetensors")
    library.scan()
    assert library.closest("pixelart") == ["styles/pixel-art", "pixel-art-xl"]  # by stem; never the broken one
    assert library.closest("add-detail") == ["detail-tweaker"]  # by alias, named by its name
    assert library.closest("PIXEL-ART", n=1) == ["styles/pixel-art"]
    assert library.closest("zzzz") == []
    assert LoraLibrary(EngineConfig(data_dir=lora_dir / "none")).closest("x") == []


# ---------------------------------------------------------------------------------------------- refresh
def test_a_refresh_finds_new_and_changed_files_and_drops_deleted_ones(lora_dir: Path, library: LoraLibrary) -> None:
    gone = lf.small(lora_dir / "gone.safetensors")
    changing = lf.small(lora_dir / "changing.safetensors", rank=4)
    assert names(library) == ["changing", "gone"] and library.find("changing").rank == 4
    gone.unlink()
    lf.small(lora_dir / "new.safetensors")
    lf.small(changing, rank=8)
    os.utime(changing, ns=(1, 1))  # a new mtime whatever the clock's resolution
    assert [entry.name for entry in library.entries()] == ["changing", "gone"]  # kept until a scan
    assert names(library) == ["changing", "new"] and library.find("changing").rank == 8


def test_a_scan_reads_only_new_and_changed_files(lora_dir: Path, library: LoraLibrary,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    lf.small(lora_dir / "a.safetensors")
    lf.small(lora_dir / "b.safetensors")
    first = library.scan()
    reads: list[str] = []
    real_read = loras_module.read_lora
    monkeypatch.setattr(loras_module, "read_lora", lambda path, name: reads.append(name) or real_read(path, name))
    assert library.scan() == first and reads == []
    assert library.scan()[0] is first[0]  # the same entry: a hash computed once stays computed
    lf.small(lora_dir / "c.safetensors")
    os.utime(lora_dir / "b.safetensors", ns=(5, 5))
    library.scan()
    assert reads == ["b", "c"]


def test_entries_scan_the_first_time(lora_dir: Path, library: LoraLibrary) -> None:
    lf.small(lora_dir / "a.safetensors")
    assert [entry.name for entry in library.entries()] == ["a"]


# ---------------------------------------------------------------------------------------------- previews
@pytest.mark.parametrize(("images", "expected"), [
    (["x.preview.png", "x.png", "x.jpg"], "x.preview.png"),
    (["x.png", "x.jpg"], "x.png"),
    (["x.preview.jpg", "x.jpg", "x.webp"], "x.preview.jpg"),
    (["x.jpeg"], "x.jpeg"),
    (["x.preview.webp"], "x.preview.webp"),
    (["x.gif", "y.png", "x.safetensors.png"], None),
])
def test_the_preview_is_the_image_beside_the_file(lora_dir: Path, library: LoraLibrary, images: list[str],
                                                  expected: str | None) -> None:
    lf.small(lora_dir / "sub" / "x.safetensors")
    for image in images:
        (lora_dir / "sub" / image).write_bytes(b"image")
    assert library.scan()[0].preview == (lora_dir / "sub" / expected if expected else None)


def test_a_preview_added_or_removed_later_is_seen_by_the_next_scan(lora_dir: Path, library: LoraLibrary) -> None:
    lf.small(lora_dir / "x.safetensors")
    assert library.scan()[0].preview is None
    (lora_dir / "x.png").write_bytes(b"image")
    assert library.scan()[0].preview == lora_dir / "x.png"
    (lora_dir / "x.png").unlink()
    assert library.scan()[0].preview is None


# ---------------------------------------------------------------------------------------------- hash
def test_the_shorthash_is_the_kohya_hash_of_the_tensor_data(lora_dir: Path, library: LoraLibrary) -> None:
    path = lf.small(lora_dir / "hashed.safetensors", metadata={"ss_output_name": "h"})
    data = path.read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    expected = hashlib.sha256(data[8 + header_length:]).hexdigest()[:12]
    (entry,) = library.scan()
    assert entry.shorthash == expected != hashlib.sha256(data).hexdigest()[:12]


def test_a_pickle_is_hashed_whole(lora_dir: Path, library: LoraLibrary) -> None:
    path = lf.small(lora_dir / "old.pt")
    assert library.scan()[0].shorthash == hashlib.sha256(path.read_bytes()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- never raises
def test_discovery_never_raises_on_a_folder_of_bad_files(lora_dir: Path, library: LoraLibrary,
                                                         tmp_path: Path) -> None:
    files.garbage(lora_dir / "a.pt")
    cut = lf.small(lora_dir / "b.safetensors")
    cut.write_bytes(cut.read_bytes()[:-10])
    (lora_dir / "c.bin").write_bytes(b"")
    (lora_dir / "d.safetensors").symlink_to(lora_dir / "nowhere")
    files.malicious_pt(lora_dir / "e.ckpt", tmp_path / "ran")
    files.checkpoint(lora_dir / "f.safetensors")
    files.emb_params(lora_dir / "g.safetensors", files.vectors(1, 768))
    lf.small(lora_dir / "good.safetensors")
    found = by_name(library)
    assert sorted(found) == ["a", "b", "c", "d", "e", "f", "g", "good"]
    assert [name for name, entry in found.items() if entry.usable] == ["good"]
    assert all(entry.reason for name, entry in found.items() if name != "good")
    assert not (tmp_path / "ran").exists()


def test_a_file_that_breaks_the_reader_is_listed_not_raised(lora_dir: Path, library: LoraLibrary,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    lf.small(lora_dir / "odd.safetensors")

    def explode(path: Path) -> None:
        raise ZeroDivisionError("surprise")

    monkeypatch.setattr(loras_module, "read_lora_info", explode)
    (entry,) = library.scan()
    assert entry.reason == "cannot be examined (ZeroDivisionError: surprise)"


def test_scanning_safetensors_never_imports_torch(lora_dir: Path, data_dir: Path) -> None:
    lf.small(lora_dir / "a.safetensors")
    lf.save(lora_dir / "sub" / "b.safetensors", lf.loha(lf.SGM_K, width=2048))
    files.garbage(lora_dir / "c.safetensors")
    (lora_dir / "c.png").write_bytes(b"image")
    code = ("import sys; from pathlib import Path; from sdlocal.engine.config import EngineConfig; "
            "from sdlocal.engine.networks.loras import LoraLibrary; "
            f"lib = LoraLibrary(EngineConfig(data_dir=Path({str(data_dir)!r}))); "
            "found = lib.scan(); print([(e.name, e.format, e.family, e.usable) for e in found], "
            "lib.find('b').name, lib.closest('a'), found[0].shorthash != '', 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("[('a', 'lora', None, True), ('c', '', None, False), "
                                     "('sub/b', 'loha', 'sdxl', True)] sub/b ['a'] True False")


# ---------------------------------------------------------------------------------------------- engine
def test_the_engine_keeps_one_library_and_rescans_on_refresh(lora_dir: Path, config: EngineConfig) -> None:
    engine = Engine(config)
    lf.small(lora_dir / "first.safetensors")
    assert [entry.name for entry in engine.loras()] == ["first"]
    lf.small(lora_dir / "second.safetensors")
    assert [entry.name for entry in engine.loras()] == ["first"]  # the last scan's list
    assert [entry.name for entry in engine.loras(refresh=True)] == ["first", "second"]
    assert engine.lora_library() is engine.lora_library()
    assert engine.lora_library().find("SECOND").path == lora_dir / "second.safetensors"
    assert Engine(config).lora_library() is not engine.lora_library()  # one per engine, not per process
