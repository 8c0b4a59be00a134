"""A real sdlocal server for the API tests: tiny random-weight models in a temporary data dir, on a free port.

The server is the production app (``create_app``) run by uvicorn in a thread of the test process, so tests
talk real HTTP to it and can still reach into ``services`` to force failures.
"""

from __future__ import annotations

import base64
import io
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read once when huggingface_hub is imported: before diffusers

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.servers import free_port, serving

MODEL_A = "tiny-a"
MODEL_B = "tiny-b"


@dataclass
class Server:
    url: str
    services: Any
    data_dir: Path
    models_dir: Path

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 120), **kwargs)


def start_server(data_dir: Path, models: list[str], app_options: dict[str, Any] | None = None,
                 uvicorn_options: dict[str, Any] | None = None, **settings_values: Any) -> Iterator[Server]:
    """Write tiny models, build the services and the app, serve it, and wait until the first model is loaded."""
    from sdlocal.engine.synthetic import save_tiny_model
    from sdlocal.server import create_app
    from sdlocal.services import build_services
    from sdlocal.settings import Settings

    models_dir = data_dir / "models" / "Stable-diffusion"
    models_dir.mkdir(parents=True)
    for name in models:
        save_tiny_model(models_dir / name, family="sd1", fmt="diffusers")
    port = free_port()
    # Off unless a test asks for it: these tests send the same seeded requests again and need each one to reach
    # the queue; tests/api/test_result_cache.py is where the cache is on.
    settings_values.setdefault("api_cache_mb", 0)
    settings = Settings(data_dir=data_dir, port=port, device="cpu", precision="fp32", **settings_values)
    services = build_services(settings)
    app = create_app(services, settings, **(app_options or {}))
    try:
        with serving(app, port, **(uvicorn_options or {})) as url:
            if models:
                load = services.start_background_load()
                load.wait(180)
                assert services.engine.current_model is not None, services.load_status()
            yield Server(url=url, services=services, data_dir=data_dir, models_dir=models_dir)
    finally:
        services.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The API alone (``--nowebui``), two tiny models, a queue that holds 2 waiting jobs."""
    yield from start_server(tmp_path_factory.mktemp("sdlocal-api"), [MODEL_A, MODEL_B], nowebui=True, api=True,
                            queue_size=2)


@pytest.fixture
def client(api: Server) -> Iterator[httpx.Client]:
    with api.client() as http:
        yield http


def decode_png(data: str) -> Image.Image:
    """A response image: raw base64 (no data: prefix, as A1111 sends it) of a PNG."""
    assert not data.startswith("data:")
    image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
    assert image.format == "PNG"
    image.load()
    return image
