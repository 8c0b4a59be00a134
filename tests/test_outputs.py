"""The output store keeps every image, never overwrites or truncates one, and lists them newest first."""

from __future__ import annotations

import os
import threading
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from sdlocal.outputs import OutputError, OutputStore, read_image_parameters

PARAMS = "a red fox\nNegative prompt: blurry\nSteps: 4, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 64x64"


def _image(color=(200, 30, 30), size=(64, 64)) -> Image.Image:
    return Image.new("RGB", size, color)


def test_save_layout_and_parameters_chunk(tmp_path: Path) -> None:
    store = OutputStore(tmp_path)
    when = datetime(2026, 11, 24, 10, 0)
    first = store.save(_image(), PARAMS, seed=42, when=when)
    second = store.save(_image(), PARAMS, seed=43, when=when)
    assert first == tmp_path / "txt2img" / "2026-11-24" / "00000-42.png"
    assert second.name == "00001-43.png"
    with Image.open(first) as image:
        assert image.format == "PNG"
        assert image.info["parameters"] == PARAMS
        assert image.size == (64, 64)
    assert store.read_parameters(first) == PARAMS
    # no temporary files are left behind
    assert sorted(p.name for p in first.parent.iterdir()) == ["00000-42.png", "00001-43.png"]


def test_counter_continues_after_restart(tmp_path: Path) -> None:
    when = datetime(2026, 1, 2)
    OutputStore(tmp_path).save(_image(), "", seed=1, when=when)
    OutputStore(tmp_path).save(_image(), "", seed=2, when=when)
    names = sorted(p.name for p in (tmp_path / "txt2img" / "2026-01-02").iterdir())
    assert names == ["00000-1.png", "00001-2.png"]


def test_concurrent_saves_never_share_a_name(tmp_path: Path) -> None:
    stores = [OutputStore(tmp_path), OutputStore(tmp_path)]  # two stores act like two processes
    when = datetime(2026, 3, 4)
    paths: list[Path] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        for j in range(10):
            image = _image((index * 20, j * 20, 0))
            path = stores[index % 2].save(image, f"worker {index} image {j}", seed=7, when=when)
            with lock:
                paths.append(path)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(paths) == 60
    assert len(set(paths)) == 60
    # each file still holds the text it was written with: nothing was overwritten
    texts = {read_image_parameters(path) for path in paths}
    assert texts == {f"worker {i} image {j}" for i in range(6) for j in range(10)}


def test_failed_write_leaves_no_file_at_final_name(tmp_path: Path) -> None:
    class Exploding:
        def save(self, handle, format, pnginfo):  # noqa: A002 - PIL's signature
            handle.write(b"\x89PNG\r\n\x1a\n" + b"half an image")
            raise OSError("disk yanked mid-write")

    store = OutputStore(tmp_path)
    when = datetime(2026, 5, 6)
    with pytest.raises(OSError, match="disk yanked"):
        store.save(Exploding(), PARAMS, seed=9, when=when)
    folder = tmp_path / "txt2img" / "2026-05-06"
    assert list(folder.iterdir()) == []
    assert store.count() == 0
    # the next save still gets the first number
    assert store.save(_image(), PARAMS, seed=9, when=when).name == "00000-9.png"


def test_stale_temp_from_killed_process_is_ignored_and_cleaned(tmp_path: Path) -> None:
    folder = tmp_path / "txt2img" / "2026-05-06"
    folder.mkdir(parents=True)
    stale = folder / ".deadbeef.tmp"
    stale.write_bytes(b"\x89PNG truncated")
    os.utime(stale, (1_000_000, 1_000_000))
    store = OutputStore(tmp_path)
    assert store.count() == 0
    store.save(_image(), "", seed=1, when=datetime(2026, 5, 6))
    assert not stale.exists()
    assert store.count() == 1


def _write_tiny_pngs(folder: Path, start: int, count: int) -> None:
    """Encoding 10,000 PNGs is slow; one tiny PNG's bytes are reused (listing never opens them)."""
    import io

    buffer = io.BytesIO()
    _image(size=(8, 8)).save(buffer, format="PNG")
    data = buffer.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(start, start + count):
        (folder / f"{number:05d}-{1000 + number}.png").write_bytes(data)


