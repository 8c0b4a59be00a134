"""The cluster's Serve application: the ingress bound to the generators, for ``cluster serve`` and KubeRay.

KubeRay's ``RayService`` names ``sdlocal.cluster.app:build_app`` as its import path with
``args: {config: /etc/sdlocal/cluster.yaml}``; ``sdlocal cluster serve`` binds the same application.
"""

from __future__ import annotations

import uuid
from typing import Any

from ray.serve import Application

from sdlocal.cluster.config import ClusterConfig, load_config
from sdlocal.cluster.deployments import generator_deployment, ingress_deployment


def bind_app(config: ClusterConfig, ingress_cpus: float = 0.5, board_name: str | None = None) -> Application:
    """The ingress over a generator deployment made from ``config``; ``board_name`` names the stats actor (one per
    application, so two applications on one cluster keep separate figures)."""
    board = board_name or f"sdlocal-stats-{uuid.uuid4().hex[:8]}"
    generator = generator_deployment(config).bind(config, board)
    return ingress_deployment(ingress_cpus).bind(generator, config, board)


def build_app(args: dict[str, Any]) -> Application:
    """Ray Serve's application builder: ``args["config"]`` is the cluster.yaml path."""
    if "config" not in args:
        raise ValueError("build_app: args needs 'config', the path of cluster.yaml")
    return bind_app(load_config(args["config"]))
