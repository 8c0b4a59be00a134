"""Worker-side figures on the ingress's ``/metrics``: what the generator replicas posted to their stats board.

The ingress's own collector (``sdlocal.api.ops``) already gives the cluster-wide request, job, image and queue
figures, because every job passes through the ingress's ``ClusterQueue``. What only the workers know, how
often each loaded which checkpoint, is read here at each scrape, with a ``replica`` label (dashboards sum it
away to read one machine and a cluster alike).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from sdlocal.api.ops import NVML_FAMILIES

log = logging.getLogger(__name__)


class ClusterCollector:
    """``sdlocal_model_loads_total{outcome,replica}`` and the GPU gauges from ``read_stats()`` (replica id -> its
    ``stats()``)."""

    def __init__(self, read_stats: Callable[[], dict[str, dict[str, Any]]]) -> None:
        self.read_stats = read_stats

    def describe(self) -> list[Metric]:
        return []  # unchecked: the replicas come and go

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self.read_stats()
        except Exception:  # noqa: BLE001 - a scrape never fails because the board is slow or gone
            log.warning("could not read the generators' stats", exc_info=True)
            stats = {}
        loads = CounterMetricFamily("sdlocal_model_loads_total", "Checkpoint loads by outcome (loaded, failed).",
                                    labels=["outcome", "replica"])
        for replica, figures in sorted(stats.items()):
            loads.add_metric(["loaded", replica], sum(figures.get("loads", {}).values()))
            loads.add_metric(["failed", replica], figures.get("failed_loads", 0))
        yield loads
        yield from gpu_families(stats)


def gpu_families(stats: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    """The NVML gauges each replica posted for its own GPUs, labelled by GPU index and replica (the families are
    there without samples where no replica has NVML, as on one machine)."""
    for position, (name, help_text) in enumerate(NVML_FAMILIES):
        family = GaugeMetricFamily(name, help_text, labels=["gpu", "replica"])
        for replica, figures in sorted(stats.items()):
            for gpu, values in sorted(dict(figures.get("gpus", {}) or {}).items()):
                family.add_metric([gpu, replica], float(values[position]))
        yield family