def test_listing_ten_thousand_images_newest_first_in_pages(tmp_path: Path) -> None:
    _write_tiny_pngs(tmp_path / "txt2img" / "2026-01-01", 0, 4000)
    _write_tiny_pngs(tmp_path / "txt2img" / "2026-01-02", 0, 6000)
    (tmp_path / "txt2img" / "2026-01-02" / "notes.txt").write_text("not an image")
    store = OutputStore(tmp_path)
    assert store.count() == 10_000
    assert store.pages(per_page=100) == 100
    first = store.list(page=0, per_page=100)
    assert [item.relpath for item in first[:2]] == [
        "txt2img/2026-01-02/05999-6999.png",
        "txt2img/2026-01-02/05998-6998.png",
    ]
    assert first[0].seed == 6999 and first[0].number == 5999
    page_60 = store.list(page=60, per_page=100)  # items 6000..6099: the older day, newest first
    assert page_60[0].relpath == "txt2img/2026-01-01/03999-4999.png"
    everything = [item.relpath for page in range(100) for item in store.list(page=page, per_page=100)]
    assert len(everything) == len(set(everything)) == 10_000
    assert store.list(page=100, per_page=100) == []
    # a new image shows up first, in the same process and in a new one (after a restart)
    new = store.save(_image(), PARAMS, seed=5, when=datetime(2026, 1, 3))
    assert store.list(0, 1)[0].path == new
    assert OutputStore(tmp_path).list(0, 1)[0].path == new


def test_listing_sees_files_written_by_another_process(tmp_path: Path) -> None:
    store = OutputStore(tmp_path)
    store.save(_image(), "", seed=1, when=datetime(2026, 2, 2))
    assert store.count() == 1
    other = OutputStore(tmp_path)
    other.save(_image(), "", seed=2, when=datetime(2026, 2, 2))
    assert store.count() == 2
    assert store.list(0, 10)[0].seed == 2


def test_thumbnail_is_cached_and_refreshed(tmp_path: Path) -> None:
    store = OutputStore(tmp_path)
    path = store.save(_image(size=(640, 480)), PARAMS, seed=3)
    thumb = store.thumbnail(path)
    assert thumb.is_file() and tmp_path / ".thumbnails" in thumb.parents
    with Image.open(thumb) as image:
        assert max(image.size) <= 320 and image.format == "JPEG"
    mtime = thumb.stat().st_mtime_ns
    assert store.thumbnail(path).stat().st_mtime_ns == mtime  # cached
    future = path.stat().st_mtime + 10
    os.utime(path, (future, future))
    _image(color=(0, 0, 255), size=(640, 480)).save(path, format="PNG")
    os.utime(path, (future, future))
    store.thumbnail(path)
    with Image.open(thumb) as image:
        assert image.convert("RGB").getpixel((5, 5))[2] > 200  # the new, blue image
    # thumbnails are not listed as images
    assert store.count() == 1


