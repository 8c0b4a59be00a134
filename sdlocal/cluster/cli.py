"""``sdlocal cluster serve``: start (or join) a Ray cluster and serve the A1111 API on it until Ctrl+C.

Imported by ``sdlocal.cli`` to add the flags; Ray is imported only when the command runs, so ``sdlocal serve``
never needs it (and says how to install it when it is missing).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from sdlocal.settings import DEFAULT_PORT

APP_NAME = "sdlocal"
BOARD_NAME = "sdlocal-stats"  # the generators' stats board (a detached actor: removed on stop)
INSTALL_HINT = 'Ray is not installed; install the cluster extra: pip install "sdlocal[cluster]"'


def add_cluster_parser(subs: Any, parser_class: type) -> None:
    """``cluster serve --config FILE [--address ADDR] [--host H] [--port P]`` under the main parser."""
    cluster = subs.add_parser("cluster", help="serve the A1111 API on a Ray Serve cluster", allow_abbrev=False,
                              description="Serve the A1111 API on a Ray Serve cluster (GPU workers).")
    commands = cluster.add_subparsers(dest="cluster_command", metavar="{serve}", parser_class=parser_class)
    commands.required = True
    serve = commands.add_parser("serve", allow_abbrev=False, help="deploy and serve until Ctrl+C",
                                description="Start a local Ray (or join one with --address), deploy the ingress "
                                            "and the generators from cluster.yaml, and serve until Ctrl+C.")
    serve.add_argument("--config", required=True, metavar="FILE", dest="cluster_config",
                       help="cluster.yaml: folders, generator replicas and GPUs")
    serve.add_argument("--address", default="", metavar="ADDR", dest="cluster_address",
                       help="join this Ray cluster (e.g. ray://head:10001 or auto) instead of starting one here")
    serve.add_argument("--host", default="127.0.0.1", metavar="H", dest="cluster_host",
                       help="where the HTTP proxy listens (0.0.0.0: every interface; default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="P", dest="cluster_port",
                       help=f"the HTTP proxy's port (default {DEFAULT_PORT}, as sdlocal serve)")


def run_cluster(options: argparse.Namespace) -> int:
    """Deploy from ``options`` (parsed by the parser above) and serve until Ctrl+C; the exit code."""
    from sdlocal.cluster.config import ConfigError, load_config

    try:
        config = load_config(options.cluster_config)
    except ConfigError as exc:
        print(f"[sdlocal] {exc}", flush=True)
        return 2
    try:
        import ray
        from ray import serve
    except ImportError:
        print(f"[sdlocal] {INSTALL_HINT}", flush=True)
        return 1
    from sdlocal.cluster.app import bind_app

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if options.cluster_address:
        ray.init(address=options.cluster_address)
    else:
        ray.init()  # a local cluster over this machine's CPUs and GPUs
    host, port = options.cluster_host, int(options.cluster_port)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(bind_app(config, board_name=BOARD_NAME), name=APP_NAME, route_prefix="/")
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        print(f"[sdlocal] Cluster API: http://{shown}:{port}/sdapi/v1  (Ray: {ray.get_runtime_context().gcs_address})",
              flush=True)
        print("[sdlocal] Press Ctrl+C to stop.", flush=True)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        _stop(serve, joined=bool(options.cluster_address))
        ray.shutdown()
    print("[sdlocal] stopped", flush=True)
    return 0


def _stop(serve: Any, joined: bool) -> None:
    """Take sdlocal's application down; on a cluster started here, Serve with it (a joined one keeps Serve)."""
    import ray

    from sdlocal.cluster.deployments import BOARD_NAMESPACE

    try:
        if joined:
            serve.delete(APP_NAME)
        else:
            serve.shutdown()
        ray.kill(ray.get_actor(BOARD_NAME, namespace=BOARD_NAMESPACE))
    except ValueError:
        pass  # the board was never made (nothing reported yet)
    except Exception as exc:  # noqa: BLE001 - stopping goes on: the cluster may already be gone
        print(f"[sdlocal] could not stop the application cleanly: {exc}", flush=True)
