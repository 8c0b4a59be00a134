"""Health, readiness, Prometheus metrics, auth, and the API beside the UI on one port."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import Server, start_server

LIMIT = 4096


def parse_prometheus(text: str) -> dict[str, dict[str, float]]:
    """Every sample as {sample name: {'{label="value",...}' (sorted): value}}, read by prometheus_client's parser
    (which fails on text the format does not allow)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            pairs = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})["{" + pairs + "}" if pairs else ""] = sample.value
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
    txt2img_ok = '{method="POST",route="/sdapi/v1/txt2img",status="200"}'
    assert after["sdlocal_http_requests_total"][txt2img_ok] == \
        before["sdlocal_http_requests_total"].get(txt2img_ok, 0) + 1
    assert after["sdlocal_queue_depth"][""] == 0
    loaded = after["sdlocal_model_loaded"]
    assert list(loaded.values()) == [1] and 'model="tiny-a' in next(iter(loaded))
    assert after["sdlocal_jobs_total"]['{outcome="done"}'] == before["sdlocal_jobs_total"]['{outcome="done"}'] + 1
    assert after["sdlocal_queue_running"][""] == 0 and after["sdlocal_uptime_seconds"][""] > 0


def test_each_app_has_its_own_registry(api: Server) -> None:
    """Two apps in one process (tests, or a UI and an API app) never share counters or the global registry."""
    from prometheus_client import REGISTRY

    from sdlocal.api.ops import Metrics

    first, second = Metrics(api.services), Metrics(api.services)
    first.count_request("/sdapi/v1/samplers", "GET", 200)
    ok = '{method="GET",route="/sdapi/v1/samplers",status="200"}'
    assert parse_prometheus(first.render().decode())["sdlocal_http_requests_total"][ok] == 1
    assert "sdlocal_http_requests_total" not in parse_prometheus(second.render().decode())
    assert not [family.name for family in REGISTRY.collect() if family.name.startswith("sdlocal_")]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The UI and the API together, the API behind --api-auth, no model at all, and API bodies up to 4 KiB."""
    yield from start_server(tmp_path_factory.mktemp("sdlocal-auth"), [], api=True, api_auth=[("alice", "s3cret")],
                            app_options={"max_body_bytes": LIMIT})


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


def test_docs_and_openapi_need_the_api_login(guarded: Server) -> None:
    with guarded.client() as http:
        for path in ("/docs", "/openapi.json"):
            denied = http.get(path)
            assert denied.status_code == 401, path
            assert denied.headers["WWW-Authenticate"].startswith("Basic") and "detail" in denied.json()
        assert "swagger" in http.get("/docs", auth=("alice", "s3cret")).text.lower()
        paths = http.get("/openapi.json", auth=("alice", "s3cret")).json()["paths"]
        assert "/sdapi/v1/txt2img" in paths and "/openapi.json" not in paths


def test_cross_site_requests_cannot_change_state(client: httpx.Client, api: Server,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A page on another site can make a browser POST here; its Origin header gives it away."""
    calls: list[str] = []
    monkeypatch.setattr(api.services.queue, "interrupt", lambda: calls.append("interrupt"))
    monkeypatch.setattr(api.services.queue, "skip", lambda: calls.append("skip"))
    for origin in ("https://evil.example", "null", api.url.replace("127.0.0.1", "localhost"),
                   api.url.rsplit(":", 1)[0] + ":1"):
        for path in ("/sdapi/v1/interrupt", "/sdapi/v1/skip", "/sdapi/v1/refresh-checkpoints"):
            refused = client.post(path, headers={"Origin": origin})
            assert refused.status_code == 403, (origin, path)
            body = refused.json()
            assert body["field"] == "Origin" and origin in body["detail"] and "Cross-site" in body["detail"]
    assert calls == []
    assert client.get("/sdapi/v1/progress", headers={"Origin": "https://evil.example"}).status_code == 200
    assert client.post("/sdapi/v1/interrupt", headers={"Origin": api.url}).status_code == 200  # its own pages
    assert client.post("/sdapi/v1/skip").status_code == 200  # scripts send no Origin
    assert calls == ["interrupt", "skip"]


