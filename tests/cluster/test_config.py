"""cluster.yaml: the documented defaults, and errors that name the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdlocal.cluster.config import ClusterConfig, ConfigError, config_from_dict, load_config

EXAMPLE = """\
models_dir: /models
data_dir: /data
default_model: ""
device: auto
precision: auto
generator: {num_gpus: 1, max_models_per_replica: 2, max_ongoing_requests: 1, max_queued_requests: 16,
            min_replicas: 1, max_replicas: 4, target_ongoing_requests: 1}
cache: {redis_url: "", max_entries: 1000, ttl_seconds: 86400}
rate_limit: {limits: "", redis_url: ""}
api_tokens: ""
"""


def test_the_documented_file_is_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")
    assert load_config(path) == ClusterConfig()
    config = ClusterConfig()
    assert (config.models_dir, config.data_dir, config.device, config.precision) == (Path("/models"),
                                                                                     Path("/data"), "auto", "auto")
    spec = config.generator
    assert (spec.num_gpus, spec.max_models_per_replica, spec.max_ongoing_requests, spec.max_queued_requests,
            spec.min_replicas, spec.max_replicas, spec.target_ongoing_requests) == (1, 2, 1, 16, 1, 4, 1)
    assert (config.cache.redis_url, config.cache.max_entries, config.cache.ttl_seconds) == ("", 1000, 86400)
    assert (config.rate_limit.limits, config.rate_limit.redis_url, config.api_tokens) == ("", "", "")


def test_an_empty_file_is_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("", encoding="utf-8")
    assert load_config(path) == ClusterConfig()


@pytest.mark.parametrize(("data", "named"), [
    ({"model_dir": "/m"}, "model_dir: unknown key; the keys allowed in cluster.yaml are models_dir, data_dir"),
    ({"generator": {"gpus": 1}}, "generator.gpus: unknown key; the keys allowed in generator are num_gpus"),
    ({"cache": {"size": 3}}, "cache.size: unknown key"),
])
def test_unknown_keys_name_themselves_and_the_allowed_ones(data: dict, named: str) -> None:
    with pytest.raises(ConfigError, match="^" + named.replace(".", r"\.")):
        config_from_dict(data)


@pytest.mark.parametrize(("data", "field", "fix"), [
    ({"device": "gpu"}, "device", "use one of auto, cuda"),
    ({"precision": "half"}, "precision", "use one of auto, fp16"),
    ({"generator": {"max_replicas": 0}}, "generator.max_replicas", "whole number of 1 or more"),
    ({"generator": {"min_replicas": 3, "max_replicas": 2}}, "generator.max_replicas", "set max_replicas to 3"),
    ({"generator": {"num_gpus": -1}}, "generator.num_gpus", "0 or more"),
    ({"generator": {"max_queued_requests": "many"}}, "generator.max_queued_requests", "whole number"),
    ({"generator": {"target_ongoing_requests": 0}}, "generator.target_ongoing_requests", "more than 0"),
    ({"cache": {"redis_url": "localhost:6379"}}, "cache.redis_url", "redis://HOST:6379/0"),
    ({"rate_limit": {"limits": 10}}, "rate_limit.limits", "write a string"),
    ({"models_dir": ""}, "models_dir", "non-empty string"),
    ({"generator": [1]}, "generator", "must be a mapping"),
])
def test_bad_values_name_the_field_and_the_fix(data: dict, field: str, fix: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data)
    assert str(caught.value).startswith(field + ":") and fix in str(caught.value)


def test_a_missing_or_broken_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "nowhere.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("generator: {num_gpus: 1", encoding="utf-8")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)


def test_the_ingress_is_made_like_sdlocal_serve_api_nowebui() -> None:
    settings = config_from_dict({"models_dir": "/srv/models", "data_dir": "/srv/data"}).ingress_settings()
    assert settings.api and settings.nowebui and settings.models_dirs == [Path("/srv/models")]
    assert settings.data_dir == Path("/srv/data") and settings.queue_size == 16
