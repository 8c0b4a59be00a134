"""API tokens (Bearer, hashed in a file) beside --api-auth, and the rate limits per token or address, through the
real API; per-token counts and refusals in /metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sdlocal.api.tokens import TokenFileError, new_token, read_tokens
from tests.api.conftest import MODEL_A, Server, start_server
from tests.servers import redis_server

SMALL = {"prompt": "a cube", "steps": 1, "width": 64, "height": 64, "seed": -1}


def test_the_tokens_file_holds_hashes_and_names(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    one = new_token(path, "alice")
    two = new_token(path)
    text = path.read_text()
    assert one not in text and two not in text and "alice" in text
    names = [token.name for token in read_tokens(path)]
    assert names[0] == "alice" and names[1].startswith("token-")
    with pytest.raises(TokenFileError, match="alice"):
        new_token(path, "alice")
    (tmp_path / "bad.txt").write_text("sdl_plaintexttoken alice\n")
    with pytest.raises(TokenFileError, match="line 1.*never the token itself"):
        read_tokens(tmp_path / "bad.txt")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    folder = tmp_path_factory.mktemp("sdlocal-tokens")
    tokens = folder / "tokens.txt"
    alice, bob = new_token(tokens, "alice"), new_token(tokens, "bob")
    for server in start_server(folder / "data", [MODEL_A], nowebui=True, api=True, api_tokens=tokens,
                               api_auth=[("admin", "secret")], api_rate_limit="3/minute"):
        yield server, alice, bob


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_or_the_basic_login_is_needed(guarded: tuple[Server, str, str]) -> None:
    server, alice, _ = guarded
    with httpx.Client(base_url=server.url, timeout=60) as client:
        refused = client.get("/sdapi/v1/sd-models")
        assert refused.status_code == 401
        assert "Bearer" in refused.headers["WWW-Authenticate"] and "Basic" in refused.headers["WWW-Authenticate"]
        wrong = client.get("/sdapi/v1/sd-models", headers=bearer(alice + "x"))
        assert wrong.status_code == 401 and wrong.json()["field"] == "Authorization"
        assert client.get("/sdapi/v1/sd-models", headers=bearer(alice)).status_code == 200
        assert client.get("/sdapi/v1/sd-models", auth=("admin", "secret")).status_code == 200
        assert client.get("/sdapi/v1/sd-models", auth=("admin", "nope")).status_code == 401


def test_each_client_has_its_own_allowance_and_429_says_when_to_come_back(guarded: tuple[Server, str, str]) -> None:
    server, alice, bob = guarded
    with httpx.Client(base_url=server.url, timeout=120) as client:
        codes = [client.post("/sdapi/v1/txt2img", json=SMALL, headers=bearer(alice)).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        over = client.post("/sdapi/v1/txt2img", json=SMALL, headers=bearer(alice))
        assert over.status_code == 429
        assert 1 <= int(over.headers["Retry-After"]) <= 60
        assert "alice" in over.json()["detail"] and "3 per 1 minute" in over.json()["detail"]
        # polling and listing are not generation: never limited
        for _ in range(5):
            assert client.get("/sdapi/v1/progress", headers=bearer(alice)).status_code == 200
        assert client.post("/sdapi/v1/txt2img", json=SMALL, headers=bearer(bob)).status_code == 200
        metrics = client.get("/metrics", auth=("admin", "secret")).text
    assert 'sdlocal_api_token_requests_total{token="alice"}' in metrics
    assert "sdlocal_rate_limited_total 1.0" in metrics


def test_limits_are_off_on_localhost_by_default_and_on_when_listening() -> None:
    from sdlocal.api.ratelimit import DEFAULT_SHARED_LIMIT, effective_limits
    from sdlocal.settings import Settings

    assert effective_limits(Settings(data_dir=Path("/tmp/x"))) == ""
    assert effective_limits(Settings(data_dir=Path("/tmp/x"), listen=True)) == DEFAULT_SHARED_LIMIT
    assert effective_limits(Settings(data_dir=Path("/tmp/x"), listen=True, api_rate_limit="off")) == ""
    assert effective_limits(Settings(data_dir=Path("/tmp/x"), api_rate_limit="5/second")) == "5/second"


def test_a_bad_limit_names_the_setting() -> None:
    from sdlocal.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="api_rate_limit.*30/minute"):
        Settings(data_dir=Path("/tmp/x"), api_rate_limit="lots")


def test_limits_in_redis_are_shared_by_two_servers(tmp_path: Path) -> None:
    """Two API processes on one Redis count one allowance per client, as the cluster's ingress replicas do."""
    from starlette.requests import Request

    from sdlocal.api.ratelimit import RateLimiter
    from sdlocal.api.sdapi import ApiError

    def request() -> Request:
        return Request({"type": "http", "method": "POST", "path": "/sdapi/v1/txt2img", "headers": [],
                        "client": ("10.0.0.7", 5000), "state": {}, "query_string": b""})

    with redis_server() as url:
        first, second = RateLimiter("2/minute", url), RateLimiter("2/minute", url)
        first(request())
        second(request())
        started = time.time()
        with pytest.raises(ApiError) as refused:
            first(request())
        assert refused.value.status == 429 and "10.0.0.7" in refused.value.detail
        assert 1 <= int(refused.value.headers["Retry-After"]) <= 60 + (time.time() - started)
