"""Upscaler models: time and peak memory of RRDBNet x4plus (random weights at the real shape) upscaling 4x, tiled.

Each case runs in a fresh process: the model is loaded and run once on a small picture first, then the peak
resident-memory counter is reset (Linux ``clear_refs``) and one upscale of an N x N picture is timed; "peak +MiB"
is the peak above the memory before it, beside the model's own size (the issue's bound: at most 1 GiB above it).
A CUDA machine reports the GPU's peak allocated memory instead. Also printed: the largest difference between the
tiled and the untiled output on a picture small enough for both (in 1/255 levels; the bound is 1).

    python bench/upscalers.py            # 256x256 and 1024x1024 inputs (minutes on a small CPU)
    python bench/upscalers.py --tiny     # a 2-block model on 32 and 64 pixels: checks the script works
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine, parser, peak_rss_mib, reset_peak, rss_mib, setup, table, write_json

MARK = "UPSCALERS-RESULT "
BOUND_MIB = 1024


def _vm(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            return next((int(line.split()[1]) * 1024 for line in fh if line.startswith(field + ":")), None)
    except OSError:
        return None



def write_model(folder: Path, tiny: bool, blocks: int | None = None) -> Path:
    """RRDBNet x4plus's shape (23 blocks, 64 features, growth 32) with random weights, as Real-ESRGAN saves it;
    ``blocks`` fewer for a quick memory figure (the peak is the 4x stage's, which the block count does not
    change: the blocks run at the input's size)."""
    import torch

    from sdlocal.engine.upscalers.rrdbnet import RRDBNet, RrdbShape

    torch.manual_seed(0)
    model = RRDBNet(RrdbShape(3, 3, 16 if tiny else 64, 8 if tiny else 32, blocks or (2 if tiny else 23), 2, 1))
    state = {}
    for key, value in model.state_dict().items():  # the module's upconvs.N are conv_up<N+1> in the files
        parts = key.split(".")
        state[f"conv_up{int(parts[1]) + 1}.{parts[2]}" if parts[0] == "upconvs" else key] = value
    path = folder / "models" / "ESRGAN" / "RealESRGAN_x4plus-random.pth"
    path.parent.mkdir(parents=True)
    torch.save({"params_ema": state}, path)
    return path


def _picture(size: int) -> Any:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(size)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def child(data_dir: Path, size: int, device: str) -> dict[str, Any]:
    """One upscale of a size x size picture in this fresh process."""
    import torch

    from sdlocal.engine.config import EngineConfig
    from sdlocal.engine.upscalers import UpscalerSet, library

    upscalers = UpscalerSet(EngineConfig(data_dir=data_dir))
    info = upscalers.find("RealESRGAN_x4plus-random")
    dtype = torch.float16 if device == "cuda" else torch.float32
    upscalers._run_model(info, _picture(16), device, dtype, None, None)  # loads it: not the tiling's memory
    network = upscalers._load(info, device, dtype)[0]
    tile = library.GPU_TILE if device == "cuda" else library.CPU_TILE
    model_bytes = sum(p.numel() * p.element_size() for p in network.parameters())
    source = _picture(size)
    gc.collect()
    before = _vm("VmRSS") or int(rss_mib() * 2**20)
    reset = reset_peak()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_before = torch.cuda.memory_allocated()
    started = time.perf_counter()
    out = upscalers._run_model(info, source, device, dtype, None, None)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = (_vm("VmHWM") if reset else None) or int(peak_rss_mib() * 2**20)
    result = {"input": f"{size}x{size}", "output": f"{out.width}x{out.height}", "device": device,
              "tile": tile, "overlap": library.OVERLAP, "tiles": _tiles(size, tile, library.OVERLAP),
              "seconds": round(seconds, 2),
              "model_mib": round(model_bytes / 2**20, 1), "peak_rss_above_mib": round((peak - before) / 2**20),
              "peak_counter_reset": reset}
    if device == "cuda":
        result["gpu_peak_above_mib"] = round((torch.cuda.max_memory_allocated() - gpu_before) / 2**20)
    return result


def seam_difference(data_dir: Path, size: int, device: str) -> dict[str, Any]:
    """Tiled (two tiles a side, overlapping by the default overlap) against untiled on one picture: the largest
    difference in levels."""
    import numpy as np
    import torch

    from sdlocal.engine.config import EngineConfig
    from sdlocal.engine.upscalers import UpscalerSet, library, tiling

    upscalers = UpscalerSet(EngineConfig(data_dir=data_dir))
    info = upscalers.find("RealESRGAN_x4plus-random")
    dtype = torch.float16 if device == "cuda" else torch.float32
    network, scale = upscalers._load(info, device, dtype)
    pixels = torch.from_numpy(np.asarray(_picture(size), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]

    def run(window: Any) -> Any:
        return network(window.to(device=device, dtype=dtype))

    def levels(out: Any) -> Any:
        return (out[0].clamp(0, 1) * 255.0).round().to(torch.int16).numpy()

    tile = (size + library.OVERLAP) // 2
    whole = levels(tiling.run_tiled(run, pixels, scale, size, 0))
    tiled = levels(tiling.run_tiled(run, pixels, scale, tile, library.OVERLAP))
    return {"input": f"{size}x{size}", "tile": max(tile, 2 * library.OVERLAP + 8), "overlap": library.OVERLAP,
            "tiles": _tiles(size, tile, library.OVERLAP), "max_levels": int(np.abs(whole - tiled).max()),
            "mean_levels": round(float(np.abs(whole - tiled).mean()), 4)}


def _tiles(size: int, tile: int, overlap: int) -> int:
    from sdlocal.engine.upscalers.tiling import tile_starts

    return len(tile_starts(size, max(tile, 2 * overlap + 8), overlap)) ** 2  # run_tiled's own floor on the tile


def run_child(data_dir: Path, size: int, device: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", str(size), "--data-dir", str(data_dir), "--device", device]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"the {size}x{size} case failed ({done.returncode}):\n{done.stderr[-4000:]}")


def main() -> int:
    import argparse

    ap = parser(__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", help="input sizes (default 256 1024; tiny 32 64)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--blocks", type=int, help="RRDB blocks (default 23; fewer: the same peak memory, sooner)")
    ap.add_argument("--skip-seam", action="store_true", help="leave out the tiled vs untiled comparison")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    setup()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.child:
        print(MARK + json.dumps(child(args.data_dir, args.child, device)), flush=True)
        return 0
    sizes = args.sizes or ([32, 64] if args.tiny else [256, 1024])
    with tempfile.TemporaryDirectory() as scratch:
        write_model(Path(scratch), args.tiny, args.blocks)
        rows = []
        for size in sizes:  # each row as it comes: the 1024 case takes minutes on a small CPU
            rows.append(run_child(Path(scratch), size, device))
            print(MARK + json.dumps(rows[-1]), flush=True)
        seam = None if args.skip_seam else seam_difference(Path(scratch), 96, device)
    memory_key = "gpu_peak_above_mib" if device == "cuda" else "peak_rss_above_mib"
    shape = " (tiny: 2 blocks, 16 features)" if args.tiny else f" ({args.blocks} blocks)" if args.blocks else ""
    print(f"\nRRDBNet x4plus{shape}, random weights, 4x, tiled, "
          f"{device}; peak memory above the process before the upscale (the model already loaded)")
    print(table(["input", "output", "tiles", "seconds", "model MiB", "peak +MiB", "within 1 GiB"],
                [[r["input"], r["output"], r["tiles"], r["seconds"], r["model_mib"], r[memory_key],
                  r[memory_key] <= BOUND_MIB] for r in rows]))
    if seam is not None:
        print(f"\ntiled vs untiled on {seam['input']} ({seam['tiles']} tiles of {seam['tile']}, overlap "
              f"{seam['overlap']}): max {seam['max_levels']} levels, mean {seam['mean_levels']} (bound: 1)")
    write_json("upscalers", {"benchmark": "upscalers", "tiny": args.tiny, "machine": machine(), "device": device,
                             "blocks": args.blocks or (2 if args.tiny else 23), "bound_mib": BOUND_MIB,
                             "results": rows, "seam": seam}, args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
