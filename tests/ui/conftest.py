"""A real sdlocal server for the UI tests: a tiny random-weight model in a temporary data dir, on a free port.

One server per test module (start-up costs a few seconds); tests that change shared state (presets, files)
use names of their own so their order does not matter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port, serving

BAD_PRESET = {"name": "Broken width", "family": "sd1", "width": 513, "height": 512, "steps": 4, "sampler": "Euler",
              "schedule": "Automatic", "cfg_scale": 7}


@dataclass
class RunningApp:
    url: str
    services: Any
    data_dir: Path
    model_name: str


def start_app(data_dir: Path, bad_files: bool = True) -> Iterator[RunningApp]:
    """Build the tiny model and the services, serve the app with the real server, and wait for the model.

    ``bad_files`` adds a file that is not a model and a preset with a bad width, which the page must report.
    """
    from sdlocal.engine.synthetic import save_tiny_model
    from sdlocal.services import build_services
    from sdlocal.settings import Settings

    models = data_dir / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    save_tiny_model(models / "tiny-sd15.safetensors", family="sd1", fmt="safetensors")
    port = free_port()
    settings = Settings(data_dir=data_dir, port=port)
    if bad_files:
        (models / "not-a-model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
        settings.presets_dir.mkdir(parents=True, exist_ok=True)
        (settings.presets_dir / "broken.json").write_text(json.dumps(BAD_PRESET))
    services = build_services(settings)

    from sdlocal.server import create_app

    app = create_app(services)
    try:
        with serving(app, port, health_path="/") as base:
            deadline = time.monotonic() + 180
            while services.engine.current_model is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert services.engine.current_model is not None, "the tiny model did not load in the background"
            yield RunningApp(url=base + "/", services=services, data_dir=data_dir,
                             model_name=services.engine.current_model.name)
    finally:
        stop = getattr(services, "close", None) or getattr(services.queue, "close", None)
        if callable(stop):
            stop()


@pytest.fixture(scope="module")
def running_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    yield from start_app(tmp_path_factory.mktemp("sdlocal-data"))
