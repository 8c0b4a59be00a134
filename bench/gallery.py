"""Gallery speed with 10,000 saved images: the first page (listing + thumbnails) and one image's parameters.

The images are small PNGs, each with its own A1111 ``parameters`` text chunk, spread over 100 dated folders
in OutputStore's layout (``txt2img/YYYY-MM-DD/NNNNN-SEED.png``). They are written directly (one encoded PNG with
a different text chunk spliced in per file) because making them through ``OutputStore.save`` would fsync
10,000 times; the store reads them exactly as it reads its own.

Timed through the calls the Gallery tab makes for a page (``pages``, ``list``, ``thumbnail`` for each of the 48
items, ``count``) and for a selected image (``read_parameters``):

- cold: a new OutputStore (as after a restart) and no thumbnails yet: the first visit ever;
- restart: a new OutputStore, thumbnails already on disk;
- warm: the same store again (listing cached until a folder changes);
- after a save: one new image saved, then the first page (the listing is rebuilt).

The OS page cache is warm (the files were just written); a disk read after a reboot is not measured. Target:
under 300 ms each.

    python bench/gallery.py [--images 10000] [--tiny]
"""

from __future__ import annotations

import io
import shutil
import struct
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from _common import machine, parser, setup, summary, table, write_json

PER_PAGE = 48  # sdlocal.ui.gallery.PER_PAGE (not imported: that module imports gradio)
PARAMETERS = ("a lighthouse on a cliff at dusk, oil painting\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, "
              "Schedule type: Automatic, CFG scale: 7, Seed: {seed}, Size: 512x512, Model hash: 0123456789, "
              "Model: tiny-sd15, Version: sdlocal")


def png_with_text(base: bytes, key: str, text: str) -> bytes:
    """``base`` (a PNG) with one tEXt chunk inserted after IHDR: what PngInfo.add_text writes, spliced in directly."""
    data = key.encode("latin-1") + b"\0" + text.encode("latin-1")
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data) & 0xFFFFFFFF)
    ihdr_end = 8 + 4 + 4 + 13 + 4  # signature, then IHDR's length, type, 13 data bytes and CRC
    return base[:ihdr_end] + chunk + base[ihdr_end:]


def make_images(root: Path, count: int, days: int, side: int = 64) -> list[Path]:
    """``count`` PNGs over ``days`` dated folders, numbered per folder like OutputStore.save numbers them."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((side, side)).convert("RGB").save(buffer, format="PNG")
    base = buffer.getvalue()
    paths = []
    per_day = -(-count // days)
    for index in range(count):
        day, number = divmod(index, per_day)
        folder = root / "txt2img" / f"2026-{1 + day // 28:02d}-{1 + day % 28:02d}"
        if number == 0:
            folder.mkdir(parents=True, exist_ok=True)
        seed = 1000 + index
        path = folder / f"{number:05d}-{seed}.png"
        path.write_bytes(png_with_text(base, "parameters", PARAMETERS.format(seed=seed)))
        paths.append(path)
    return paths


def first_page(store: Any) -> tuple[float, int]:
    """What the Gallery tab does to show page 1; returns (seconds, thumbnails shown)."""
    started = time.perf_counter()
    store.pages(PER_PAGE)
    items = store.list(0, PER_PAGE)
    thumbs = [store.thumbnail(item.path) for item in items]
    store.count()
    return time.perf_counter() - started, len(thumbs)


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=100)
    ap.add_argument("--image-size", type=int, default=64,
                    help="side of each PNG; 512 makes cold thumbnails cost what real images cost (and ~0.6 GB)")
    ap.add_argument("--runs", type=int, default=5, help="repeats of the cold/restart/warm round (fresh thumbnails)")
    args = ap.parse_args()
    if args.tiny:
        args.images, args.days, args.runs = 300, 10, 2
    setup()
    from PIL import Image

    from sdlocal.outputs import THUMBNAIL_DIR, OutputStore

    times: dict[str, list[float]] = {"cold": [], "restart": [], "warm": [], "after a save": [],
                                     "read_parameters": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "outputs"
        started = time.perf_counter()
        paths = make_images(root, args.images, args.days, args.image_size)
        made = time.perf_counter() - started
        probe = OutputStore(root)
        if probe.count() != args.images:
            raise SystemExit(f"OutputStore lists {probe.count()} of the {args.images} images written")
        newest = probe.list(0, 1)[0]
        text = probe.read_parameters(newest.relpath)
        if not text or f"Seed: {newest.seed}" not in text:
            raise SystemExit(f"the parameters of {newest.relpath} did not read back: {text!r}")
        shown = 0
        for run in range(args.runs):
            shutil.rmtree(root / THUMBNAIL_DIR, ignore_errors=True)
            seconds, shown = first_page(OutputStore(root))
            times["cold"].append(seconds)
            times["restart"].append(first_page(OutputStore(root))[0])
            store = OutputStore(root)
            first_page(store)
            times["warm"].append(first_page(store)[0])
            store.save(Image.new("RGB", (64, 64)), PARAMETERS.format(seed=run), seed=run)
            times["after a save"].append(first_page(store)[0])
            for path in (paths[len(paths) // 2], paths[run * 7 % len(paths)]):
                started = time.perf_counter()
                store.read_parameters(path)
                times["read_parameters"].append(time.perf_counter() - started)

    stats = {name: summary([t * 1000 for t in values], 2) for name, values in times.items()}
    side = f"{args.image_size}x{args.image_size}"
    print(f"gallery: {args.images:,} {side} PNGs in {args.days} dated folders (written in {made:.1f} s), first page of "
          f"{PER_PAGE} with thumbnails; {args.runs} runs (ms)")
    print(table(["case", "median ms", "min ms", "max ms"],
                [[name, s["median"], s["min"], s["max"]] for name, s in stats.items()]))
    worst = max(s["max"] for s in stats.values())
    print(f"\nslowest single figure {worst:.1f} ms (target < 300 ms each)")
    write_json("gallery", {"benchmark": "gallery", "tiny": args.tiny, "machine": machine(),
                           "setup": {"images": args.images, "days": args.days, "image_size": args.image_size,
                                     "per_page": PER_PAGE,
                                     "thumbnails_per_page": shown, "runs": args.runs,
                                     "seconds_to_write_images": round(made, 2)},
                           "ms": stats, "target_ms": 300, "median_under_target": all(
                               s["median"] < 300 for s in stats.values())}, args.results_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

