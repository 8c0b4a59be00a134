"""What every benchmark script shares: offline set-up, statistics, the printed table, the JSON file, machine facts.

Timings on shared machines are noisy, so the scripts interleave the things they compare, repeat them, and report
medians, minimums and ratios; nothing here judges a time as good or bad. Each script writes
``bench/results/<name>.json`` (git-ignored) or, with ``--results-dir``, a folder of the caller's choosing (the
smoke tests use a temporary one).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
SD1_CONFIG = ROOT / "sdlocal" / "engine" / "configs" / "sd1"


def setup() -> None:
    """No Hub, no analytics, sdlocal importable from the checkout. Call before anything imports diffusers."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the options every script has: ``--tiny`` and ``--results-dir``."""
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true",
                    help="reduced sizes and runs: checks the script works (what the smoke tests run), not a figure")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                    help=f"where the JSON goes (default {RESULTS_DIR})")
    return ap


def summary(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """Median, minimum and maximum of a list of timings, with the raw runs, rounded for reading."""
    values = list(values)
    if not values:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "runs": [round(v, digits) for v in values]}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def interleave(calls: dict[str, Callable[[], float]], runs: int, warmup: int = 1) -> dict[str, list[float]]:
    """Call each function in turn, ``runs`` rounds after ``warmup`` rounds, so load drift hits all of them alike.

    Each call returns the seconds it measured itself (so set-up outside the timed part is not counted).
    """
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            times[name].append(call())
    return times


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: numbers right-aligned, floats with three decimals, None as a dash."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}"
        return str(value)

    text = [[str(h) for h in headers]] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(line[i]) for line in text) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)

    return "\n".join([line(text[0]), "  ".join("-" * w for w in widths), *(line(row) for row in text[1:])])


def machine() -> dict[str, Any]:
    """The facts a figure needs beside it: date, CPU and its bf16 support, cores, GPU (if any), library versions.

    Cheap: versions come from package metadata, so a parent process that only starts children does not pay for
    importing torch; the GPU is named when torch is already imported (the scripts that use a GPU import it).
    """
    setup()
    from importlib.metadata import PackageNotFoundError, version

    from sdlocal.engine.devices import cpu_name, cpu_native_bf16, read_cpu_flags

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    native, why = cpu_native_bf16(read_cpu_flags(), platform.machine())
    torch = sys.modules.get("torch")
    gpu = torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else None
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_name(),
        "cpu_native_bf16": native,
        "cpu_bf16_reason": why,
        "cores": os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": installed("torch"),
        "diffusers": installed("diffusers"),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "SDLOCAL_BENCH_CACHE")
                if k in os.environ},
    }


def write_json(name: str, payload: dict[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")
    return path


def rss_mib() -> float:
    """This process's resident memory now (Linux /proc; psutil elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        import psutil

        return psutil.Process().memory_info().rss / 2**20


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def cache_dir() -> Path:
    """Where real-size random models are kept between runs: $SDLOCAL_BENCH_CACHE or <tmp>/sdlocal-bench."""
    folder = Path(os.environ.get("SDLOCAL_BENCH_CACHE") or Path(tempfile.gettempdir()) / "sdlocal-bench")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def realsize_sd15(seed: int = 0, folder: Path | None = None) -> Path:
    """A cached 2.1 GB random-weight SD 1.5 single file (original layout); built once, about a minute."""
    setup()
    import hashlib

    from sdlocal.engine.synthetic import build_realsize_sd15_file

    # Named after the code that writes it, so a change to the layout code builds a fresh file instead of loading
    # a stale one; older builds of the same seed are removed (2.1 GB each).
    engine = ROOT / "sdlocal" / "engine"
    stamp = hashlib.sha256(b"".join((engine / f).read_bytes() for f in ("synthetic.py", "ldm_layout.py"))).hexdigest()
    folder = folder or cache_dir()
    path = folder / f"random-sd15-seed{seed}-{stamp[:8]}.safetensors"
    if not path.is_file():
        for old in folder.glob(f"random-sd15-seed{seed}-*.safetensors"):
            old.unlink()
        print(f"building {path} (2.1 GB of random fp16 weights at SD 1.5 shapes, once)...", flush=True)
        build_realsize_sd15_file(path, seed=seed)
    return path


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter to the current RSS (Linux ``clear_refs``), so the peak measured next is
    that step's own; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def prepare_sd15(realsize: bool, scratch: Path) -> tuple[Path, Path, Path]:
    """(model file, diffusers config folder, sdlocal data dir) for the SD 1.5-shaped benches: the cached real-size
    file, or the tiny model made in ``scratch``."""
    setup()
    if realsize:
        return realsize_sd15(0, cache_dir() / "models"), SD1_CONFIG, cache_dir() / "data"
    from sdlocal.engine.families import sidecar_config_dir
    from sdlocal.engine.synthetic import save_tiny_model

    model = save_tiny_model(scratch / "models" / "tiny-sd15.safetensors", "sd1", "safetensors")
    return model, sidecar_config_dir(model), scratch / "data"
