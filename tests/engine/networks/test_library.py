"""The scan every file library shares (embeddings, LoRAs, VAEs): one entry per file, read again only when it
changed, an unlistable folder listed with its reason, the first of two same-named files winning."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.networks import vaes
from sdlocal.engine.networks.folders import Listing, walk
from sdlocal.engine.networks.library import FileLibrary, read_or_reason


@dataclass
class Note:
    name: str
    path: Path
    text: str = ""
    reason: str = ""


class NoteLibrary(FileLibrary[Note]):
    """A kind made for the test: ``.txt`` files in the given folders, named by their stem."""

    clash_kind = "note"

    def __init__(self, folders: list[Path]) -> None:
        super().__init__(EngineConfig(data_dir=folders[0]))
        self._folders = folders
        self.reads: list[str] = []

    def folders(self) -> list[Path]:
        return self._folders

    def candidates(self, folder: Path) -> Iterator[Listing]:
        return walk(folder, (".txt",))

    def locate(self, folder: Path, path: Path) -> tuple[Path, str]:
        return path, path.stem

    def read(self, path: Path, name: str) -> Note:
        self.reads.append(name)
        return Note(name, path, path.read_text())

    def unlisted(self, folder: Path, path: Path, reason: str) -> Note:
        return Note(str(path), path, reason=reason)


def test_a_scan_reads_again_only_the_files_whose_size_or_time_changed(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    library = NoteLibrary([tmp_path])
    library.scan()
    (tmp_path / "b.txt").write_text("bigger")
    found = library.scan()
    assert library.reads == ["a", "b", "b"] and [note.text for note in found] == ["a", "bigger"]


def test_the_first_of_two_files_with_one_name_wins_and_the_other_says_which(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "Cat.txt").parent.mkdir()
    (first / "Cat.txt").write_text("1")
    (second / "cat.txt").parent.mkdir()
    (second / "cat.txt").write_text("2")
    found = NoteLibrary([first, second]).scan()
    assert found[0].reason == "" and found[1].reason == f"another note has this name: {first / 'Cat.txt'}"


def test_a_file_reached_twice_is_listed_once(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    os.symlink(tmp_path / "a.txt", tmp_path / "link.txt")
    assert [note.name for note in NoteLibrary([tmp_path]).scan()] == ["a"]


def test_a_folder_that_cannot_be_listed_is_an_entry_with_the_reason(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NoteLibrary, "candidates", lambda self, folder: iter([Listing(folder, "PermissionError: no")]))
    (entry,) = NoteLibrary([tmp_path]).scan()
    assert entry.reason == "this folder cannot be listed (PermissionError: no): check its permissions"


@pytest.mark.parametrize(("error", "reason"), [
    (ValueError("not a note"), "not a note"),
    (PermissionError(13, "Permission denied"), "cannot be read (PermissionError: Permission denied): check the "
                                                 "file's permissions, or that a link points to an existing file"),
    (KeyError("x"), "cannot be examined (KeyError: 'x')"),
])
def test_a_reader_that_raises_gives_an_entry_with_the_reason(tmp_path: Path, error: Exception, reason: str) -> None:
    def read(path: Path, name: str) -> Note:
        raise error

    entry = read_or_reason(read, tmp_path / "x.txt", "x", "note", ValueError, lambda n, p, r: Note(n, p, reason=r))
    assert (entry.name, entry.reason) == ("x", reason)


def test_a_vae_file_or_diffusers_folder_is_read_again_only_when_its_weights_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "models" / "VAE"
    (folder / "folder").mkdir(parents=True)
    (folder / "folder" / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    (folder / "folder" / vaes.DIFFUSERS_WEIGHTS).write_bytes(b"not yet")
    (folder / "file.safetensors").write_bytes(b"not yet")
    reads: list[str] = []
    real_read = vaes.read_vae
    monkeypatch.setattr(vaes, "read_vae", lambda path, name: reads.append(name) or real_read(path, name))
    library = vaes.VaeLibrary(EngineConfig(data_dir=tmp_path))
    library.scan()
    library.scan()
    (folder / "folder" / vaes.DIFFUSERS_WEIGHTS).write_bytes(b"now longer")
    found = library.scan()
    assert reads == ["file.safetensors", "folder", "folder"] and [e.name for e in found] == ["file.safetensors",
                                                                                             "folder"]


def test_vaes_of_one_name_in_two_folders_are_both_usable(tmp_path: Path) -> None:
    """A VAE is chosen by its name, its file name or its stem, first found first: no clash reason is given."""
    for root in ("one", "two"):
        (tmp_path / root / "models" / "VAE").mkdir(parents=True)
        (tmp_path / root / "models" / "VAE" / "x.safetensors").write_bytes(b"garbage")
    library = vaes.VaeLibrary(EngineConfig(data_dir=tmp_path / "one", models_dirs=[tmp_path / "two"]))
    assert ["another" in entry.reason for entry in library.scan()] == [False, False]
