"""The cluster on a real (local) Ray: two generator replicas over tiny models, the A1111 API on the ingress.

One Ray for the module (starting it costs about 10 s); everything goes over loopback HTTP as a client would.
GPUs are Ray's logical resources here, so two "GPU" replicas run on this CPU-only machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import concurrent.futures
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import ray  # noqa: E402 - the test lock has the cluster extra: a missing Ray is a failure, never a skip
from ray import serve  # noqa: E402

from sdlocal.api.tokens import new_token  # noqa: E402
from sdlocal.cluster.app import bind_app  # noqa: E402
from sdlocal.cluster.config import config_from_dict  # noqa: E402
from sdlocal.cluster.deployments import BOARD_NAMESPACE  # noqa: E402
from tests.api.conftest import decode_png
from tests.servers import (
    free_port,
    redis_server,  # noqa: E402
)

MODELS = ("tiny-a", "tiny-b")
BODY = {"prompt": "a red cube", "steps": 2, "width": 64, "height": 64, "seed": 42, "sampler_name": "Euler"}


def poll(condition: Callable[[], Any], timeout: float = 60.0, what: str = "the condition") -> Any:
    """``condition()``'s first truthy value, asked every 0.1 s; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout} s")


class Cluster:
    def __init__(self, url: str, models_dir: Path, data_dir: Path, boards: dict[str, str], redis_url: str = "",
                 token: str = "") -> None:
        self.url, self.models_dir, self.data_dir, self.boards = url, models_dir, data_dir, boards
        self.redis_url, self.token = redis_url, token

    def stats(self, app: str = "main") -> dict[str, dict[str, Any]]:
        board = ray.get_actor(self.boards[app], namespace=BOARD_NAMESPACE)
        return ray.get(board.all.remote())


def cluster_config(root: Path, extra: dict[str, Any] | None = None, **generator: Any) -> Any:
    return config_from_dict({"models_dir": str(root / "models"), "data_dir": str(root / "data"),
                             "device": "cpu", "precision": "fp32",
                             "generator": {"num_gpus": 1, "min_replicas": 2, "max_replicas": 2, **generator},
                             **(extra or {})})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from sdlocal.engine.synthetic import save_tiny_model

    root = tmp_path_factory.mktemp("cluster")
    for name in MODELS:
        save_tiny_model(root / "models" / "Stable-diffusion" / name, family="sd1", fmt="diffusers")
    redis = redis_server()
    redis_url = redis.__enter__()
    token = new_token(root / "tokens.txt", "alice")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        boards = {"main": "sdlocal-test-main", "small": "sdlocal-test-small"}
        serve.run(bind_app(cluster_config(root), ingress_cpus=0, board_name=boards["main"]), name="main",
                  route_prefix="/")
        # A second app with a queue of one, on no GPU (the main one holds both): the queue bound's test.
        small = cluster_config(root, num_gpus=0, min_replicas=1, max_replicas=1, max_queued_requests=1)
        serve.run(bind_app(small, ingress_cpus=0, board_name=boards["small"]), name="small", route_prefix="/small")
        # A third, with the Redis result cache, rate limits counted in Redis and API tokens (the CPU budget's last
        # half CPU).
        boards["cached"] = "sdlocal-test-cached"
        cached = cluster_config(root, {"cache": {"redis_url": redis_url + "/0", "max_entries": 50, "ttl_seconds": 600},
                                       "rate_limit": {"limits": "4/minute", "redis_url": redis_url + "/1"},
                                       "api_tokens": str(root / "tokens.txt")},
                                num_gpus=0, min_replicas=1, max_replicas=1)
        serve.run(bind_app(cached, ingress_cpus=0, board_name=boards["cached"]), name="cached",
                  route_prefix="/cached")
        yield Cluster(f"http://127.0.0.1:{port}", root / "models", root / "data", boards, redis_url, token)
    finally:
        serve.shutdown()
        ray.shutdown()
        redis.__exit__(None, None, None)


@pytest.fixture
def client(cluster: Cluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.url, timeout=180) as http:
        yield http


def txt2img(http: httpx.Client, model: str | None = None, prefix: str = "", **fields: Any) -> httpx.Response:
    body = {**BODY, **fields}
    if model:
        body["override_settings"] = {"sd_model_checkpoint": model}
    return http.post(f"{prefix}/sdapi/v1/txt2img", json=body)


