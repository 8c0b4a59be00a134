"""Model switching: first load, switch to another model, switch back; and memory given back on eviction.

Two real-size SD 1.5 single files (random fp16 weights, 2.1 GB each, built once into the bench cache; ``--tiny``
uses two tiny models) in one models folder. Each scenario runs in its own process, so its memory figures are its
own:

- ``cache2`` (``max_loaded_models=2``): load A (first load), switch to B, back to A, to B again. Target: a
  switch back to a cached model takes at most 1/10 of the first load.
- ``cache1`` (``max_loaded_models=1``): load A, switch to B (A is evicted first), back to A (evicted, so it
  loads again), then ``unload_all``; resident memory (RSS) after each step, after ``gc.collect()``, shows the
  evicted model's memory is given back, and the peak (``ru_maxrss``) shows two models never sit in memory at
  once.

Model hashes are computed (and cached in the bench data folder) before anything is timed, and by default the
files are dropped from the OS page cache first (``posix_fadvise(DONTNEED)``, per file, no root needed), so the
first load reads from disk; ``--warm`` keeps whatever the page cache holds. Engine: CPU, precision auto.

    python bench/switching.py [--tiny] [--warm] [--runs 1]
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import cache_dir, machine, parser, peak_rss_mib, ratio, realsize_sd15, rss_mib, setup, table, write_json

MARK = "SWITCHING-RESULT "


def drop_page_cache(path: Path) -> bool:
    """Ask the OS to forget this file's cached pages (Linux/BSD); False where that is not possible."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def malloc_trim() -> bool:
    """Hand glibc's free heap pages back to the OS (Linux): tells memory still in use from memory kept for reuse."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def child(scenario: str, models_dir: Path, data_dir: Path, cold: bool, tiny: bool = False) -> dict[str, Any]:
    """One scenario in this (fresh) process; returns its timings and memory figures."""
    setup()
    if tiny:
        save_tiny_models(models_dir)
    from sdlocal.engine import Engine, EngineConfig

    memory: list[dict[str, Any]] = []

    def note(step: str) -> None:
        gc.collect()
        memory.append({"step": step, "rss_mib": round(rss_mib(), 1), "peak_rss_mib": round(peak_rss_mib(), 1)})

    note("start")
    engine = Engine(EngineConfig(data_dir=data_dir, models_dirs=[models_dir], device="cpu",
                                 max_loaded_models=2 if scenario == "cache2" else 1))
    names = sorted(e.name for e in engine.models() if e.supported)
    if len(names) != 2:
        raise SystemExit(f"expected two models in {models_dir}, found {names}")
    catalog = engine._get_catalog()
    if hasattr(catalog, "wait_for_hashes"):
        catalog.wait_for_hashes(1800)  # hashing reads the whole file: done (and cached) before the clock starts
    for entry in engine.models():
        engine._ensure_hash(entry)
    dropped = all(drop_page_cache(Path(e.path)) for e in engine.models()) if cold else False
    # Imported before the first timing so that no step pays for importing the libraries (seconds, once).
    import diffusers.loaders.single_file_utils  # noqa: F401
    from diffusers import StableDiffusionPipeline  # noqa: F401
    from transformers import CLIPTextModel  # noqa: F401

    note("before the first load")
    a, b = names
    steps = [("first load A", a), ("switch to B", b), ("back to A", a), ("back to B", b)]
    timings: list[dict[str, Any]] = []
    for label, name in steps:
        started = time.perf_counter()
        engine.load(name)
        seconds = time.perf_counter() - started
        timings.append({"step": label, "model": name, "seconds": round(seconds, 3),
                        "loaded": list(engine._cache.keys()) if engine._cache is not None else []})
        note(f"after {label}")
    engine.unload_all()
    note("after unload_all")
    if malloc_trim():
        note("after malloc_trim(0)")
    return {"scenario": scenario, "cold_first_load": dropped, "timings": timings, "memory": memory,
            "peak_rss_mib": round(peak_rss_mib(), 1), "models": names,
            "precision": engine.capabilities().precision}


def run_child(scenario: str, models_dir: Path, data_dir: Path, cold: bool, tiny: bool) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", scenario, "--models-dir", str(models_dir), "--data-dir",
               str(data_dir)] + ([] if cold else ["--warm"]) + (["--tiny"] if tiny else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"the {scenario} run failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def save_tiny_models(folder: Path) -> None:
    """Two tiny models (different seeds) for --tiny; made by the first child, which imports torch anyway."""
    from sdlocal.engine.synthetic import save_tiny_model

    for seed, name in ((0, "model-a"), (1, "model-b")):
        if not (folder / f"{name}.safetensors").is_file():
            save_tiny_model(folder / f"{name}.safetensors", "sd1", "safetensors", seed=seed)


def prepare_models(tiny: bool, scratch: Path) -> Path:
    """The models folder: ``scratch/models`` (the tiny models are made there by the first child), or two cached
    real-size files."""
    if tiny:
        return scratch / "models"
    folder = cache_dir() / "models"
    for seed in (0, 1):
        realsize_sd15(seed, folder)
    return folder


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--runs", type=int, default=1, help="rounds of both scenarios (each a fresh process)")
    ap.add_argument("--warm", action="store_true", help="do not drop the model files from the page cache first")
    ap.add_argument("--child", choices=["cache1", "cache2"], help=argparse_hidden())
    ap.add_argument("--models-dir", type=Path, help=argparse_hidden())
    ap.add_argument("--data-dir", type=Path, help=argparse_hidden())
    args = ap.parse_args()
    if args.child:
        result = child(args.child, args.models_dir, args.data_dir, cold=not args.warm, tiny=args.tiny)
        print(MARK + json.dumps(result), flush=True)
        return 0

    with tempfile.TemporaryDirectory() as scratch:
        models = prepare_models(args.tiny, Path(scratch))
        data = Path(scratch) / "data" if args.tiny else cache_dir() / "data"
        results: dict[str, list[dict[str, Any]]] = {"cache2": [], "cache1": []}
        for _ in range(args.runs):
            for scenario in results:
                results[scenario].append(run_child(scenario, models, data, cold=not args.warm, tiny=args.tiny))

    rows = []
    for scenario, runs in results.items():
        for run in runs:
            for step, mem in zip(run["timings"], run["memory"][2:2 + len(run["timings"])], strict=True):
                rows.append([scenario, step["step"], step["seconds"], len(step["loaded"]), mem["rss_mib"],
                             mem["peak_rss_mib"]])
    print(f"model switching, {'tiny' if args.tiny else 'real-size SD 1.5 (2.1 GB files)'}, CPU, first load "
          f"{'from the page cache' if args.warm else 'with the files dropped from the page cache'}")
    print(table(["scenario", "step", "seconds", "models loaded", "RSS MiB", "peak RSS MiB"], rows))

    def step_times(scenario: str, label: str) -> list[float]:
        return [next(t["seconds"] for t in run["timings"] if t["step"] == label) for run in results[scenario]]

    first = min(step_times("cache2", "first load A"))
    back = max(step_times("cache2", "back to A"))
    cache1 = results["cache1"][-1]
    mem = {m["step"]: m["rss_mib"] for m in cache1["memory"]}
    released = {
        "rss_before_load_mib": mem["before the first load"],
        "rss_with_A_mib": mem["after first load A"],
        "rss_after_switch_to_B_mib": mem["after switch to B"],
        "rss_after_unload_all_mib": mem["after unload_all"],
        "rss_after_malloc_trim_mib": mem.get("after malloc_trim(0)"),
        "peak_rss_mib": cache1["peak_rss_mib"],
        "cache2_peak_rss_mib": results["cache2"][-1]["peak_rss_mib"],
    }
    one_model = released["rss_with_A_mib"] - released["rss_before_load_mib"]
    released["one_model_mib"] = round(one_model, 1)
    released["after_switch_over_one_model"] = ratio(released["rss_after_switch_to_B_mib"] -
                                                    released["rss_before_load_mib"], one_model)
    released["left_after_unload_mib"] = round(released["rss_after_unload_all_mib"] - released["rss_before_load_mib"], 1)
    trimmed = released["rss_after_malloc_trim_mib"]
    released["left_after_trim_mib"] = None if trimmed is None else round(trimmed - released["rss_before_load_mib"], 1)
    target = {"back_switch_over_first_load": ratio(back, first), "target": 0.1}
    print(f"\nback-switch / first load: {back:.3f} s / {first:.3f} s = {target['back_switch_over_first_load']} "
          f"(target <= 0.1)")
    print(f"max_loaded_models=1: one model adds {one_model:.0f} MiB; after switching A -> B the process holds "
          f"{released['after_switch_over_one_model']}x one model; after unload_all "
          f"{released['left_after_unload_mib']:+.0f} MiB over the start ({released['left_after_trim_mib']} MiB "
          f"after malloc_trim); peak {released['peak_rss_mib']:.0f} MiB "
          f"(max_loaded_models=2: {released['cache2_peak_rss_mib']:.0f} MiB)")
    write_json("switching", {"benchmark": "switching", "tiny": args.tiny, "machine": machine(),
                             "cold_first_load": not args.warm, "runs": results, "target": target,
                             "memory_released": released}, args.results_dir)
    return 0


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    raise SystemExit(main())
