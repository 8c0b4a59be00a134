"""``cluster.yaml``: the one file that says how the cluster serves (folders, generators, and the parts to come).

Read once, checked whole: an unknown key names itself and the keys allowed there; a bad value names its field
and what to write instead. The ``cache``, ``rate_limit`` and ``api_tokens`` sections are read and checked here
but nothing in the cluster acts on them yet (they are wired where the single server gets the same features).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sdlocal.engine.config import DEVICES, PRECISIONS


class ConfigError(ValueError):
    """What is wrong in cluster.yaml, naming the field (``generator.max_replicas``) and the fix."""


@dataclass(frozen=True)
class GeneratorConfig:
    """The GPU workers (one Ray Serve replica per GPU). Defaults and why:

    - ``num_gpus: 1``: a replica owns one GPU; a fraction (0.5) packs two small models' workers on one card.
    - ``max_models_per_replica: 2``: checkpoints kept loaded per worker (multiplexing); two SD1.5 fit in 8 GB,
      so switching between two models never reloads; past it the least recently used one is dropped.
    - ``max_ongoing_requests: 1``: a GPU runs one generation well; two at once only share it and thrash memory.
    - ``max_queued_requests: 16``: requests that may wait per worker before clients get 503 + Retry-After; a
      minute or two of 512x512 work on one GPU, instead of a pile-up of hours.
    - ``min_replicas: 1`` / ``max_replicas: 4``: always one warm worker; grow to four GPUs under load.
    - ``target_ongoing_requests: 1``: add a worker as soon as each one is busy (one request each is "full").
    """

    num_gpus: float = 1
    max_models_per_replica: int = 2
    max_ongoing_requests: int = 1
    max_queued_requests: int = 16
    min_replicas: int = 1
    max_replicas: int = 4
    target_ongoing_requests: float = 1

    def check(self) -> None:
        _at_least("generator.num_gpus", self.num_gpus, 0, "0 runs on CPUs; 1 is a whole GPU, 0.5 half of one")
        _whole("generator.max_models_per_replica", self.max_models_per_replica, 1)
        _whole("generator.max_ongoing_requests", self.max_ongoing_requests, 1)
        _whole("generator.max_queued_requests", self.max_queued_requests, 1)
        _whole("generator.min_replicas", self.min_replicas, 0)
        _whole("generator.max_replicas", self.max_replicas, 1)
        if self.max_replicas < self.min_replicas:
            raise ConfigError(f"generator.max_replicas: {self.max_replicas} is less than min_replicas "
                              f"({self.min_replicas}); set max_replicas to {self.min_replicas} or more")
        _at_least("generator.target_ongoing_requests", self.target_ongoing_requests, 0,
                  "use 1 to add a worker as soon as each one is busy", strict=True)


@dataclass(frozen=True)
class CacheConfig:
    """The shared result cache (not acted on yet): ``redis_url`` "" means none; entries kept and for how long."""

    redis_url: str = ""
    max_entries: int = 1000
    ttl_seconds: int = 86400

    def check(self) -> None:
        _redis("cache.redis_url", self.redis_url)
        _whole("cache.max_entries", self.max_entries, 1)
        _whole("cache.ttl_seconds", self.ttl_seconds, 1)


@dataclass(frozen=True)
class RateLimitConfig:
    """Rate limits (not acted on yet): ``limits`` in the ``limits`` package's notation ("10/minute"), "" = off."""

    limits: str = ""
    redis_url: str = ""

    def check(self) -> None:
        _text("rate_limit.limits", self.limits)
        _redis("rate_limit.redis_url", self.redis_url)