def test_txt2img_has_a1111_shape_and_the_pixels_of_one_machine(cluster: Cluster, client: httpx.Client) -> None:
    import json

    from fastapi.testclient import TestClient

    from sdlocal.server import create_app
    from sdlocal.services import build_services
    from sdlocal.settings import Settings

    answer = txt2img(client, "tiny-a", save_images=True)
    assert answer.status_code == 200, answer.text
    payload = answer.json()
    assert set(payload) == {"images", "parameters", "info"}
    info = json.loads(payload["info"])
    assert info["seed"] == 42 and info["width"] == 64 and "tiny-a" in info["infotexts"][0]
    picture = decode_png(payload["images"][0])
    assert "a red cube" in picture.info["parameters"]
    saved = list((cluster.data_dir / "outputs" / "txt2img").rglob("*.png"))
    assert saved, "the worker saves the image in the shared data dir"

    settings = Settings(data_dir=cluster.data_dir.parent / "single", models_dirs=[cluster.models_dir],
                        device="cpu", precision="fp32", api=True, nowebui=True)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the replica (Ray gives a 0.5-CPU worker one thread): same float sums
    services = build_services(settings)
    try:
        with TestClient(create_app(services, settings)) as single:
            alone = single.post("/sdapi/v1/txt2img", json={**BODY, "override_settings": {
                "sd_model_checkpoint": "tiny-a"}})
        assert alone.status_code == 200, alone.text
        expected = np.asarray(decode_png(alone.json()["images"][0]).convert("RGB"))
        assert np.array_equal(np.asarray(picture.convert("RGB")), expected)
    finally:
        services.close()
        torch.set_num_threads(threads)


def loads_by_replica(cluster: Cluster, app: str = "main") -> dict[str, dict[str, int]]:
    return {replica: figures["loads"] for replica, figures in cluster.stats(app).items()}


def test_requests_for_a_model_go_to_the_replicas_that_hold_it(cluster: Cluster, client: httpx.Client) -> None:
    for model in MODELS:  # warm-up: each model loaded somewhere
        assert txt2img(client, model).status_code == 200
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda model: txt2img(client, model, seed=-1), [*MODELS * 4]))
    assert [answer.status_code for answer in answers] == [200] * 8, [a.text for a in answers if a.status_code != 200]
    loads = loads_by_replica(cluster)
    assert all(count == 1 for counts in loads.values() for count in counts.values()), loads
    served = {model for counts in loads.values() for model in counts}
    assert served == set(MODELS)


def test_past_max_queued_requests_clients_get_503_with_retry_after(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.url, timeout=180) as http:
        assert txt2img(http, "tiny-a", prefix="/small").status_code == 200  # loaded: the burst only queues
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: txt2img(http, "tiny-a", prefix="/small", steps=4), range(6)))
    statuses = sorted(answer.status_code for answer in answers)
    assert 503 in statuses and 200 in statuses and set(statuses) <= {200, 503}, statuses
    refused = next(answer for answer in answers if answer.status_code == 503)
    assert int(refused.headers["Retry-After"]) >= 1
    assert "queue is full" in refused.json()["detail"]


def test_webuiapi_client_works_unchanged(cluster: Cluster) -> None:
    import webuiapi

    host, port = cluster.url.removeprefix("http://").split(":")
    result = webuiapi.WebUIApi(host=host, port=int(port)).txt2img(prompt="a blue ball", steps=2, width=64, height=64,
                                                                  seed=7, sampler_name="Euler")
    assert result.image.size == (64, 64)
    assert result.info["seed"] == 7


def test_metrics_show_model_loads_per_replica(cluster: Cluster, client: httpx.Client) -> None:
    assert txt2img(client, "tiny-b").status_code == 200
    text = client.get("/metrics").text
    loads = loads_by_replica(cluster)
    for replica, counts in loads.items():
        assert f'sdlocal_model_loads_total{{outcome="loaded",replica="{replica}"}} {float(sum(counts.values()))}' \
            in text, text
    assert "sdlocal_jobs_total{outcome=\"done\"}" in text
    images = next(line for line in text.splitlines() if line.startswith("sdlocal_images_generated_total "))
    assert float(images.split()[1]) >= 1


def test_ready_asks_the_generators(client: httpx.Client) -> None:
    answer = client.get("/ready")
    assert answer.status_code == 200 and answer.json()["ready"] is True


