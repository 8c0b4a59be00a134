"""Peak memory of an SDXL-shaped VAE decode, tiled and not: the figures behind the engine's auto-tiling rule.

The VAE is SDXL's real configuration (``sdlocal/engine/configs/sdxl/vae``) with random weights (memory does not
depend on the values). Each case runs in a fresh process (its peak is its own): build the VAE, note the resident
memory, decode one latent of the given size, report the peak above that (CPU: ``ru_maxrss``; CUDA:
``torch.cuda.max_memory_allocated``). "bytes per output pixel" is that peak over the decoded picture's pixels,
and ``sdlocal.engine.vae_tiling.DECODE_BYTES_PER_PIXEL`` (fp32) comes from the untiled figures here.

    python bench/vae_tiling.py [--sides 256 512 1024] [--device cpu|cuda] [--dtype fp32|bf16|fp16] [--tiny]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _common import ROOT, machine, parser, setup, table, write_json

MARK = "VAE-TILING-RESULT "
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def child(side: int, tiled: bool, device: str, dtype_name: str, tile: int) -> None:
    """One decode in this process; prints its figures after MARK."""
    setup()
    import resource
    import time

    import torch
    from diffusers import AutoencoderKL

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    torch.manual_seed(0)
    config = AutoencoderKL.load_config(str(ROOT / "sdlocal" / "engine" / "configs" / "sdxl" / "vae"))
    vae = AutoencoderKL.from_config(config).to(device=device, dtype=dtype).eval()
    if tiled:
        vae.enable_tiling()
        vae.tile_sample_min_size, vae.tile_latent_min_size = tile, tile // 8
    latents = torch.randn((1, 4, side // 8, side // 8), dtype=dtype, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    with torch.inference_mode():
        image = vae.decode(latents, return_dict=False)[0]
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    seconds = time.perf_counter() - started
    print(MARK + json.dumps({"side": side, "tiled": tiled, "peak_bytes": max(0, int(peak)), "seconds": seconds,
                             "shape": list(image.shape)}), flush=True)


def run_case(side: int, tiled: bool, device: str, dtype: str, tile: int) -> dict:
    command = [sys.executable, __file__, "--child", str(side), str(int(tiled)), device, dtype, str(tile)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=3600, cwd=ROOT)
    for line in out.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"case {side} tiled={tiled} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        side, tiled, device, dtype, tile = sys.argv[2:7]
        child(int(side), tiled == "1", device, dtype, int(tile))
        return
    ap = parser(__doc__)
    ap.add_argument("--sides", type=int, nargs="+", default=[256, 512, 1024], help="decoded picture sides")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--dtype", default="fp32", choices=tuple(DTYPE_BYTES))
    ap.add_argument("--tile", type=int, default=256, help="the tiled decode's tile side in pixels")
    args = ap.parse_args()
    sides, tile = ([64, 128], 64) if args.tiny else (args.sides, args.tile)
    cases = [run_case(side, tiled, args.device, args.dtype, tile) for side in sides for tiled in (False, True)]
    for case in cases:
        case["bytes_per_pixel"] = round(case["peak_bytes"] / (case["side"] ** 2), 1)
        case["peak_mib"] = round(case["peak_bytes"] / 2**20, 1)
    print(table(["side", "tiled", "peak MiB", "bytes / px", "seconds"],
                [[c["side"], c["tiled"], c["peak_mib"], c["bytes_per_pixel"], round(c["seconds"], 2)] for c in cases]))
    untiled = [c["bytes_per_pixel"] for c in cases if not c["tiled"]]
    fp32_equivalent = round(max(untiled) * 4 / DTYPE_BYTES[args.dtype], 1) if untiled else None
    print(f"\nlargest untiled bytes per output pixel: {max(untiled)} ({args.dtype}); fp32 equivalent {fp32_equivalent}")
    write_json("vae_tiling", {"benchmark": "vae_tiling", "tiny": args.tiny, "machine": machine(),
                              "setup": {"device": args.device, "dtype": args.dtype, "tile": tile, "sides": sides},
                              "cases": cases, "untiled_bytes_per_pixel_max": max(untiled),
                              "fp32_bytes_per_pixel": fp32_equivalent}, Path(args.results_dir))


if __name__ == "__main__":
    main()
