"""What the Ray Serve cluster adds to a request, and what a result-cache hit costs.

One tiny SD 1.5-shaped model, 64x64, 4 steps, fp32 on the CPU, seed -1 (so nothing is answered from a cache),
POST /sdapi/v1/txt2img, interleaved:

- single: ``sdlocal serve --api --nowebui`` (the production app in a thread of this process);
- cluster: the same route on the cluster's ingress (``sdlocal.cluster.app.bind_app``): a local Ray with two
  logical GPUs (``num_gpus=2`` on this CPU), two generator replicas, the ingress calling them over Ray.

Target: cluster - single <= 30 ms per request (difference of medians). Then the cache: the same request with a
fixed seed, asked again, on one machine (in memory) and on the cluster (in Redis, when ``redis-server`` is
installed): the median latency of a hit.

Throughput with two logical GPUs on two cores is not meaningful (both replicas share the same two cores), so
scaling is given on paper in the note: N GPUs give up to N times the images per second, less the ingress's
per-request cost.

    python bench/cluster.py [--runs 15] [--tiny]
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import interleave, machine, parser, setup, summary, table, write_json


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis() -> tuple[Any, str] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                "no"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.terminate()
    return None


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    if args.tiny:
        args.runs = 3
    setup()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import httpx
    import ray
    import uvicorn
    from ray import serve

    from sdlocal.cluster.app import bind_app
    from sdlocal.cluster.config import config_from_dict
    from sdlocal.engine.synthetic import save_tiny_model
    from sdlocal.server import create_app
    from sdlocal.services import build_services
    from sdlocal.settings import Settings

    body = {"prompt": "a lighthouse at dusk", "steps": 4, "width": 64, "height": 64, "seed": -1}
    redis = start_redis()
    with tempfile.TemporaryDirectory(prefix="sdl-bench-") as tmp:
        data = Path(tmp)
        models = data / "models" / "Stable-diffusion"
        save_tiny_model(models / "tiny-a", family="sd1", fmt="diffusers")

        port = free_port()
        settings = Settings(data_dir=data / "single", models_dirs=[models], port=port, device="cpu",
                            precision="fp32", api=True, nowebui=True)
        services = build_services(settings)
        app = create_app(services, settings)
        services.start_background_load().wait(300)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        single = f"http://127.0.0.1:{port}"

        ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, _temp_dir=str(Path(tmp) / "ray"),
                 log_to_driver=False)
        cluster_port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": cluster_port})
        config = config_from_dict({
            "models_dir": str(models), "data_dir": str(data / "cluster"), "device": "cpu", "precision": "fp32",
            "generator": {"num_gpus": 1, "min_replicas": 2, "max_replicas": 2, "max_queued_requests": 8},
            "cache": {"redis_url": redis[1] if redis else "", "max_entries": 100, "ttl_seconds": 600},
        })
        serve.run(bind_app(config, ingress_cpus=0.5), name="sdlocal-bench", route_prefix="/")
        cluster = f"http://127.0.0.1:{cluster_port}"
        try:
            with httpx.Client(timeout=600) as client:
                def post(base: str, payload: dict[str, Any]) -> float:
                    started = time.perf_counter()
                    response = client.post(base + "/sdapi/v1/txt2img", json=payload)
                    elapsed = time.perf_counter() - started
                    response.raise_for_status()
                    return elapsed

                for _ in range(4):  # both replicas load the model before timing
                    post(cluster, body)
                times = interleave({"single": lambda: post(single, body), "cluster": lambda: post(cluster, body)},
                                   runs=args.runs)
                seeded = {**body, "seed": 777}
                post(single, seeded)
                post(cluster, seeded)
                hits = interleave({"single hit": lambda: post(single, seeded),
                                   "cluster hit": lambda: post(cluster, seeded)}, runs=args.runs)
        finally:
            serve.shutdown()
            ray.shutdown()
            server.should_exit = True
            services.close()
            if redis:
                redis[0].terminate()

    overhead_ms = (statistics.median(times["cluster"]) - statistics.median(times["single"])) * 1000
    rows = [[name, f"{statistics.median(values) * 1000:.1f}"] for name, values in {**times, **hits}.items()]
    print(table(["path", "median ms"], rows))
    print(f"cluster overhead: {overhead_ms:+.1f} ms per request (target <= 30 ms); cluster cache: "
          f"{'Redis' if redis else 'none (redis-server not installed)'}")
    payload = {"benchmark": "cluster", "tiny": args.tiny, "machine": machine(), "runs": args.runs,
               "overhead_ms": round(overhead_ms, 2),
               "redis": bool(redis), **{name: summary(values) for name, values in {**times, **hits}.items()}}
    write_json("cluster", payload, args.results_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
