"""Resident memory of loading a checkpoint (single file or folder): sdlocal's streaming loader against diffusers.

Each load runs in its own fresh process, so one load's peak does not hide in another's: the child imports the
libraries, notes its resident memory (the baseline), resets the kernel's peak counter (``/proc/self/clear_refs``,
value 5; ``ru_maxrss`` where that is not possible), loads, and reports the peak (VmHWM) and the resident memory
after the load, both above the baseline, beside the loaded model's own size (its parameters and buffers). The
target: a peak at most 1.25x the model above the baseline.

Loaders: ``sdlocal`` is ``loader.load_pipeline`` (what ``sdlocal generate`` runs, placing included) on the CPU;
``diffusers`` is ``from_single_file(file, config=<bundled config>, torch_dtype=...)``, or ``from_pretrained`` for a
folder. Models: SD 1.5 (2.1 GB of random fp16 weights at the real shapes, cached) in fp32, fp16 and bf16; the
same written as a diffusers folder; SDXL (6.9 GB) in fp16 and bf16. The folder and the SDXL file are written for
the run and deleted after it unless ``--keep``. A load is skipped, with the reason, when the machine has less RAM
available than it needs (diffusers' reader: twice the model) or the disk has no room for the file.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402 - the folder has no package; _common also puts sdlocal on the path
    ROOT,
    cache_dir,
    machine,
    parser,
    peak_rss_mib,
    realsize_sd15,
    reset_peak,
    setup,
    table,
    write_json,
)

MARK = "MEMORY-RESULT "
GIB = 2**30
LOADERS = ("sdlocal", "diffusers")
PLAN = {"sd15": ("sd1", ("fp32", "fp16", "bf16")), "sd15-folder": ("sd1", ("fp32", "fp16", "bf16")),
        "sdxl": ("sdxl", ("fp16", "bf16"))}
TINY_PLAN = {"sd15": ("sd1", ("fp32", "fp16")), "sd15-folder": ("sd1", ("fp16",)), "sdxl": ("sdxl", ("fp16",))}
SDXL_FILE_BYTES = 6.94e9
TARGET = 1.25


# ------------------------------------------------------------------------------------------------ child side
def _status() -> dict[str, int]:
    """VmRSS and VmHWM of this process in bytes (Linux), empty elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh
                    if line.startswith(("VmRSS:", "VmHWM:"))}
    except OSError:
        return {}



def _rss_now() -> int:
    from _common import rss_mib

    return int(rss_mib() * 2**20)


def _model_bytes(pipe: Any) -> int:
    total = 0
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        model = getattr(pipe, name, None)
        if model is not None:
            total += sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return total


