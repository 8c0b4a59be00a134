"""A1111 model hashes: the right digits, read from the cache while the file is unchanged, recomputed when it
changes, a corrupt cache recovered, and missing hashes filled in by one background thread after a scan."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from sdlocal.engine import hashing
from sdlocal.engine.config import EngineConfig
from sdlocal.engine.hashing import HashCache, hash_target, sha256_file, short_hash
from sdlocal.engine.models import ModelCatalog
from tests.engine.stripped import CONV_IN, HEADERS, TO_K_2, write_diffusers_folder, write_safetensors


def small_model(path: Path, fill: bytes = b"\x01\x02\x03") -> Path:
    """A few KB that detection takes for SD 1.x (the cross-attention width is what it reads), with real bytes."""
    return write_safetensors(path, {CONV_IN: [2, 4, 1, 1], TO_K_2: [2, 768]}, fill=fill)


def forbid_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(path: Path) -> str:
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(hashing, "sha256_file", forbidden)


def test_short_hash_is_the_first_ten_hex_of_the_files_sha256(tmp_path: Path, monkeypatch) -> None:
    path = small_model(tmp_path / "m.safetensors")
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(hashing, "CHUNK_BYTES", 1000)  # several chunks, so streaming is exercised
    assert sha256_file(path) == expected
    assert short_hash(path) == expected[:10]


def test_a_diffusers_folder_hashes_its_unet_weights(tmp_path: Path) -> None:
    folder = write_diffusers_folder(tmp_path / "sd15", weights=b"the unet weights")
    assert hash_target(folder) == folder / "unet" / "diffusion_pytorch_model.safetensors"
    assert short_hash(folder) == hashlib.sha256(b"the unet weights").hexdigest()[:10]
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"half")
    assert short_hash(folder) == hashlib.sha256(b"half").hexdigest()[:10]


def test_cache_hit_does_not_read_the_file_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = small_model(tmp_path / "m.safetensors")
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    cache = HashCache(tmp_path / "data")
    assert cache.cached(path) is None
    assert cache.sha256(path) == expected
    stored = json.loads((tmp_path / "data" / "cache" / "hashes.json").read_text(encoding="utf-8"))
    record = stored["files"][str(path.resolve())]
    assert record == {"size": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns, "sha256": expected}
    forbid_hashing(monkeypatch)
    assert cache.sha256(path) == expected
    assert HashCache(tmp_path / "data").sha256(path) == expected  # a new process reads it from disk
    assert not [p for p in (tmp_path / "data" / "cache").iterdir() if p.name != "hashes.json"]  # no temp files


def test_changed_mtime_or_size_is_hashed_again(tmp_path: Path) -> None:
    path = small_model(tmp_path / "m.safetensors")
    cache = HashCache(tmp_path / "data")
    first = cache.sha256(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert cache.cached(path) is None  # same bytes, new mtime: not trusted
    assert cache.sha256(path) == first
    small_model(path, fill=b"\x09")  # same size, new content and mtime
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 9_000_000_000))
    assert cache.sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest() != first
    with open(path, "ab") as fh:  # a new size with the mtime put back
        fh.write(b"more")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 9_000_000_000))
    assert cache.cached(path) is None
    assert cache.sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", '{"version": 1, "files": 7}', ""])
def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path: Path, garbage: str) -> None:
    path = small_model(tmp_path / "m.safetensors")
    cache_file = tmp_path / "data" / "cache" / "hashes.json"
    cache_file.parent.mkdir(parents=True)
    cache_file.write_text(garbage, encoding="utf-8")
    cache = HashCache(tmp_path / "data")
    assert cache.cached(path) is None
    assert cache.sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert json.loads(cache_file.read_text(encoding="utf-8"))["version"] == hashing.CACHE_VERSION


def test_two_threads_asking_for_one_file_read_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = small_model(tmp_path / "m.safetensors")
    calls: list[Path] = []
    release = threading.Event()
    real = hashing.sha256_file

    def slow(target: Path) -> str:
        calls.append(target)
        release.wait(10)
        return real(target)

    monkeypatch.setattr(hashing, "sha256_file", slow)
    cache = HashCache(tmp_path / "data")
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(cache.sha256(path))) for _ in range(2)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1 and len(results) == 2 and results[0] == results[1]


# ------------------------------------------------------------------------------------------ the catalog
def _catalog(tmp_path: Path, models: Path, background: bool = True) -> ModelCatalog:
    return ModelCatalog(EngineConfig(data_dir=tmp_path / "data", models_dirs=[models]), background_hashing=background)


def test_background_thread_fills_entries_and_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    paths = [small_model(models / f"m{i}.safetensors", fill=bytes([i + 1])) for i in range(3)]
    write_diffusers_folder(models / "folder", weights=b"unet")
    write_safetensors(models / "lora.safetensors", HEADERS["lora-kohya"])  # unsupported: not hashed
    catalog = _catalog(tmp_path, models)
    entries = {e.name: e for e in catalog.scan()}
    assert catalog.wait_for_hashes(60)
    for i, path in enumerate(paths):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert (entries[f"m{i}"].sha256, entries[f"m{i}"].short_hash) == (digest, digest[:10])
        assert entries[f"m{i}"].title == f"m{i} [{digest[:10]}]"
    assert entries["folder"].short_hash == hashlib.sha256(b"unet").hexdigest()[:10]
    assert entries["lora"].short_hash is None
    forbid_hashing(monkeypatch)  # the next scan, in a new catalog, fills hashes from the cache alone
    again = {e.name: e for e in _catalog(tmp_path, models).scan()}
    assert again["m0"].sha256 == entries["m0"].sha256 and again["folder"].short_hash == entries["folder"].short_hash


def test_at_most_one_background_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    for i in range(3):
        small_model(models / f"m{i}.safetensors", fill=bytes([i + 1]))
    started, release = threading.Event(), threading.Event()
    real = hashing.sha256_file

    def gated(target: Path) -> str:
        started.set()
        release.wait(10)
        return real(target)

    monkeypatch.setattr(hashing, "sha256_file", gated)
    catalog = _catalog(tmp_path, models)
    catalog.scan()
    assert started.wait(10)
    latest = catalog.scan()  # while the first file is being hashed
    catalog.scan()
    latest = catalog.scan()
    hashers = [t for t in threading.enumerate() if t.name == "sdlocal-model-hasher"]
    release.set()
    assert len(hashers) == 1
    assert catalog.wait_for_hashes(60)
    assert all(e.sha256 for e in latest)  # the newest scan's entries are the ones filled in


def test_background_hashing_can_be_disabled_and_short_hash_computes_now(tmp_path: Path) -> None:
    models = tmp_path / "models"
    path = small_model(models / "m.safetensors")
    catalog = _catalog(tmp_path, models, background=False)
    (entry,) = catalog.scan()
    assert not catalog.hasher.running and entry.short_hash is None
    assert catalog.short_hash(entry) == hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    assert entry.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    (again,) = catalog.scan()
    assert again.short_hash == entry.short_hash  # from the cache


def test_a_file_gone_before_its_turn_does_not_stop_the_thread(tmp_path: Path) -> None:
    models = tmp_path / "models"
    gone = small_model(models / "a.safetensors")
    kept = small_model(models / "b.safetensors", fill=b"\x07")
    catalog = _catalog(tmp_path, models, background=False)
    entries = catalog.scan()
    gone.unlink()
    catalog.hasher.submit(entries)
    assert catalog.wait_for_hashes(60)
    assert entries[0].sha256 is None
    assert entries[1].sha256 == hashlib.sha256(kept.read_bytes()).hexdigest()
