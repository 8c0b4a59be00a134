"""LoRAs merged into the weights: what a generation with one costs, how long applying and changing them takes,
how much memory they add, and whether the weights come back bit for bit.

One SD 1.5-shaped single file: the real-size one (2.1 GB of random fp16 weights, built once into the bench
cache) or, with ``--tiny``, the tiny random model; the runtime's default precision on the CPU. Two LoRAs in
kohya's layout at the real shapes (rank 64, fp16, every attention and feed-forward layer of the UNet and the
text encoder, random factors), written by ``sdlocal.engine.networks.lora_synthetic``. Through the engine, as
``<lora:name:w>`` tags in the prompt:

- memory: resident memory after a run without LoRAs, then after a run with one (target: grows by no more than
  the LoRA file);
- apply: the first apply, a change of weight, a swap to the other LoRA, both at once, and back to none, each
  timed on its own, then ``--changes`` changes of the set in a row (target: each under 1 s on the CPU);
- exact: the pixels of a run without LoRAs before any LoRA, and again after all those changes (target: equal);
- speed: runs with one LoRA and without, interleaved; the generation time excludes the apply (target: with /
  without <= 1.03, the LoRA adds no work per step).

    python bench/loras.py [--runs 5] [--size 256] [--steps 4] [--changes 50] [--tiny]
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

_common.setup()


def _models(folder: Path, tiny: bool) -> tuple[Path, Any]:
    """The checkpoint file and models whose shapes the LoRAs are written for (meta models at real size)."""
    from sdlocal.engine.streaming import build_meta_models

    checkpoints = folder / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True)
    if tiny:
        from sdlocal.engine.synthetic import save_tiny_model

        path = save_tiny_model(checkpoints / "tiny-sd1.safetensors", family="sd1", fmt="safetensors")
        return Path(path), None
    source = _common.realsize_sd15()
    path = checkpoints / source.name
    os.symlink(source, path)
    return path, build_meta_models(_common.SD1_CONFIG)


def _write_loras(engine: Any, folder: Path, meta: Any, rank: int) -> list[Path]:
    from types import SimpleNamespace

    from sdlocal.engine.networks.lora_synthetic import write_lora

    models = meta if meta is not None else engine._load_entry(engine._default_entry())[0].pipe
    if isinstance(models, dict):
        models = SimpleNamespace(**{"text_encoder_2": None, **models})
    loras = folder / "models" / "Lora"
    loras.mkdir(parents=True, exist_ok=True)
    return [write_lora(models, loras / f"bench-{i}.safetensors", fmt="lora", rank=rank, seed=i, scale=0.5)
            for i in (1, 2)]


def _rss_now() -> float:
    from sdlocal.engine.loader import free_memory

    gc.collect()
    free_memory()
    return _common.rss_mib()


def main() -> int:
    ap = _common.parser(__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--changes", type=int, default=50)
    args = ap.parse_args()
    if args.tiny:
        args.runs, args.size, args.steps, args.changes = 2, 64, 2, 6
    import numpy as np

    from sdlocal.engine import Engine, EngineConfig, GenerationRequest

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _path, meta = _models(folder, args.tiny)
        engine = Engine(EngineConfig(data_dir=folder))
        engine.load()
        files = _write_loras(engine, folder, meta, rank=4 if args.tiny else 64)
        file_mib = [round(f.stat().st_size / 2**20, 1) for f in files]
        print(f"LoRA files: {', '.join(f'{f.name} {s} MiB' for f, s in zip(files, file_mib, strict=True))}",
              flush=True)

        def request(prompt: str) -> Any:
            return GenerationRequest.build(prompt=f"a lighthouse on a cliff {prompt}", negative_prompt="blurry",
                                           steps=args.steps, width=args.size, height=args.size, seed=1234,
                                           sampler="Euler", cfg_scale=7.0)

        def run(prompt: str) -> Any:
            result = engine.generate(request(prompt))
            assert not result.warnings, result.warnings
            return result

        before = np.asarray(run("").images[0].image)
        rss_without = _rss_now()
        run("<lora:bench-1:0.8>")
        rss_with = _rss_now()

        loaded = engine._load_entry(engine._default_entry())[0]

        def apply(prompt: str) -> float:
            started = time.perf_counter()
            engine._activate_networks(loaded, request(prompt))
            return time.perf_counter() - started

        steps = {"restore to none": apply(""), "first apply (1 LoRA)": apply("<lora:bench-1:1>"),
                 "change weight": apply("<lora:bench-1:0.5>"), "swap LoRA": apply("<lora:bench-2:0.7>"),
                 "add a second": apply("<lora:bench-2:0.7> <lora:bench-1:0.3>"), "back to none": apply("")}
        sets = ["<lora:bench-1:{w}>", "<lora:bench-2:{w}>", "<lora:bench-1:{w}> <lora:bench-2:0.4>", ""]
        changes = [apply(sets[i % len(sets)].format(w=round(0.2 + 0.1 * (i % 7), 1))) for i in range(args.changes)]
        apply("")
        after = np.asarray(run("").images[0].image)
        identical = bool(np.array_equal(before, after))

        times = _common.interleave({"without LoRA": lambda: run("").timings["generate"],
                                    "with 1 LoRA": lambda: run("<lora:bench-1:0.8>").timings["generate"]},
                                   runs=args.runs, warmup=1)

    without, with_lora = _common.summary(times["without LoRA"]), _common.summary(times["with 1 LoRA"])
    speed_ratio = _common.ratio(with_lora["median"], without["median"])
    rows = [["generation without LoRA (s)", without["median"], without["min"], "-"],
            ["generation with 1 LoRA (s)", with_lora["median"], with_lora["min"], f"ratio {speed_ratio} (<= 1.03)"]]
    rows += [[f"apply: {name} (s)", round(value, 3), "-", "< 1 s"] for name, value in steps.items()]
    change = _common.summary(changes)
    rows.append([f"apply: {args.changes} changes of set (s)", change["median"], change["min"],
                 f"max {change['max']} (< 1 s)"])
    rows.append(["resident memory growth (MiB)", round(rss_with - rss_without, 1), "-",
                 f"LoRA file {file_mib[0]} MiB"])
    rows.append(["pixels after the changes equal before", str(identical), "-", "True"])
    print(_common.table(["measure", "median", "min", "target"], rows))
    _common.write_json("loras", {
        "benchmark": "loras", "tiny": args.tiny, "machine": _common.machine(),
        "settings": {"size": args.size, "steps": args.steps, "runs": args.runs, "changes": args.changes,
                     "rank": 4 if args.tiny else 64},
        "lora_file_mib": file_mib, "generation": {"without": without, "with": with_lora, "ratio": speed_ratio},
        "apply_seconds": {name: round(value, 4) for name, value in steps.items()}, "changes": change,
        "rss_mib": {"without": round(rss_without, 1), "with": round(rss_with, 1),
                    "growth": round(rss_with - rss_without, 1)},
        "identical_after_changes": identical,
    }, args.results_dir)
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
