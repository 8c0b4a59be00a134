"""What the HTTP API adds to a generation: a 64x64 txt2img through /sdapi/v1/txt2img against the engine call.

A tiny random-weight SD 1.5-shaped model (the speed of the API layer does not depend on the weights), fp32 on
the CPU, 4 steps, Euler. Each figure is the median of ``--runs`` warm runs (after two warm-up runs):

- engine: ``engine.generate(request)`` in this process (on the worker thread, timed there);
- queue: the same request through ``JobQueue.submit(...).wait()`` (the worker thread hand-off);
- api: an HTTP POST over loopback to the real server (uvicorn in a thread of this process), including JSON,
  validation, the queue, PNG encoding with the parameters chunk and base64.

Run: ``HF_HUB_OFFLINE=1 python bench/api_overhead.py [--runs 20]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    import httpx
    import uvicorn

    from sdlocal.api.server import create_app
    from sdlocal.engine import GenerationRequest
    from sdlocal.engine.synthetic import save_tiny_model
    from sdlocal.services import build_services
    from sdlocal.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        save_tiny_model(data / "models" / "Stable-diffusion" / "tiny", family="sd1", fmt="diffusers")
        port = free_port()
        settings = Settings(data_dir=data, port=port, device="cpu", precision="fp32", api=True, nowebui=True)
        services = build_services(settings)
        app = create_app(services, settings)
        services.start_background_load().wait(300)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)

        def request() -> GenerationRequest:
            return GenerationRequest(prompt="a red cube", steps=args.steps, width=64, height=64, seed=1234,
                                     sampler="Euler")

        def engine_call() -> float:
            # On the queue's worker thread, timed there: torch keeps one OpenMP pool per calling thread, and a
            # second pool in the main thread would fight the worker's for the cores and blur the comparison.
            def timed() -> float:
                started = time.perf_counter()
                services.engine.generate(request())
                return time.perf_counter() - started

            return services.queue.submit_call(timed, source="bench").wait(60)

        def queue_call() -> float:
            started = time.perf_counter()
            services.queue.submit(request(), save=False, source="bench").wait(60)
            return time.perf_counter() - started

        body = {"prompt": "a red cube", "steps": args.steps, "width": 64, "height": 64, "seed": 1234,
                "sampler_name": "Euler"}
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        paired: list[float] = []

        def api_call() -> float:
            started = time.perf_counter()
            response = http.post("/sdapi/v1/txt2img", json=body)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            payload = response.json()
            assert len(payload["images"]) == 1
            # The engine's own time for this very request (measured inside generate): the pair's difference
            # is what the HTTP layer, the queue hand-off and the PNG/base64 encoding added.
            paired.append(elapsed - json.loads(payload["info"])["timings"]["total"])
            return elapsed

        calls = (("engine", engine_call), ("queue", queue_call), ("api", api_call))
        results: dict[str, list[float]] = {name: [] for name, _ in calls}
        for _ in range(3):  # warm-up
            for _name, call in calls:
                call()
        paired.clear()
        for _ in range(args.runs):  # interleaved, so drift on a shared machine affects all three alike
            for name, call in calls:
                results[name].append(call())
        http.close()
        server.should_exit = True
        services.close()

    base = statistics.median(results["engine"])
    print(f"64x64, {args.steps} steps, tiny SD1 fp32 CPU, {args.runs} runs each (median / p10-p90):")
    for name, times in results.items():
        ordered = sorted(times)
        p10, p90 = ordered[len(ordered) // 10], ordered[(len(ordered) * 9) // 10]
        median = statistics.median(times)
        print(f"  {name:7s} {median * 1000:7.1f} ms  ({p10 * 1000:.1f}-{p90 * 1000:.1f})  "
              f"overhead vs engine {1000 * (median - base):+6.1f} ms")
    print(f"  api round trip minus the engine's own time for the same request: median "
          f"{statistics.median(paired) * 1000:.1f} ms")
    return 0


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    raise SystemExit(main())