def test_a_killed_replica_gives_its_client_a_503_and_comes_back(cluster: Cluster, client: httpx.Client) -> None:
    def busy_replica() -> str | None:
        return next((figures["actor"] for figures in cluster.stats().values() if figures["running"] > 0), None)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(txt2img, client, "tiny-a", steps=40, width=128, height=128, n_iter=4)
        name = poll(busy_replica, what="the long request starting")
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
        answer = pending.result(timeout=120)
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] and "stopped" in answer.json()["detail"]
    assert txt2img(client, "tiny-b").status_code == 200  # the other replica keeps serving

    def running() -> bool:
        states = serve.status().applications["main"].deployments["Generator"].replica_states
        return states.get("RUNNING", 0) == 2
    poll(running, timeout=90, what="the killed replica coming back")
    with pytest.raises(ValueError):
        ray.get_actor(name, namespace="serve")  # a new replica, not the killed one restarted
    assert txt2img(client, "tiny-a").status_code == 200


def test_interrupt_stops_the_running_generation_early(cluster: Cluster,
                                                                      client: httpx.Client) -> None:
    board = ray.get_actor(cluster.boards["main"], namespace=BOARD_NAMESPACE)
    before = set(ray.get(board.running_jobs.remote()))

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(txt2img, client, "tiny-a", steps=100, width=128, height=128, n_iter=8)
        poll(lambda: set(ray.get(board.running_jobs.remote())) - before, what="the long request starting")
        assert client.post("/sdapi/v1/interrupt").status_code == 200
        answer = pending.result(timeout=120)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["images"]) < 8
    jobs = next(line for line in client.get("/metrics").text.splitlines()
                if line.startswith('sdlocal_jobs_total{outcome="interrupted"}'))
    assert float(jobs.split()[1]) >= 1


def test_options_change_the_default_model_without_loading_on_the_ingress(client: httpx.Client) -> None:
    import json

    try:
        answer = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-b"})
        assert answer.status_code == 200, answer.text
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("tiny-b")
        made = client.post("/sdapi/v1/txt2img", json=BODY)
        assert made.status_code == 200 and "Model: tiny-b" in json.loads(made.json()["info"])["infotexts"][0]
    finally:
        client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-a"})


def test_img2img_runs_on_the_generators(client: httpx.Client) -> None:
    made = txt2img(client, "tiny-a")
    body = {**BODY, "init_images": [made.json()["images"][0]], "denoising_strength": 0.5,
            "override_settings": {"sd_model_checkpoint": "tiny-a"}}
    answer = client.post("/sdapi/v1/img2img", json=body)
    assert answer.status_code == 200, answer.text
    assert decode_png(answer.json()["images"][0]).size == (64, 64)


def test_what_the_cluster_cannot_run_yet_is_a_clear_501(client: httpx.Client) -> None:
    picture = txt2img(client, "tiny-a").json()["images"][0]
    answer = client.post("/sdapi/v1/extra-single-image", json={"image": picture, "upscaling_resize": 2,
                                                               "upscaler_1": "Lanczos"})
    assert answer.status_code == 501, answer.text
    assert "not available on the cluster yet" in answer.json()["detail"]


def test_the_cache_rate_limits_and_tokens_live_in_redis(cluster: Cluster) -> None:
    """A seeded request asked again is answered from Redis (same bytes, no second generation on the replica);
    the API needs the token; the fifth generation in a minute is a 429 counted in Redis."""
    import redis

    auth = {"Authorization": f"Bearer {cluster.token}"}
    with httpx.Client(base_url=cluster.url, timeout=180) as http:
        assert txt2img(http, prefix="/cached", seed=99).status_code == 401
        http.headers.update(auth)
        first = txt2img(http, prefix="/cached", seed=99)
        assert first.status_code == 200, first.text
        jobs = sum(sum(figures.get("jobs", {}).values()) for figures in cluster.stats("cached").values())
        again = txt2img(http, prefix="/cached", seed=99)
        assert again.status_code == 200
        assert again.json()["images"] == first.json()["images"]
        assert json.loads(again.json()["info"])["cache"] == "hit"
        assert sum(sum(f.get("jobs", {}).values()) for f in cluster.stats("cached").values()) == jobs
        assert redis.Redis.from_url(cluster.redis_url + "/0").zcard("sdlocal:cache:lru") == 1
        codes = [txt2img(http, prefix="/cached", seed=-1).status_code for _ in range(3)]
        assert codes == [200, 200, 429], codes  # 2 before + 2 = the 4 allowed; the cache hit counted too
        metrics = http.get("/cached/metrics").text
    assert 'sdlocal_api_token_requests_total{token="alice"}' in metrics
    assert 'sdlocal_result_cache_requests_total{result="hit"} 1.0' in metrics
    assert redis.Redis.from_url(cluster.redis_url + "/1").keys("*alice*")  # the limit's count is in Redis
