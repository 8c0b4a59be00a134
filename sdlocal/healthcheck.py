"""The container's health probe: ``python -m sdlocal.healthcheck`` exits 0 when ``/health`` answers 200.

Slim Python images have no curl or wget, and ``/health`` is the liveness route (always open, no login; it
answers while the first model is still loading). ``/ready`` is the one for orchestrators that route traffic: it
needs the API login and is 503 until a model can be served. The port and scheme follow the same settings the
server reads (``SDLOCAL_PORT``, ``SDLOCAL_TLS_CERTFILE``), so a container started on another port stays healthy.
Standard library only: it runs every 30 s and must not import torch.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

DEFAULT_PORT = 7860


def health_url(env: Mapping[str, str]) -> str:
    port = env.get("SDLOCAL_PORT") or str(DEFAULT_PORT)
    scheme = "https" if env.get("SDLOCAL_TLS_CERTFILE") else "http"
    return f"{scheme}://127.0.0.1:{port}/health"


def probe(url: str, timeout: float = 8.0) -> tuple[bool, str]:
    """(healthy, what was seen): a certificate for another name is fine here, it is our own server on loopback."""
    context = ssl._create_unverified_context() if url.startswith("https") else None  # noqa: S323 - loopback probe
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310 - fixed URL
            return response.status == 200, f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{url}: {exc}"


def main() -> int:
    healthy, seen = probe(health_url(os.environ))
    print(seen)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