def _touch(pipe: Any) -> None:
    """Read every weight once (what the first image does), without allocating copies of them."""
    import torch

    with torch.no_grad():
        for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
            model = getattr(pipe, name, None)
            for tensor in () if model is None else (*model.parameters(), *model.buffers()):
                tensor.reshape(-1)[:: max(1, 4096 // tensor.element_size())].sum()  # one element per page


def _on_disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _config_for(path: Path, family: str) -> Path:
    from sdlocal.engine.loader import BUNDLED_CONFIGS, sidecar_config_dir

    sidecar = sidecar_config_dir(path)
    return sidecar if (sidecar / "model_index.json").is_file() else BUNDLED_CONFIGS / family


def _load(loader_name: str, path: Path, family: str, precision: str, scratch: Path) -> Any:
    from sdlocal.engine.devices import torch_dtype
    from sdlocal.engine.loader import load_pipeline, pipeline_class

    if loader_name == "diffusers":
        cls = pipeline_class(family, False)
        extra = {} if family == "sdxl" else {"safety_checker": None, "feature_extractor": None,
                                             "requires_safety_checker": False}
        if path.is_dir():
            return cls.from_pretrained(str(path), torch_dtype=torch_dtype(precision), local_files_only=True, **extra)
        return cls.from_single_file(str(path), config=str(_config_for(path, family)),
                                    torch_dtype=torch_dtype(precision), local_files_only=True, **extra)
    from sdlocal.engine import EngineConfig
    from sdlocal.engine.devices import resolve_runtime
    from sdlocal.engine.models import ModelEntry

    runtime = resolve_runtime(EngineConfig(data_dir=scratch, models_dirs=[path.parent], device="cpu",
                                           precision=precision))
    stat = path.stat()
    sidecar = None if path.is_dir() else _config_for(path, family)
    entry = ModelEntry(name=path.stem, path=path, format="diffusers" if path.is_dir() else "safetensors",
                       family=family, inpainting=False, supported=True, reason="", size=_on_disk(path),
                       mtime=stat.st_mtime, config_dir=sidecar if sidecar and sidecar.parent == path.parent else None)
    return load_pipeline(entry, runtime, scratch / "cache").pipe


def child(loader_name: str, path: Path, family: str, precision: str) -> dict[str, Any]:
    """One load in this fresh process: baseline, peak and after-load memory, and the model's own size."""
    setup()
    import diffusers.loaders.single_file_utils  # noqa: F401 - every import before the baseline
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from sdlocal.engine import streaming  # noqa: F401
    from sdlocal.engine.loader import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory() as scratch:
        gc.collect()
        before = _status().get("VmRSS") or _rss_now()
        reset = reset_peak()
        started = time.perf_counter()
        pipe = _load(loader_name, path, family, precision, Path(scratch))
        seconds = time.perf_counter() - started
        gc.collect()
        status = _status()
        peak = status["VmHWM"] if reset and "VmHWM" in status else int(peak_rss_mib() * 2**20)
        after = status.get("VmRSS") or _rss_now()
        size = _model_bytes(pipe)
        _touch(pipe)  # a reader that maps the file reads its pages only now: count them where they land
        gc.collect()
        touched = _status().get("VmRSS") or _rss_now()
    return {"loader": loader_name, "family": family, "precision": precision, "baseline_mib": round(before / 2**20),
            "peak_above_mib": round((peak - before) / 2**20), "after_above_mib": round((after - before) / 2**20),
            "model_mib": round(size / 2**20), "peak_over_model": round((peak - before) / size, 3),
            "after_over_model": round((after - before) / size, 3), "seconds": round(seconds, 1),
            "touched_above_mib": round((touched - before) / 2**20),
            # sdlocal keeps an fp16 SDXL VAE in fp32 (its config's force_upcast), so that model is a little larger
            "vae_dtype": str(pipe.vae.dtype).removeprefix("torch."),
            "peak_counter_reset": reset}


# ----------------------------------------------------------------------------------------------- parent side
def run_child(loader_name: str, path: Path, family: str, precision: str, tiny: bool) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", loader_name, "--file", str(path), "--family", family,
               "--precision", precision] + (["--tiny"] if tiny else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, cwd=ROOT)
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"{loader_name} {family} {precision} failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                       f"{done.stderr[-4000:]}")


def available_ram() -> int | None:
    setup()
    from sdlocal.engine.fit import available_ram as ram

    return ram()


def skip_reason(loader_name: str, model_bytes: float) -> str | None:
    """Why a load would not fit this machine now (None when it fits): diffusers needs twice the model."""
    need = model_bytes * (2.1 if loader_name == "diffusers" else TARGET) + GIB
    free = available_ram()
    if free is not None and free < need:
        return f"needs about {need / GIB:.1f} GiB of RAM, {free / GIB:.1f} GiB is available"
    return None


def sdxl_file(keep: bool) -> tuple[Path | None, str | None]:
    """The real-size SDXL file (built for the run), or the reason there is none."""
    folder = cache_dir()
    path = folder / "random-sdxl-seed0.safetensors"
    if path.is_file():
        return path, None
    free = shutil.disk_usage(folder).free
    if free < SDXL_FILE_BYTES + 2 * GIB:
        return None, f"SDXL skipped: its 6.9 GB file needs {SDXL_FILE_BYTES / GIB + 2:.1f} GiB free in {folder}, " \
                     f"{free / GIB:.1f} GiB is"
    setup()
    from sdlocal.engine.synthetic import build_realsize_file

    print(f"building {path} (6.9 GB of random fp16 weights at SDXL shapes{', kept' if keep else ''})...", flush=True)
    build_realsize_file(path, "sdxl")
    return path, None


def tiny_files(folder: Path) -> dict[str, Path]:
    setup()
    from sdlocal.engine.synthetic import save_tiny_model

    return {name: save_tiny_model(folder / (f"tiny-{name}" if name.endswith("folder") else f"tiny-{name}.safetensors"),
                                  family, "diffusers" if name.endswith("folder") else "safetensors")
            for name, (family, _) in TINY_PLAN.items()}


def sd15_folder(file: Path) -> Path:
    """The SD 1.5 file as a diffusers folder (2.1 GB), written by a child process that streams the file in."""
    folder = file.with_name(file.stem + "-folder")
    if not (folder / "model_index.json").is_file():
        print(f"writing {folder} (the SD 1.5 file as a diffusers folder)...", flush=True)
        subprocess.run([sys.executable, __file__, "--make-folder", str(file), str(folder)], check=True, cwd=ROOT)
    return folder


def make_folder(file: Path, folder: Path) -> None:
    setup()
    import torch
    from diffusers import StableDiffusionPipeline

    from sdlocal.engine import streaming
    from sdlocal.engine.loader import BUNDLED_CONFIGS

    plan = streaming.plan_single_file(file, BUNDLED_CONFIGS / "sd1", "sd1")
    pipe = streaming.load_planned(plan, StableDiffusionPipeline, torch.float16, extra={
        "safety_checker": None, "feature_extractor": None, "requires_safety_checker": False})
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    pipe.save_pretrained(str(partial), safe_serialization=True)
    partial.rename(folder)


def measure(files: dict[str, Path | None], plan: dict[str, Any], tiny: bool, skipped: list[str]) -> list[dict]:
    rows: list[dict[str, Any]] = []
    for model, (family, precisions) in plan.items():
        path = files.get(model)
        if path is None:
            continue
        for precision in precisions:
            width = 4 if precision == "fp32" else 2
            for loader_name in LOADERS:
                reason = None if tiny else skip_reason(loader_name, _on_disk(path) / 2 * width)
                if reason:
                    skipped.append(f"{model} {precision} {loader_name}: {reason}")
                    print(f"skipped {skipped[-1]}", flush=True)
                    continue
                rows.append({"model": model, **run_child(loader_name, path, family, precision, tiny)})
                print(f"{model} {precision} {loader_name}: peak +{rows[-1]['peak_above_mib']} MiB "
                      f"({rows[-1]['peak_over_model']}x the model)", flush=True)
    return rows


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--models", nargs="+", choices=list(PLAN), default=list(PLAN), help="which models to load")
    ap.add_argument("--keep", action="store_true", help="keep the 6.9 GB SDXL file in the bench cache for a rerun")
    ap.add_argument("--child", choices=LOADERS, help=_hidden())
    ap.add_argument("--file", type=Path, help=_hidden())
    ap.add_argument("--family", help=_hidden())
    ap.add_argument("--precision", help=_hidden())
    ap.add_argument("--make-folder", nargs=2, type=Path, help=_hidden())
    args = ap.parse_args()
    if args.make_folder:
        make_folder(*args.make_folder)
        return 0
    if args.child:
        print(MARK + json.dumps(child(args.child, args.file, args.family, args.precision)), flush=True)
        return 0

    skipped: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        if args.tiny:
            files: dict[str, Path | None] = dict(tiny_files(Path(scratch)))
            plan = TINY_PLAN
        else:
            plan = {name: PLAN[name] for name in args.models}
            files = {"sd15": realsize_sd15()} if {"sd15", "sd15-folder"} & set(plan) else {}
            if "sd15-folder" in plan:
                files["sd15-folder"] = sd15_folder(files["sd15"])
            built = None
            if "sdxl" in plan:
                built, reason = sdxl_file(args.keep)
                files["sdxl"] = built
                if reason:
                    skipped.append(reason)
                    print(reason, flush=True)
        try:
            rows = measure(files, plan, args.tiny, skipped)
        finally:
            if not args.tiny and not args.keep:
                if files.get("sdxl") is not None:
                    files["sdxl"].unlink(missing_ok=True)
                if files.get("sd15-folder") is not None:
                    shutil.rmtree(files["sd15-folder"], ignore_errors=True)

    print(f"\nresident memory of one load, {'tiny models' if args.tiny else 'real-size random-weight files'}, CPU, "
          f"each load in a fresh process (MiB above the process's memory before the load)")
    print(table(["model", "precision", "loader", "model MiB", "peak +MiB", "peak/model", "after +MiB", "after/model",
                 "weights read +MiB", "seconds"],
                [[r["model"], r["precision"], r["loader"], r["model_mib"], r["peak_above_mib"], r["peak_over_model"],
                  r["after_above_mib"], r["after_over_model"], r.get("touched_above_mib"), r["seconds"]]
                 for r in rows]))
    over = [f"{r['model']} {r['precision']}" for r in rows
            if r["loader"] == "sdlocal" and r["peak_over_model"] > TARGET]
    print(f"\ntarget: peak <= {TARGET}x the model above the start; sdlocal over it: {', '.join(over) or 'none'}")
    for line in skipped:
        print(f"skipped: {line}")
    write_json("memory", {"benchmark": "memory", "tiny": args.tiny, "machine": machine(), "target": TARGET,
                          "results": rows, "skipped": skipped}, args.results_dir)
    return 0


def _hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
