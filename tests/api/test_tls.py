"""HTTPS with --tls-keyfile/--tls-certfile, through the real ``serve()``, and the warning for logins over HTTP."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdlocal.server import describe, plain_http_warning, serve
from sdlocal.settings import Settings
from tests.servers import free_port


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed key and certificate for 127.0.0.1, made here (the cryptography package is not installed)."""
    if shutil.which("openssl") is None:
        pytest.skip("neither the cryptography package nor the openssl program is available to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return key, cert


def test_serve_answers_over_https_with_the_given_certificate(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    key, cert = certificate
    port = free_port()
    settings = Settings(data_dir=tmp_path, port=port, device="cpu", nowebui=True, api=True, tls_keyfile=key,
                        tls_certfile=cert)
    seen: dict[str, Any] = {}

    def probe() -> int:
        """Runs once the server answers; a non-zero return stops it (serve's own mechanism)."""
        try:
            trusted = ssl.create_default_context(cafile=str(cert))
            seen["health"] = httpx.get(f"https://127.0.0.1:{port}/health", verify=trusted, timeout=30).json()
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=30)  # plain HTTP is not served
            seen["plain_refused"] = True
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            seen["error"] = exc
        return 3

    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", serve(settings, after_start=probe)))
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "serve() did not stop"
    assert "error" not in seen, seen.get("error")
    assert seen["health"]["status"] == "ok" and seen["plain_refused"] and result["code"] == 3


def test_describe_prints_https_urls_when_tls_is_on(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    key, cert = certificate
    lines = describe(Settings(data_dir=tmp_path, port=7861, api=True, listen=True, gradio_auth=[("a", "b")],
                              tls_keyfile=key, tls_certfile=cert))
    urls = [word for line in lines for word in line.split() if "://" in word]
    assert urls and all(url.startswith("https://") for url in urls), lines
    assert any(line.startswith("HTTPS: on") for line in lines)
    assert not any("WARNING" in line for line in lines)


@pytest.mark.parametrize(("values", "warned"), [
    ({"listen": True, "gradio_auth": [("a", "b")]}, True),
    ({"listen": True, "nowebui": True, "api_auth": [("a", "b")]}, True),
    ({"listen": True, "no_auth": True}, False),  # no login to leak (--no-auth has its own warning)
    ({"gradio_auth": [("a", "b")]}, False),  # local only: the login never leaves the machine
    ({"share": True, "gradio_auth": [("a", "b")]}, False),  # the tunnel is HTTPS at its public end
])
def test_a_login_over_plain_http_on_the_network_is_warned(tmp_path: Path, values: dict, warned: bool) -> None:
    settings = Settings(data_dir=tmp_path, **values)
    warning = plain_http_warning(settings)
    assert (warning is not None) == warned
    if warned:
        assert "--tls-keyfile" in warning and "unencrypted" in warning
        assert warning in describe(settings)
        assert all(url.startswith("http://") for line in describe(settings) for url in line.split() if "://" in url)
