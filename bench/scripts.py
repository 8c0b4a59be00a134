"""A 3x3 X/Y/Z plot against the same 9 requests run one by one: what the grid adds beyond its cells.

A grid is planned into ordinary requests and run cell by cell on the same engine, so it should cost its nine
single runs plus the drawing. Both sides here run the same nine requests (Seed 1, 2, 3 across, CFG Scale 5,
7, 9 down; Euler): ``grid`` is ``run_plan`` of the X/Y/Z plan (cells, then the labelled grid drawn),
``singles`` is ``engine.generate`` of each of the plan's cell requests in turn. Interleaved, after one warm-up
image, the order swapped every round; the ratio is of the medians, the drawing time is the runner's own
``timings["grid"]``, and what the grid run spends beyond its cells' own ``generate`` timings and the drawing is
reported too (the runner's own cost, free of the round-to-round noise). The cells' pictures are compared
with the single runs' (they are the same requests, so they should be equal). Then the drawing alone of a
10x10 grid of 512x512 cells with both legends (the large-grid case; no model involved).

One SD 1.5-shaped single file: the tiny random model (default) or, with ``--real``, the real-size file (2.1 GB
of random fp16 weights, built once into the bench cache), fp32 on the CPU.

    python bench/scripts.py [--real] [--runs 3] [--steps 2] [--size 128] [--device cpu|cuda] [--tiny]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from _common import interleave, machine, parser, prepare_sd15, ratio, summary, table, write_json

PROMPT = "a lighthouse on a cliff at dusk"
SEEDS, CFGS = "1, 2, 3", "5, 7, 9"


def plan_for(engine: Any, model: str, size: int, steps: int) -> Any:
    """The 3x3 plan: Seed across, CFG Scale down, A1111's 18 positional arguments."""
    from sdlocal.engine import GenerationRequest
    from sdlocal.scripts import plan_script
    from sdlocal.scripts.axes import axes_for
    from sdlocal.scripts.plan import ScriptContext

    labels = [axis.label for axis in axes_for(False)]
    args = [labels.index("Seed"), SEEDS, [], labels.index("CFG Scale"), CFGS, [], 0, "", [],
            True, False, False, False, False, False, False, 0, False]
    base = GenerationRequest(prompt=PROMPT, steps=steps, width=size, height=size, seed=1, sampler="Euler",
                             cfg_scale=7.0, model=model)
    return plan_script("x/y/z plot", base, args, ScriptContext(engine=engine, current_model=model))


def draw_large(runs: int) -> dict[str, Any]:
    """Seconds to draw a labelled 10x10 grid of 512x512 cells (the pictures made beforehand, not timed)."""
    from PIL import Image

    from sdlocal.scripts.grid import draw_grid
    from sdlocal.scripts.plan import Label

    cells = [Image.new("RGB", (512, 512), (i * 2, 100, 255 - i * 2)) for i in range(100)]
    x_labels = [[Label(f"Seed: {1000 + i}")] for i in range(10)]
    y_labels = [[Label(f"Prompt S/R: a much longer replacement phrase number {i} that has to wrap")]
                for i in range(10)]
    times, size = [], (0, 0)
    for _ in range(runs):
        started = time.perf_counter()
        size = draw_grid(cells, 10, 10, (512, 512), x_labels, y_labels, margin=4).size
        times.append(time.perf_counter() - started)
    return {"seconds": summary(times), "size": list(size)}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--real", action="store_true", help="the real-size SD 1.5 file instead of the tiny one")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--size", type=int, default=128, help="each cell's side")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = ap.parse_args()
    real = args.real and not args.tiny
    runs, size, steps = (1, 64, 2) if args.tiny else (args.runs, args.size, args.steps)
    with tempfile.TemporaryDirectory() as scratch:
        model, _, data_dir = prepare_sd15(real, Path(scratch))
        import numpy as np
        import torch

        from sdlocal.engine import Engine, EngineConfig
        from sdlocal.scripts.runner import run_plan

        precision = "fp16" if args.device == "cuda" else "fp32"
        engine = Engine(EngineConfig(data_dir=data_dir, models_dirs=[model.parent], device=args.device,
                                     precision=precision))
        engine.load(model.stem)
        plan = plan_for(engine, model.stem, size, steps)
        requests = [cell.request for cell in plan.cells]

        def synced() -> None:
            if args.device == "cuda":
                torch.cuda.synchronize()

        pictures: dict[str, list[Any]] = {}
        drawing: list[float] = []
        overhead: list[float] = []  # the grid run's seconds beyond its cells' own generate timings and the drawing

        def grid_call() -> float:
            started = time.perf_counter()
            result = run_plan(engine, plan)
            synced()
            seconds = time.perf_counter() - started
            drawing.append(result.timings["grid"])
            overhead.append(seconds - result.timings["generate"] - result.timings["grid"])
            pictures["grid"] = [cell.images[0].image for cell in result.cells]
            return seconds

        def singles_call() -> float:
            started = time.perf_counter()
            pictures["singles"] = [engine.generate(request).images[0].image for request in requests]
            synced()
            return time.perf_counter() - started

        engine.generate(requests[0])  # warm-up: first-call costs belong to neither side
        times: dict[str, list[float]] = {"grid": [], "singles": []}
        for round_ in range(runs):  # grid first in even rounds, singles first in odd ones: no side owns a place
            calls = {"grid": grid_call, "singles": singles_call}
            order = list(calls) if round_ % 2 == 0 else list(reversed(calls))
            for name, values in interleave({name: calls[name] for name in order}, 1, warmup=0).items():
                times[name] += values
        difference = max(int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())
                         for a, b in zip(pictures["grid"], pictures["singles"], strict=True))
    report(args, real, size, steps, runs, times, drawing, overhead, difference, draw_large(3 if not args.tiny else 1))


def report(args: Any, real: bool, size: int, steps: int, runs: int, times: dict[str, list[float]],
           drawing: list[float], overhead: list[float], difference: int, large: dict[str, Any]) -> None:
    """The printed table and the JSON file."""
    seconds = {name: summary(values) for name, values in times.items()}
    seconds["grid drawing"] = summary(drawing)
    seconds["grid run beyond its cells and drawing"] = summary(overhead)
    extra = [g - s for g, s in zip(times["grid"], times["singles"], strict=True)]
    grid_ratio = ratio(seconds["grid"]["median"], seconds["singles"]["median"])
    print(table(["path", "median s", "min s", "max s"],
                [[name, s["median"], s["min"], s["max"]] for name, s in seconds.items()]))
    print(f"\n3x3 grid / 9 single runs (median): {grid_ratio}; grid minus singles per round: "
          f"{', '.join(f'{e:+.3f}' for e in extra)} s; cell pictures vs single runs: max difference {difference}")
    print(f"drawing a labelled 10x10 grid of 512x512 cells ({large['size'][0]}x{large['size'][1]}): "
          f"median {large['seconds']['median']} s")
    write_json("scripts", {
        "benchmark": "scripts", "tiny": args.tiny, "machine": machine(),
        "setup": {"model": "real-size SD 1.5" if real else "tiny", "size": size, "steps": steps, "runs": runs,
                  "cells": 9, "x": f"Seed: {SEEDS}", "y": f"CFG Scale: {CFGS}", "sampler": "Euler",
                  "device": args.device},
        "seconds": seconds, "grid_minus_singles_s": summary(extra),
        "ratios_vs_singles": {"grid": grid_ratio},
        "image_difference": {"max": difference},
        "draw_10x10_512": large,
    }, args.results_dir)


if __name__ == "__main__":
    main()
