"""The workers' figures on the ingress's /metrics: model loads and each replica's GPU gauges, labelled by replica,
as one family per name (never two families under one name, which Prometheus refuses)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sdlocal.cluster.metrics import ClusterCollector

STATS = {
    "r1": {"loads": {"tiny-a": 1, "tiny-b": 2}, "failed_loads": 1, "gpus": {"0": [80.0, 3e9, 8e9, 77.0]}},
    "r2": {"loads": {"tiny-a": 1}, "failed_loads": 0, "gpus": {"1": [10.0, 1e9, 8e9, 45.0]}},
    "r3": {"loads": {}, "failed_loads": 0},  # a replica on logical GPUs: no NVML readings
}


def scrape(stats: dict) -> dict[str, dict[tuple, float]]:
    registry = CollectorRegistry()
    registry.register(ClusterCollector(lambda: stats))
    samples: dict[str, dict[tuple, float]] = {}
    names = []
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        names.append(family.name)
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    assert len(names) == len(set(names))
    return samples


def test_loads_and_gpu_gauges_per_replica() -> None:
    samples = scrape(STATS)
    loads = samples["sdlocal_model_loads_total"]
    assert loads[(("outcome", "loaded"), ("replica", "r1"))] == 3
    assert loads[(("outcome", "failed"), ("replica", "r1"))] == 1
    temperature = samples["sdlocal_gpu_temperature_celsius"]
    assert temperature == {(("gpu", "0"), ("replica", "r1")): 77.0, (("gpu", "1"), ("replica", "r2")): 45.0}
    assert samples["sdlocal_gpu_utilization_percent"][(("gpu", "0"), ("replica", "r1"))] == 80.0


def test_a_board_that_cannot_be_read_gives_empty_families_not_a_failed_scrape() -> None:
    def broken() -> dict:
        raise TimeoutError("board away")

    registry = CollectorRegistry()
    registry.register(ClusterCollector(broken))
    text = generate_latest(registry).decode()
    assert "# TYPE sdlocal_gpu_temperature_celsius gauge" in text and "# TYPE sdlocal_model_loads_total counter" in text
