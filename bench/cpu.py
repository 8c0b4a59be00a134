"""CPU generation: sdlocal's defaults against plain diffusers on a real-size SD 1.5 single file.

The file is 2.1 GB of random fp16 weights at SD 1.5's shapes in the original layout, built once into the
bench cache (``$SDLOCAL_BENCH_CACHE`` or ``<tmp>/sdlocal-bench``); speed does not depend on the values.
Configurations, each run in its own process so that its peak RSS (``ru_maxrss``) is its own (``--tiny`` runs
them all in one process):

- diffusers fp32: ``StableDiffusionPipeline.from_single_file(file, config=sdlocal/engine/configs/sd1)``,
  ``EulerDiscreteScheduler``, a seeded CPU generator, PIL output;
- sdlocal <precision>: ``Engine.generate`` with precision ``auto`` (fp32 on a CPU without native bf16,
  bf16 with it) and, where the CPU has native bf16 or ``--precisions`` asks, ``bf16``;
- sdlocal auto + ToMe r: token merging (tomesd) through the request's ``token_merging_ratio``.

Each process loads the model, warms up (64x64, 1 step), then times one image per size (Euler, 2 steps, CFG 7,
seed 1234). Rounds are interleaved (every configuration once per round) so load drift on a shared machine
hits all of them, and the order rotates each round: with a fixed order ``sdlocal auto`` always ran right after
the diffusers process (6.3 GiB peak) and ``sdlocal bf16`` after it, a place effect that the same configuration
cannot tell from a speed difference; the figures are medians and minimums over rounds, and sdlocal/diffusers
ratios of both.
bf16 on a CPU without native bf16 is emulated (10-20x slower): it runs only at sizes up to 256 there.

    python bench/cpu.py [--sizes 256 512] [--runs 3] [--precisions auto bf16] [--tome 0.3 0.5] [--tiny]
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    SD1_CONFIG,
    cache_dir,
    machine,
    parser,
    peak_rss_mib,
    ratio,
    realsize_sd15,
    rss_mib,
    setup,
    summary,
    table,
    write_json,
)

MARK = "CPU-BENCH-RESULT "
SEED = 1234
PROMPT = "a watercolour of a harbour town at sunrise"
EMULATED_BF16_MAX_SIDE = 256


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Load one configuration, warm up, time one image per size; returns seconds and memory."""
    setup()
    import torch

    from sdlocal.engine.loader import quiet_libraries

    quiet_libraries()
    model = Path(spec["model"])
    if spec.get("tiny") and not model.is_file():  # --tiny: made here, in a process that imports torch anyway
        from sdlocal.engine.synthetic import save_tiny_model

        save_tiny_model(model, "sd1", "safetensors")
    started = time.perf_counter()
    if spec["side"] == "diffusers":
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_single_file(
            str(model), config=spec["config"], dtype=torch.float32, local_files_only=True, safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        precision = "fp32"

        def generate(side: int, steps: int) -> None:
            pipe(prompt=PROMPT, negative_prompt="", num_inference_steps=steps, guidance_scale=7.0, height=side,
                 width=side, generator=torch.Generator("cpu").manual_seed(SEED))
    else:
        from sdlocal.engine import Engine, EngineConfig, GenerationRequest

        engine = Engine(EngineConfig(data_dir=Path(spec["data_dir"]), models_dirs=[model.parent], device="cpu",
                                     precision=spec["precision"]))
        catalog = engine._get_catalog()
        if hasattr(catalog, "wait_for_hashes"):
            catalog.wait_for_hashes(1800)  # background hashing reads whole files: not while timing
        started = time.perf_counter()
        engine.load(model.stem)
        precision = engine.capabilities().precision

        def generate(side: int, steps: int) -> None:
            engine.generate(GenerationRequest(prompt=PROMPT, steps=steps, width=side, height=side, seed=SEED,
                                              sampler="Euler", cfg_scale=7.0, model=model.stem,
                                              token_merging_ratio=spec["tome"]))
    load = time.perf_counter() - started
    rss_loaded = rss_mib()
    generate(64, 1)  # warm-up: one-time kernel set-up is not part of any figure
    seconds = {}
    for side in spec["sizes"]:
        started = time.perf_counter()
        generate(side, spec["steps"])
        seconds[str(side)] = time.perf_counter() - started
    return {"load_s": round(load, 2), "seconds": seconds, "precision": precision,
            "rss_after_load_mib": round(rss_loaded, 1), "peak_rss_mib": round(peak_rss_mib(), 1)}


def run_child(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run configurations one after another in a new process (one each, for their own peak RSS, unless --tiny)."""
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(specs)], capture_output=True, text=True,
                          timeout=7200)
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    names = ", ".join(spec["name"] for spec in specs)
    raise RuntimeError(f"{names} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    ap.add_argument("--runs", type=int, default=3, help="interleaved rounds; each configuration once per round")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--precisions", nargs="+", choices=["auto", "fp32", "bf16", "fp16"],
                    help="sdlocal precisions to run (default: auto, plus bf16 where the CPU has it natively)")
    ap.add_argument("--tome", nargs="*", type=float, default=[0.3, 0.5], help="token merging ratios (sdlocal auto)")
    ap.add_argument("--child", help="(internal) run one configuration")
    args = ap.parse_args()
    if args.child:
        print(MARK + json.dumps([child(spec) for spec in json.loads(args.child)]), flush=True)
        return 0
    setup()
    from sdlocal.engine.devices import cpu_name, cpu_native_bf16, read_cpu_flags

    native, why = cpu_native_bf16(read_cpu_flags(), platform.machine())
    print(f"CPU: {cpu_name()}; {why}")
    precisions = args.precisions or (["auto", "bf16"] if native else ["auto"])
    if args.tiny:
        args.sizes, args.runs, args.tome = [64], 1, [0.5]

    with tempfile.TemporaryDirectory() as scratch:
        if args.tiny:
            from sdlocal.engine.loader import sidecar_config_dir

            model = Path(scratch) / "models" / "tiny-sd15.safetensors"
            config, data_dir = sidecar_config_dir(model), Path(scratch) / "data"
        else:
            model, config, data_dir = realsize_sd15(0, cache_dir() / "models"), SD1_CONFIG, cache_dir() / "data"
        base = {"model": str(model), "config": str(config), "data_dir": str(data_dir), "steps": args.steps,
                "tome": 0.0, "tiny": args.tiny}
        specs = [{**base, "name": "diffusers fp32", "side": "diffusers", "precision": "fp32", "sizes": args.sizes}]
        for precision in precisions:
            sizes = args.sizes
            if precision == "bf16" and not native:
                sizes = [s for s in args.sizes if s <= EMULATED_BF16_MAX_SIDE]
                if not sizes:
                    print(f"sdlocal bf16 skipped: {why}, and emulated bf16 runs only up to {EMULATED_BF16_MAX_SIDE}")
                    continue
            specs.append({**base, "name": f"sdlocal {precision}", "side": "sdlocal", "precision": precision,
                          "sizes": sizes})
        for ratio_value in args.tome:
            specs.append({**base, "name": f"sdlocal auto + ToMe {ratio_value}", "side": "sdlocal",
                          "precision": "auto", "tome": ratio_value, "sizes": args.sizes})
        runs: dict[str, list[dict[str, Any]]] = {spec["name"]: [] for spec in specs}
        # --tiny checks the script works: all configurations share one process there (one import, not four).
        groups = [specs] if args.tiny else [[spec] for spec in specs]
        for round_index in range(args.runs):
            shift = round_index % len(groups)  # each configuration takes every place in the order (see docstring)
            for group in groups[shift:] + groups[:shift]:
                for spec, result in zip(group, run_child(group), strict=True):
                    runs[spec["name"]].append(result)
                    print(f"  round {round_index + 1}: {spec['name']:28s} " + ", ".join(
                        f"{s}px {t:.2f} s" for s, t in result["seconds"].items()), flush=True)

    figures: dict[str, Any] = {}
    for spec in specs:
        name = spec["name"]
        figures[name] = {
            "precision": runs[name][0]["precision"], "token_merging_ratio": spec["tome"],
            "seconds": {str(s): summary([r["seconds"][str(s)] for r in runs[name]], 3) for s in spec["sizes"]},
            "load_s": summary([r["load_s"] for r in runs[name]], 2),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs[name]),
            "rss_after_load_mib": max(r["rss_after_load_mib"] for r in runs[name]),
        }
    reference = figures["diffusers fp32"]["seconds"]
    rows = []
    for name, fig in figures.items():
        for size, stats in fig["seconds"].items():
            ref = reference.get(size)
            fig.setdefault("vs_diffusers", {})[size] = {"median": ratio(stats["median"], ref and ref["median"]),
                                                        "min": ratio(stats["min"], ref and ref["min"])}
            rows.append([name, fig["precision"], f"{size}x{size}", stats["median"], stats["min"],
                         fig["vs_diffusers"][size]["median"], fig["vs_diffusers"][size]["min"],
                         round(fig["peak_rss_mib"] / 1024, 2)])
    print(f"\n{'tiny model' if args.tiny else 'real-size SD 1.5 (random weights)'}, Euler, {args.steps} steps, "
          f"CFG 7, {args.runs} interleaved round(s), seconds per image")
    print(table(["configuration", "dtype", "size", "median s", "min s", "median/diffusers", "min/diffusers",
                 "peak RSS GiB"], rows))
    write_json("cpu", {"benchmark": "cpu", "tiny": args.tiny, "machine": machine(), "cpu_native_bf16": native,
                       "cpu_bf16_reason": why, "setup": {"sizes": args.sizes, "steps": args.steps,
                                                         "runs": args.runs, "sampler": "Euler", "cfg": 7.0},
                       "rss_per_configuration": not args.tiny, "configurations": figures, "raw": runs},
               args.results_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
