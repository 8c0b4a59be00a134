"""Health, readiness, Prometheus metrics, auth, and the API beside the UI on one port."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import Server, start_server

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


def parse_prometheus(text: str) -> dict[str, dict[str, float]]:
    """Every sample as {metric name: {label text: value}}; fails on any line the text format does not allow."""
    samples: dict[str, dict[str, float]] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("# HELP "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not Prometheus text: {line!r}"
        name, labels, value = match.group(1), match.group(2) or "", match.group(3)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or base in typed, f"{name} has no # TYPE line"
        samples.setdefault(name, {})[labels] = float(value)
    return samples


def test_health_ready_and_metrics_that_move(client: httpx.Client) -> None:
    assert client.get("/health").json()["status"] == "ok"
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    before = parse_prometheus(client.get("/metrics").text)
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 2, "width": 64, "height": 64,
                                                   "batch_size": 2}).status_code == 200
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = parse_prometheus(response.text)
    images = after["sdlocal_images_generated_total"][""] - before["sdlocal_images_generated_total"][""]
    assert images == 2
    assert after["sdlocal_generation_seconds_count"][""] == before["sdlocal_generation_seconds_count"][""] + 1
    assert after["sdlocal_generation_seconds_bucket"]['{le="+Inf"}'] == after["sdlocal_generation_seconds_count"][""]
    txt2img_ok = '{route="/sdapi/v1/txt2img",method="POST",status="200"}'
    assert after["sdlocal_http_requests_total"][txt2img_ok] == \
        before["sdlocal_http_requests_total"].get(txt2img_ok, 0) + 1
    assert after["sdlocal_queue_depth"][""] == 0
    loaded = after["sdlocal_model_loaded"]
    assert list(loaded.values()) == [1] and 'model="tiny-a' in next(iter(loaded))


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The UI and the API together, the API behind --api-auth, and no model at all."""
    yield from start_server(tmp_path_factory.mktemp("sdlocal-auth"), [], api=True, api_auth=[("alice", "s3cret")])


def test_api_auth_guards_every_api_route(guarded: Server) -> None:
    with guarded.client() as http:
        for path in ("/sdapi/v1/sd-models", "/sdapi/v1/options", "/sdapi/v1/progress", "/metrics", "/ready"):
            denied = http.get(path)
            assert denied.status_code == 401, path
            assert denied.headers["WWW-Authenticate"].startswith("Basic")
            assert http.get(path, auth=("alice", "wrong")).status_code == 401
        assert http.post("/sdapi/v1/txt2img", json={"prompt": "x"}).status_code == 401
        assert http.get("/sdapi/v1/sd-models", auth=("alice", "s3cret")).json() == []
        assert http.get("/health").status_code == 200  # the liveness probe stays open


def test_the_ui_and_the_api_share_one_port(guarded: Server) -> None:
    with guarded.client() as http:
        page = http.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert http.get("/sdapi/v1/samplers", auth=("alice", "s3cret")).status_code == 200


def test_ready_is_503_with_the_reason_until_a_model_can_be_served(guarded: Server) -> None:
    with guarded.client(auth=("alice", "s3cret")) as http:
        response = http.get("/ready")
        assert response.status_code == 503
        assert response.json()["ready"] is False and "model" in response.json()["reason"].lower()
        failed = http.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 2, "width": 64, "height": 64})
        assert failed.status_code == 404 and "safetensors" in failed.json()["detail"]


def test_listening_on_the_network_makes_the_api_ask_for_the_ui_login() -> None:
    from sdlocal.api.auth import api_credentials
    from sdlocal.settings import Settings

    assert api_credentials(Settings(data_dir="/tmp/unused")) == []
    listening = Settings(data_dir="/tmp/unused", listen=True, gradio_auth=[("bob", "pw")])
    assert api_credentials(listening) == [("bob", "pw")]
    assert api_credentials(Settings(data_dir="/tmp/unused", listen=True, no_auth=True)) == []
    assert api_credentials(Settings(data_dir="/tmp/unused", listen=True, api_auth=[("a", "b")],
                                    gradio_auth=[("bob", "pw")])) == [("a", "b")]
