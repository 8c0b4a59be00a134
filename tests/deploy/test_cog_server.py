"""predict.py in Cog's real server (coglet 0.23.1), without Docker: started the way a Cog image starts it, from a
temp folder holding copies of cog.yaml and predict.py and the schema cog build would write, over the tiny models.

What it proves: setup reaches READY, a prediction returns PNGs (as ``data:`` URLs) that carry their A1111
parameters, Cog's own validation answers 422 naming the field for an input outside the constraints, a request-rule
error fails only that prediction with sdlocal's message, and the server keeps serving afterwards.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from PIL import Image

from tests.engine.conftest import model_name
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
MODEL = model_name("tiny-sd1-safetensors.safetensors")
READY_TIMEOUT = 180.0  # seconds: importing torch and loading the tiny model on a busy 2-core machine
COGLET_PREDICTIONS = Path("/tmp/coglet/predictions")  # where coglet 0.23.1 keeps each prediction's files


@dataclass
class CogServer:
    url: str
    log: Path
    process: subprocess.Popen
    prediction_ids: list[str] = field(default_factory=list)

    def predict(self, **inputs: Any) -> httpx.Response:
        response = httpx.post(f"{self.url}/predictions", json={"input": inputs}, timeout=120)
        body = response.json()
        if isinstance(body, dict) and body.get("id"):
            self.prediction_ids.append(body["id"])
        return response

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-6000:]


def server_env(work: Path, data_dir: Path, models_dir: Path, port: int, runner: str) -> dict[str, str]:
    """The environment a Cog image gives its server, with this venv's python first on PATH: coglet starts its
    worker as a bare ``python``, and another interpreter would leave the health check STARTING forever."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SDLOCAL_", "COG_"))}
    env.update({
        "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        "PYTHONPATH": str(ROOT),  # sdlocal from this checkout; nothing is written into it
        "COG_PREDICT_TYPE_STUB": runner, "PORT": str(port), "HF_HUB_OFFLINE": "1",
        "SDLOCAL_DATA_DIR": str(data_dir), "SDLOCAL_MODELS_DIRS": str(models_dir),
        "SDLOCAL_DEVICE": "cpu", "SDLOCAL_PRECISION": "fp32", "TMPDIR": str(work / "tmp"),
    })
    return env


def wait_ready(server: CogServer) -> None:
    """Poll /health-check until READY; fail with the server's output if setup fails, it exits, or time runs out."""
    deadline = time.monotonic() + READY_TIMEOUT
    status = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"the Cog server exited with {server.process.returncode}:\n{server.output()}")
        try:
            status = httpx.get(f"{server.url}/health-check", timeout=5).json().get("status", "?")
        except httpx.HTTPError:
            status = "no answer"
        if status == "READY":
            return
        if status in ("SETUP_FAILED", "DEFUNCT"):
            pytest.fail(f"the Cog server's setup failed ({status}):\n{server.output()}")
        time.sleep(0.2)
    pytest.fail(f"the Cog server was not READY within {READY_TIMEOUT:.0f} s (last: {status}):\n{server.output()}")


def stop(server: CogServer) -> None:
    """End the server's whole process group (server and worker), then remove the files coglet kept for it."""
    try:
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=15)
    except ProcessLookupError:
        pass
    for prediction_id in server.prediction_ids:
        shutil.rmtree(COGLET_PREDICTIONS / prediction_id, ignore_errors=True)


@pytest.fixture(scope="module")
def cog_server(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CogServer]:
    work = tmp_path_factory.mktemp("cog")
    for name in ("cog.yaml", "predict.py"):
        shutil.copy(ROOT / name, work / name)
    (work / "tmp").mkdir()
    runner = yaml.safe_load((work / "cog.yaml").read_text(encoding="utf-8"))["run"]
    port = free_port()
    env = server_env(work, work / "data", tiny_models_dir, port, runner)
    subprocess.run([sys.executable, str(ROOT / "tools" / "cog_schema.py")], cwd=work, env=env, check=True,
                   capture_output=True, text=True)
    assert (work / ".cog" / "openapi_schema.json").is_file()
    log = work / "server.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"], cwd=work,
                                   env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    server = CogServer(url=f"http://127.0.0.1:{port}", log=log, process=process)
    try:
        wait_ready(server)
        yield server
    finally:
        stop(server)
        shutil.rmtree(work, ignore_errors=True)


def decode_png(data_url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix), data_url[:60]
    image = Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix):])))
    image.load()
    return image


def test_a_prediction_returns_pngs_with_their_parameters(cog_server: CogServer) -> None:
    response = cog_server.predict(prompt="a red cube on a table", negative_prompt="blurry", width=64, height=64,
                                  steps=2, sampler="Euler", seed=4321, num_outputs=2, model=MODEL)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "succeeded", body
    images = [decode_png(url) for url in body["output"]]
    assert [image.size for image in images] == [(64, 64), (64, 64)]
    for image, seed in zip(images, (4321, 4322), strict=True):
        parameters = image.info["parameters"]
        assert parameters.startswith("a red cube on a table\nNegative prompt: blurry\n")
        assert f"Seed: {seed}," in parameters and f"Model: {MODEL}" in parameters


@pytest.mark.parametrize(("inputs", "field_name"), [
    ({"prompt": "a cube", "width": 9999}, "width"),
    ({"prompt": "a cube", "steps": 0}, "steps"),
    ({"prompt": "a cube", "sampler": "Euler z"}, "sampler"),
    ({"width": 64}, "prompt"),
])
def test_an_input_outside_the_constraints_is_cogs_422_naming_it(cog_server: CogServer, inputs: dict,
                                                                field_name: str) -> None:
    response = cog_server.predict(**inputs)
    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "input", field_name]]


def test_a_request_rule_error_fails_that_prediction_with_sdlocals_message(cog_server: CogServer) -> None:
    response = cog_server.predict(prompt="a cube", width=100, height=64, steps=2, model=MODEL)
    body = response.json()
    assert body["status"] == "failed"
    assert "width: 100 is not allowed; must be a multiple of 8 (try 96 or 104)" in body["error"]
    unknown = cog_server.predict(prompt="a cube", width=64, height=64, steps=2, model="no-such-model").json()
    assert unknown["status"] == "failed" and "model: 'no-such-model' is not a known model" in unknown["error"]
    # and the server still serves
    assert httpx.get(f"{cog_server.url}/health-check", timeout=5).json()["status"] == "READY"
    again = cog_server.predict(prompt="a cube", width=64, height=64, steps=2, seed=1, model=MODEL).json()
    assert again["status"] == "succeeded" and len(again["output"]) == 1


def test_the_schema_is_served(cog_server: CogServer) -> None:
    schema = httpx.get(f"{cog_server.url}/openapi.json", timeout=5).json()
    assert schema["components"]["schemas"]["Input"]["required"] == ["prompt"]
