"""The result cache's key and its two stores: the in-memory LRU bound, and Redis (a real redis-server) with its
TTL and entry bound, shared by two clients as by two ingress replicas."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PIL import Image

from sdlocal.engine.request import GenerationRequest, ImageSource
from sdlocal.result_cache import MemoryResultCache, RedisResultCache, request_key
from tests.servers import redis_server


def key(request: GenerationRequest, model: str = "m:abc", runtime: str = "cpu/fp32") -> str | None:
    return request_key(request, model, runtime, "1.0")


def test_the_key_covers_every_pixel_field_the_model_and_the_runtime() -> None:
    base = GenerationRequest(prompt="cat", seed=7)
    assert key(base) == key(GenerationRequest(prompt="cat", seed=7))
    for other in (GenerationRequest(prompt="dog", seed=7), GenerationRequest(prompt="cat", seed=8),
                  GenerationRequest(prompt="cat", seed=7, steps=21), GenerationRequest(prompt="cat", seed=7, vae="x")):
        assert key(other) != key(base)
    assert key(base, model="m:def") != key(base)
    assert key(base, runtime="cuda/fp16") != key(base)
    assert request_key(base, "m:abc", "cpu/fp32", "1.1") != key(base)


def test_a_random_seed_or_an_unknown_model_has_no_key() -> None:
    assert key(GenerationRequest(prompt="cat", seed=-1)) is None
    assert key(GenerationRequest(prompt="cat", seed=7), model="") is None


def test_init_images_are_keyed_by_their_pixels() -> None:
    def img2img(colour: tuple[int, int, int]) -> GenerationRequest:
        return GenerationRequest(prompt="cat", seed=7, source=ImageSource(images=[Image.new("RGB", (8, 8), colour)]))

    assert key(img2img((1, 2, 3))) == key(img2img((1, 2, 3)))
    assert key(img2img((1, 2, 3))) != key(img2img((1, 2, 4)))


def test_the_memory_cache_evicts_the_least_recently_used_past_its_size() -> None:
    cache = MemoryResultCache(max_bytes=300)
    for name in "abc":
        cache.put(name, name.encode() * 100)
    assert cache.entries() == 3
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("d", b"d" * 100)
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("d") is not None
    cache.put("huge", b"x" * 301)  # larger than the cache: not kept, nothing evicted for it
    assert cache.get("huge") is None and cache.entries() == 3
    assert (cache.hits, cache.misses) == (3, 2)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


def test_redis_entries_are_shared_bounded_and_expire(redis_url: str) -> None:
    import redis

    first = RedisResultCache(redis_url, max_entries=2, ttl_seconds=60, prefix="t1:")
    second = RedisResultCache(redis_url, max_entries=2, ttl_seconds=60, prefix="t1:")  # another ingress replica
    first.put("a", b"A")
    first.put("b", b"B")
    assert second.get("a") == b"A"  # seen by the other replica, and now the most recently used
    first.put("c", b"C")
    assert second.entries() == 2
    assert second.get("b") is None and second.get("a") == b"A" and second.get("c") == b"C"
    ttl = redis.Redis.from_url(redis_url).ttl("t1:a")
    assert 0 < ttl <= 60


def test_an_unreachable_redis_is_a_miss_not_a_failure() -> None:
    from tests.servers import free_port

    cache = RedisResultCache(f"redis://127.0.0.1:{free_port()}", prefix="t2:")
    cache.put("a", b"A")  # logged, not raised
    assert cache.get("a") is None and cache.entries() == 0 and cache.misses == 1