@dataclass(frozen=True)
class ClusterConfig:
    """The whole of cluster.yaml. ``models_dir`` is the models folder every node mounts at the same path (an
    A1111 install root or a folder of checkpoints), ``data_dir`` the shared folder for outputs and caches;
    ``default_model`` "" means the first supported model found; ``device``/``precision`` are the workers'."""

    models_dir: Path = Path("/models")
    data_dir: Path = Path("/data")
    default_model: str = ""
    device: str = "auto"
    precision: str = "auto"
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    api_tokens: str = ""  # a tokens file; "" = none

    def engine_config(self, max_loaded_models: int | None = None) -> Any:
        """The workers' ``EngineConfig``; ``max_loaded_models`` defaults to the multiplexing limit."""
        from sdlocal.engine.config import EngineConfig

        return EngineConfig(data_dir=self.data_dir, models_dirs=[self.models_dir], device=self.device,  # type: ignore[arg-type]
                            precision=self.precision,  # type: ignore[arg-type]
                            max_loaded_models=max_loaded_models or self.generator.max_models_per_replica)

    def ingress_settings(self) -> Any:
        """The ``Settings`` the ingress's app is made with (as ``sdlocal serve --api --nowebui``): the one place
        to add what the ingress needs from this file: the tokens, and the rate limits (in Redis when the
        ``rate_limit`` section names one, so every ingress replica counts the same allowance)."""
        from sdlocal.settings import Settings

        return Settings(data_dir=self.data_dir, models_dirs=[self.models_dir], device=self.device,
                        precision=self.precision, api=True, nowebui=True,
                        queue_size=self.generator.max_queued_requests,
                        api_tokens=Path(self.api_tokens) if self.api_tokens else None,
                        api_rate_limit=self.rate_limit.limits or "off",
                        api_rate_limit_storage=self.rate_limit.redis_url or "memory://",
                        api_cache_mb=0)  # the cluster's cache is Redis (``result_cache``), not the ingress's memory

    def result_cache(self) -> Any:
        """The shared result cache in Redis from the ``cache`` section, or None when it has no ``redis_url``."""
        if not self.cache.redis_url:
            return None
        from sdlocal.result_cache import RedisResultCache

        return RedisResultCache(self.cache.redis_url, self.cache.max_entries, self.cache.ttl_seconds)


SECTIONS: dict[str, type] = {"generator": GeneratorConfig, "cache": CacheConfig, "rate_limit": RateLimitConfig}


def load_config(path: str | Path) -> ClusterConfig:
    """Read and check cluster.yaml; ``ConfigError`` naming the file and the field otherwise."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc}); check the path of cluster.yaml") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def config_from_dict(data: Any) -> ClusterConfig:
    """A ``ClusterConfig`` from parsed YAML (a mapping), every key and value checked."""
    values = _known(data, ClusterConfig, "")
    for name, kind in SECTIONS.items():
        if name in values:
            values[name] = kind(**_known(values[name], kind, name + "."))
    for name in ("models_dir", "data_dir"):
        if name in values:
            _text(name, values[name], empty=False)
            values[name] = Path(values[name]).expanduser()
    for name in ("default_model", "api_tokens"):
        if name in values:
            _text(name, values[name])
    if values.get("device", "auto") not in DEVICES:
        raise ConfigError(f"device: {values['device']!r} is not allowed; use one of {', '.join(DEVICES)}")
    if values.get("precision", "auto") not in PRECISIONS:
        raise ConfigError(f"precision: {values['precision']!r} is not allowed; use one of {', '.join(PRECISIONS)}")
    config = ClusterConfig(**values)
    for name in SECTIONS:
        getattr(config, name).check()
    return config


def _known(data: Any, kind: type, prefix: str) -> dict[str, Any]:
    where = prefix.rstrip(".") or "cluster.yaml"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping of keys to values, not {type(data).__name__}")
    allowed = [f.name for f in fields(kind)]
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{prefix}{key}: unknown key; the keys allowed in {where} are {', '.join(allowed)}")
    return dict(data)


def _whole(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{name}: {value!r} is not allowed; use a whole number of {least} or more")


def _at_least(name: str, value: Any, least: float, hint: str, strict: bool = False) -> None:
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or value < least or (strict and value == least)
    if bad:
        bound = f"more than {least}" if strict else f"{least} or more"
        raise ConfigError(f"{name}: {value!r} is not allowed; use a number of {bound} ({hint})")


def _text(name: str, value: Any, empty: bool = True) -> None:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise ConfigError(f"{name}: {value!r} is not allowed; write a {'' if empty else 'non-empty '}string")


def _redis(name: str, value: Any) -> None:
    _text(name, value)
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{name}: {value!r} is not a Redis URL; write redis://HOST:6379/0, or \"\" for none")