def test_api_bodies_are_limited_with_a_413_naming_the_limit(guarded: Server) -> None:
    with guarded.client(auth=("alice", "s3cret")) as http:
        small = http.post("/sdapi/v1/png-info", json={"image": "A" * (LIMIT // 2)})
        assert small.status_code == 422  # read, and found not to be an image
        declared = http.post("/sdapi/v1/png-info", json={"image": "A" * (LIMIT * 2)})
        assert declared.status_code == 413
        assert declared.json()["limit"] == LIMIT and f"{LIMIT} bytes" in declared.json()["detail"]
        chunks = iter([b'{"image": "', b"A" * LIMIT, b"A" * LIMIT, b'"}'])  # no Content-Length: streamed
        streamed = http.post("/sdapi/v1/png-info", content=chunks, headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413 and streamed.json()["limit"] == LIMIT
        assert http.get("/health").status_code == 200


def test_gradio_uploads_keep_their_own_limit(guarded: Server) -> None:
    with guarded.client() as http:
        upload = http.post("/gradio_api/upload", files={"files": ("big.txt", b"x" * (LIMIT * 4), "text/plain")})
        assert upload.status_code == 200, upload.text
        assert len(upload.json()) == 1


def test_operations_metrics_for_the_alerts(client: httpx.Client, api: Server) -> None:
    """The figures the alert rules read: request latency, queue capacity and refusals, model loads (a switch is a
    load, a failed load is counted), and the NVML gauges' families even where no NVIDIA GPU is."""
    before = parse_prometheus(client.get("/metrics").text)
    switch = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                                    "override_settings": {"sd_model_checkpoint": "tiny-b"}})
    assert switch.status_code == 200
    after = parse_prometheus(client.get("/metrics").text)
    loads = after["sdlocal_model_loads_total"]
    assert loads['{outcome="loaded"}'] >= before["sdlocal_model_loads_total"]['{outcome="loaded"}'] + 1
    assert '{outcome="failed"}' in loads
    route = '{route="/sdapi/v1/txt2img"}'
    assert after["sdlocal_http_request_seconds_count"][route] == \
        before.get("sdlocal_http_request_seconds_count", {}).get(route, 0) + 1
    assert after["sdlocal_queue_capacity"][""] == api.services.queue.max_queue
    assert "sdlocal_queue_full_total" in after and "sdlocal_rate_limited_total" in after
    text = client.get("/metrics").text
    for family in ("sdlocal_gpu_utilization_percent", "sdlocal_gpu_memory_used_bytes",
                   "sdlocal_gpu_temperature_celsius", "sdlocal_api_token_requests_total",
                   "sdlocal_result_cache_requests_total"):
        assert f"# TYPE {family.removesuffix('_total')}" in text, family


def test_a_failed_model_load_is_counted(tmp_path) -> None:  # noqa: ANN001 - pytest's fixture
    from sdlocal.engine import Engine
    from sdlocal.engine.config import EngineConfig

    models = tmp_path / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    (models / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    engine = Engine(EngineConfig(data_dir=tmp_path, device="cpu", precision="fp32"))
    entries = [e for e in engine.models() if e.name == "broken"]
    if entries and entries[0].supported:
        with pytest.raises(Exception):  # noqa: B017 - which error a broken file gives is the loader's business
            engine.load("broken")
        assert engine.load_counts == {"loaded": 0, "failed": 1}
    else:
        assert engine.load_counts == {"loaded": 0, "failed": 0}  # refused before loading: not a load


def test_nvml_gauges_one_series_per_gpu() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from sdlocal.api.ops import nvml_metrics

    class Fixed:
        def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
            return nvml_metrics([(55.0, 2e9, 8e9, 71.0), (5.0, 1e9, 8e9, 40.0)])

    registry = CollectorRegistry()
    registry.register(Fixed())
    samples = parse_prometheus(generate_latest(registry).decode())
    assert samples["sdlocal_gpu_temperature_celsius"] == {'{gpu="0"}': 71.0, '{gpu="1"}': 40.0}
    assert samples["sdlocal_gpu_utilization_percent"]['{gpu="0"}'] == 55.0
    assert samples["sdlocal_gpu_memory_total_bytes"]['{gpu="1"}'] == 8e9
