"""The result cache: a request with a fixed seed that was answered before is answered again without the GPU.

Stable Diffusion is deterministic for a given request, model file, precision and code version, so the API can
keep what it answered and give back the same PNG bytes in milliseconds. The key is built from every field that
changes pixels (images by the hash of their pixels), the model's hash, the runtime that ran it (device,
precision, attention, fast mode) and sdlocal's version, so two requests that would give different images never
share an entry. A request with seed -1 (random) is never cached.

Two stores with one small interface (``get``/``put`` of bytes, ``entries``): in memory on one machine (a
``cachetools`` LRU bounded in bytes), and Redis in the cluster (shared by the ingress replicas, each entry with a
TTL, the number of entries bounded by evicting the least recently used). Only the adapters (``sdlocal.api``) put
and read entries; the engine knows nothing of it.

What the key cannot see: a LoRA, embedding or VAE file replaced by another under the same name. The TTL bounds
that in the cluster; on one machine a restart (or ``--api-cache-mb 0``) clears the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import fields, is_dataclass
from typing import Any

log = logging.getLogger(__name__)

KEY_VERSION = 1  # raise when what the key covers changes, so old entries are never read
RANDOM_SEED = -1


def request_key(request: Any, model_id: str, runtime_id: str, version: str = "") -> str | None:
    """The cache key of a ``GenerationRequest`` (a sha256 hex), or None when it must not be cached.

    ``model_id`` names the checkpoint file's contents (its sha256, or its size and modification time where the
    hash is not known yet); ``runtime_id`` the device and number formats that ran it; ``version`` sdlocal's.
    """
    if int(getattr(request, "seed", RANDOM_SEED)) == RANDOM_SEED or not model_id:
        return None
    canonical = {"v": KEY_VERSION, "sdlocal": version, "model": model_id, "runtime": runtime_id,
                 "request": _canonical(request, skip=("model",))}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(value: Any, skip: tuple[str, ...] = ()) -> Any:
    """Plain JSON data for ``value``: dataclasses by field, images by the hash of their mode, size and pixels."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in fields(value) if f.name not in skip}
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if hasattr(value, "tobytes") and hasattr(value, "mode") and hasattr(value, "size"):  # a PIL image
        digest = hashlib.sha256(f"{value.mode}:{value.size}".encode())
        digest.update(value.tobytes())
        return {"image": digest.hexdigest()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


class _Counted:
    """Hits and misses, for ``/metrics`` (``sdlocal_result_cache_requests_total``)."""

    hits = 0
    misses = 0

    def _count(self, value: bytes | None) -> bytes | None:
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value


class MemoryResultCache(_Counted):
    """An LRU of entries in this process, bounded in bytes (``max_bytes``); safe across threads."""

    def __init__(self, max_bytes: int) -> None:
        from cachetools import LRUCache

        if int(max_bytes) < 1:
            raise ValueError(f"max_bytes: {max_bytes!r} is not allowed; a cache needs at least 1 byte")
        self.max_bytes = int(max_bytes)
        self._entries: LRUCache = LRUCache(maxsize=self.max_bytes, getsizeof=len)
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._count(self._entries.get(key))

    def put(self, key: str, value: bytes) -> None:
        """Keep ``value``; one larger than the whole cache is not kept (it would evict everything for nothing)."""
        if len(value) > self.max_bytes:
            return
        with self._lock:
            self._entries[key] = value

    def entries(self) -> int:
        with self._lock:
            return len(self._entries)


class RedisResultCache(_Counted):
    """Entries in Redis, shared by every ingress replica: each with a TTL, at most ``max_entries`` of them.

    Each entry is a string key with an expiry; a sorted set holds the keys by last use so that, past the bound,
    the least recently used are deleted. A Redis that cannot be reached is a miss (logged), never a failed request.
    """

    def __init__(self, url: str, max_entries: int = 1000, ttl_seconds: int = 86400, prefix: str = "sdlocal:cache:",
                 client: Any = None) -> None:
        if int(max_entries) < 1:
            raise ValueError(f"max_entries: {max_entries!r} is not allowed; keep at least 1 entry")
        if int(ttl_seconds) < 1:
            raise ValueError(f"ttl_seconds: {ttl_seconds!r} is not allowed; entries must live at least 1 second")
        if client is None:
            import redis

            client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.client, self.url = client, url
        self.max_entries, self.ttl_seconds, self.prefix = int(max_entries), int(ttl_seconds), prefix
        self.index = prefix + "lru"

    def get(self, key: str) -> bytes | None:
        try:
            value = self.client.get(self.prefix + key)
            if value is not None:
                self.client.zadd(self.index, {key: time.time()})
        except Exception as exc:  # noqa: BLE001 - redis raises several kinds; the cache is only a shortcut
            log.warning("result cache: Redis at %s could not be read (%s); generating instead", self.url, exc)
            value = None
        return self._count(value)

    def put(self, key: str, value: bytes) -> None:
        try:
            pipe = self.client.pipeline()
            pipe.set(self.prefix + key, value, ex=self.ttl_seconds)
            pipe.zadd(self.index, {key: time.time()})
            pipe.zremrangebyscore(self.index, "-inf", time.time() - self.ttl_seconds)  # expired ones
            pipe.execute()
            extra = int(self.client.zcard(self.index)) - self.max_entries
            if extra > 0:
                oldest = [k.decode() if isinstance(k, bytes) else k
                          for k in self.client.zrange(self.index, 0, extra - 1)]
                if oldest:
                    self.client.delete(*[self.prefix + k for k in oldest])
                    self.client.zrem(self.index, *oldest)
        except Exception as exc:  # noqa: BLE001 - see get()
            log.warning("result cache: Redis at %s could not be written (%s); the result is not cached", self.url, exc)

    def entries(self) -> int:
        try:
            self.client.zremrangebyscore(self.index, "-inf", time.time() - self.ttl_seconds)
            return int(self.client.zcard(self.index))
        except Exception:  # noqa: BLE001 - a scrape never fails because Redis is away
            return 0
