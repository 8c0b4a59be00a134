"""Time the engine on a tiny random model: load, then 64x64 and 256x256 at 20 steps, per precision.

    python bench/engine_tiny.py [--precision fp32 bf16] [--repeat 3]

Numbers are for spotting regressions in the engine's own overhead (loading, scheduling, decoding, previews);
the tiny UNet makes the model's arithmetic negligible. Results print as a table and go to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fmt", default="safetensors", choices=["diffusers", "safetensors", "ckpt"])
    args = parser.parse_args()

    from sdlocal.engine import Engine, EngineConfig, GenerationRequest
    from sdlocal.engine.synthetic import save_tiny_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        name = "tiny-sd1"
        save_tiny_model(models / (name + ("" if args.fmt == "diffusers" else f".{args.fmt}")), "sd1", args.fmt)
        for precision in args.precision:
            engine = Engine(EngineConfig(data_dir=Path(tmp) / precision, models_dirs=[models], device="cpu",
                                         precision=precision))  # type: ignore[arg-type]
            started = time.perf_counter()
            engine.load(name)
            load = time.perf_counter() - started
            for side in (64, 256):
                request = GenerationRequest.build(prompt="a lighthouse", model=name, steps=20, width=side,
                                                  height=side, seed=1, sampler="Euler a")
                engine.generate(request)  # warm-up
                times = [engine.generate(request).timings["generate"] for _ in range(args.repeat)]
                rows.append({"precision": precision, "size": side, "load_s": round(load, 3),
                             "generate_s_median": round(statistics.median(times), 3),
                             "generate_s_min": round(min(times), 3)})
    print(f"{'precision':<10}{'size':>6}{'load s':>9}{'gen s (median)':>16}{'gen s (min)':>13}")
    for row in rows:
        print(f"{row['precision']:<10}{row['size']:>6}{row['load_s']:>9.3f}{row['generate_s_median']:>16.3f}"
              f"{row['generate_s_min']:>13.3f}")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "engine_tiny.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
