"""The starter-model download, against a local fake Hub: verified, resumable, and clean when it fails."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sdlocal.starter import STARTER_MODELS, StarterDownloadError, download_starter
from tests.servers import free_port

PAYLOAD = bytes(range(256)) * 12_000  # about 3 MB: several chunks
SPEC = replace(
    STARTER_MODELS["sd15"], repo="org/repo", filename="tiny.safetensors", sha256=hashlib.sha256(PAYLOAD).hexdigest()
)


class FakeHub(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /org/repo/resolve/main/tiny.safetensors, with Range support like the real Hub."""

    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        FakeHub.requests.append(self.headers.get("Range") or "")
        if self.path != "/org/repo/resolve/main/tiny.safetensors":
            self.send_error(404, "Entry not found")
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeHub.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_verifies_and_lands_under_its_final_name(tmp_path: Path, hub: str) -> None:
    seen: list[tuple[int, int]] = []
    dest = tmp_path / "models" / "Stable-diffusion"
    path = download_starter(dest, SPEC, endpoint=hub, progress=lambda done, total: seen.append((done, total)))
    assert path == dest / "tiny.safetensors"
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in dest.iterdir()] == ["tiny.safetensors"]  # no .part left
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert len(seen) >= 3 and all(a[0] < b[0] for a, b in zip(seen, seen[1:], strict=False))
    # a second call finds the file and does not download again
    assert download_starter(dest, SPEC, endpoint=hub) == path
    assert len(FakeHub.requests) == 1


def test_download_resumes_a_partial_file(tmp_path: Path, hub: str) -> None:
    (tmp_path / ".tiny.safetensors.part").write_bytes(PAYLOAD[:1_000_000])
    path = download_starter(tmp_path, SPEC, endpoint=hub)
    assert FakeHub.requests == ["bytes=1000000-"]
    assert path.read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes_the_file_and_says_so(tmp_path: Path, hub: str) -> None:
    wrong = replace(SPEC, sha256="0" * 64)
    with pytest.raises(StarterDownloadError, match="sha256") as caught:
        download_starter(tmp_path, wrong, endpoint=hub)
    assert "deleted" in str(caught.value) and hashlib.sha256(PAYLOAD).hexdigest() in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_on_the_hub_is_a_clear_error(tmp_path: Path, hub: str) -> None:
    with pytest.raises(StarterDownloadError, match="404"):
        download_starter(tmp_path, replace(SPEC, filename="nope.safetensors"), endpoint=hub)
    assert list(tmp_path.iterdir()) == []


def test_offline_fails_cleanly_with_manual_instructions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    port = free_port()  # nobody listens on it: connection refused, like a machine offline
    with pytest.raises(StarterDownloadError) as caught:
        download_starter(tmp_path / "models", SPEC, endpoint=f"http://127.0.0.1:{port}")
    message = str(caught.value)
    assert "offline" in message and "by hand" in message and str(tmp_path / "models") in message
    assert not any((tmp_path / "models").glob("*.safetensors"))


def test_hf_hub_offline_means_no_connection_at_all(tmp_path: Path, hub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(StarterDownloadError, match="HF_HUB_OFFLINE"):
        download_starter(tmp_path, SPEC, endpoint=hub)
    assert FakeHub.requests == []


def test_hf_endpoint_variable_is_honoured(tmp_path: Path, hub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub)
    assert download_starter(tmp_path, SPEC).read_bytes() == PAYLOAD