def test_delete_only_inside_the_store(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    store = OutputStore(root)
    path = store.save(_image(), PARAMS, seed=4)
    store.thumbnail(path)
    outside = tmp_path / "precious.png"
    _image().save(outside)
    for bad in (outside, "../precious.png", "txt2img/../../precious.png", root):
        with pytest.raises(OutputError, match="outside the outputs folder"):
            store.delete(bad)
    assert outside.exists()
    link = root / "txt2img" / "link.png"
    link.symlink_to(outside)
    with pytest.raises(OutputError, match="outside"):
        store.delete(link)
    assert outside.exists()
    store.delete(path.relative_to(root))
    assert not path.exists()
    assert list((root / ".thumbnails").rglob("*.jpg")) == []
    assert store.count() == 0
    with pytest.raises(OutputError, match="not a stored image"):
        store.delete(path)


def test_read_parameters_from_jpeg_user_comment(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + PARAMS.encode("utf-16-be")
    path = tmp_path / "a1111.jpg"
    _image().save(path, format="JPEG", exif=exif)
    assert read_image_parameters(path) == PARAMS


def test_read_parameters_missing_returns_none(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    _image().save(path)
    assert read_image_parameters(path) is None


def test_bad_kind_and_seed_are_refused(tmp_path: Path) -> None:
    store = OutputStore(tmp_path)
    with pytest.raises(OutputError, match="kind"):
        store.save(_image(), "", seed=1, kind="../evil")
    with pytest.raises(OutputError, match="seed"):
        store.save(_image(), "", seed=-1)


def test_each_quick_save_is_listed_at_once(tmp_path: Path) -> None:
    """The listing is cached per folder by mtime, which may not tick between two saves: a save must still show."""
    store = OutputStore(tmp_path)
    image = Image.new("RGB", (8, 8))
    for seed in range(5):
        path = store.save(image, f"p\nSteps: 1, Seed: {seed}, Size: 8x8", seed)
        assert store.count() == seed + 1 and store.list()[0].path == path
    assert [item.seed for item in store.list()] == [4, 3, 2, 1, 0]


def test_a_day_is_one_sequence_across_kinds_and_listed_newest_first(tmp_path: Path) -> None:
    """img2img #3 made after txt2img #9 is listed above it: one counter per day, shared by the kinds' folders."""
    store = OutputStore(tmp_path)
    when = datetime(2026, 12, 1, 9, 0)
    order = ["txt2img", "txt2img", "txt2img", "img2img", "img2img", "txt2img", "img2img"]
    saved = [store.save(_image(), f"image {i}", seed=i, kind=kind, when=when) for i, kind in enumerate(order)]
    assert [path.relative_to(tmp_path).as_posix() for path in saved] == [
        "txt2img/2026-12-01/00000-0.png", "txt2img/2026-12-01/00001-1.png", "txt2img/2026-12-01/00002-2.png",
        "img2img/2026-12-01/00003-3.png", "img2img/2026-12-01/00004-4.png", "txt2img/2026-12-01/00005-5.png",
        "img2img/2026-12-01/00006-6.png"]
    newest_first = [item.seed for item in store.list(0, 100)]
    assert newest_first == [6, 5, 4, 3, 2, 1, 0]
    assert [item.seed for item in OutputStore(tmp_path).list(0, 100)] == newest_first  # after a restart too
    # the next day starts again at 0 and comes first, whichever kind
    next_day = store.save(_image(), "", seed=99, kind="txt2img", when=datetime(2026, 12, 2))
    assert next_day.name == "00000-99.png" and store.list(0, 1)[0].path == next_day


def test_the_day_sequence_sees_another_processs_saves_in_other_kinds(tmp_path: Path) -> None:
    ui, cli = OutputStore(tmp_path), OutputStore(tmp_path)  # two stores act like two processes
    when = datetime(2026, 12, 1)
    ui.save(_image(), "", seed=1, kind="txt2img", when=when)
    cli.save(_image(), "", seed=2, kind="img2img", when=when)
    cli.save(_image(), "", seed=3, kind="img2img", when=when)
    latest = ui.save(_image(), "", seed=4, kind="txt2img", when=when)
    assert latest.name == "00003-4.png"
    assert [item.seed for item in ui.list(0, 10)] == [4, 3, 2, 1]


def test_listing_filters_by_kind_in_the_same_order(tmp_path: Path) -> None:
    store = OutputStore(tmp_path)
    for i, kind in enumerate(["txt2img", "img2img", "txt2img", "img2img", "img2img"]):
        store.save(_image(), "", seed=i, kind=kind, when=datetime(2026, 12, 1 + i // 3))
    assert [item.seed for item in store.list(0, 10)] == [4, 3, 2, 1, 0]
    assert [item.seed for item in store.list(0, 10, kind="img2img")] == [4, 3, 1]
    assert [(item.kind, item.seed) for item in store.list(1, 1, kind="txt2img")] == [("txt2img", 0)]
    assert store.count(kind="img2img") == 3 and store.count(kind="txt2img") == 2 and store.count() == 5
    assert store.pages(per_page=2, kind="img2img") == 2 and store.pages(per_page=2, kind="extras") == 1
    assert store.list(0, 10, kind="extras") == []
    added = store.save(_image(), "", seed=9, kind="img2img", when=datetime(2026, 12, 2))
    assert store.list(0, 1, kind="img2img")[0].path == added and store.count(kind="txt2img") == 2
    with pytest.raises(OutputError, match="kind"):
        store.list(0, 10, kind="../txt2img")
