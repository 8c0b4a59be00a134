"""The image's command runs here: the Dockerfile's ENV and ENTRYPOINT, a data dir laid out like the volumes.

No Docker engine on these machines, so the container is played by a subprocess: the image's environment with its
paths (/app, /data, /cache, /models) mapped to the checkout and temporary folders, the ENTRYPOINT as written,
and the tiny models where /models is mounted. It must answer /health, refuse /ready without a login, and answer
/ready with the login once the model is loaded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sdlocal import container, healthcheck
from tests.deploy.test_container_files import ROOT, image_env, only
from tests.servers import free_port

START_TIMEOUT = 180.0


# ----- the entry point's decisions --------------------------------------------------------------------------------

def test_the_container_always_listens_with_the_api_and_never_installs():
    command, _ = container.launch_command(["--medvram", "--api"], {}, python="py")
    assert command == ["py", str(ROOT / "launch.py"), "--skip-install", "--listen", "--api", "--medvram"]


@pytest.mark.parametrize(("argv", "env"), [(["--no-auth"], {}), ([], {"SDLOCAL_NO_AUTH": "1"})])
def test_no_auth_is_refused_with_the_way_to_log_in(argv, env):
    with pytest.raises(container.ContainerError, match="always asks for a login") as caught:
        container.launch_command(argv, env)
    assert "SDLOCAL_GRADIO_AUTH=user:password" in str(caught.value)


def test_a_docker_secret_file_becomes_the_login_file(tmp_path):
    secret = tmp_path / "sdlocal_auth"
    secret.write_text("me:secret\n")
    _, env = container.launch_command([], {"SDLOCAL_AUTH_SECRET": str(secret)})
    assert env["SDLOCAL_GRADIO_AUTH_PATH"] == str(secret) and "SDLOCAL_AUTH_SECRET" not in env
    _, env = container.launch_command(["--gradio-auth", "a:b"], {"SDLOCAL_AUTH_SECRET": str(secret)})
    assert "SDLOCAL_GRADIO_AUTH_PATH" not in env, "a login given explicitly wins over the secret"
    _, env = container.launch_command([], {"SDLOCAL_AUTH_SECRET": str(secret), "SDLOCAL_GRADIO_AUTH": "a:b"})
    assert "SDLOCAL_GRADIO_AUTH_PATH" not in env


def test_a_named_secret_that_is_not_mounted_stops_the_start(tmp_path):
    with pytest.raises(container.ContainerError, match="no such file in the container"):
        container.launch_command([], {"SDLOCAL_AUTH_SECRET": str(tmp_path / "missing")})


def test_the_default_secret_path_is_optional_and_empty_variables_are_unset(tmp_path):
    assert container.DEFAULT_SECRET == Path("/run/secrets/sdlocal_auth")
    _, env = container.launch_command([], {"SDLOCAL_GRADIO_AUTH": "", "SDLOCAL_API_AUTH": "", "KEEP": ""})
    assert "SDLOCAL_GRADIO_AUTH" not in env and "SDLOCAL_API_AUTH" not in env and env["KEEP"] == ""


def test_no_auth_exits_with_the_message(capsys):
    assert container.main(["--no-auth"]) == 2
    assert "FAILURE: --no-auth" in capsys.readouterr().err


# ----- the health probe -------------------------------------------------------------------------------------------

def test_health_url_follows_the_port_and_tls_settings():
    assert healthcheck.health_url({}) == "http://127.0.0.1:7860/health"
    assert healthcheck.health_url({"SDLOCAL_PORT": "9000", "SDLOCAL_TLS_CERTFILE": "/c.pem"}) == \
        "https://127.0.0.1:9000/health"


def test_probe_of_a_closed_port_is_unhealthy_with_the_reason():
    healthy, seen = healthcheck.probe(f"http://127.0.0.1:{free_port()}/health", timeout=2)
    assert not healthy and "/health" in seen


# ----- the image's command, run -----------------------------------------------------------------------------------

def container_env(tmp_path: Path, models: Path, port: int, **extra: str) -> dict[str, str]:
    """The image's ENV with its paths mapped here, plus what a `docker run -e` would add."""
    places = {"/app": str(ROOT), "/data": str(tmp_path / "data"), "/cache": str(tmp_path / "cache"),
              "/models": str(models)}
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin{os.pathsep}/bin",
           "HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "SDLOCAL_PORT": str(port)}
    for key, value in image_env().items():
        for inside, here in places.items():
            if value == inside or value.startswith(inside + "/"):
                value = here + value[len(inside):]
        env.setdefault(key, value)
    (tmp_path / "data").mkdir()
    (tmp_path / "home").mkdir()
    return {**env, **extra}


def entrypoint() -> list[str]:
    command = list(only("ENTRYPOINT").value) + list(only("CMD").value)
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


@dataclass
class Running:
    base: str
    log: Path
    process: subprocess.Popen

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, path: str, **options) -> None:
        seen: list[str] = []

        def answered() -> bool:
            try:
                response = httpx.get(self.base + path, timeout=5, **options)
            except httpx.HTTPError as exc:
                seen.append(repr(exc))
                return False
            seen.append(f"{response.status_code} {response.text[:300]}")
            return response.status_code == 200

        wait_until(answered, self.process, self.log, path, seen)


@contextmanager
def running_image(env: dict[str, str], tmp_path: Path) -> Iterator[Running]:
    log = tmp_path / "container.log"
    with log.open("wb") as out:
        process = subprocess.Popen(entrypoint(), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base = f"http://127.0.0.1:{env['SDLOCAL_PORT']}"
    try:
        running = Running(base, log, process)
        running.wait_for("/health")
        yield running
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def status(url: str, **options) -> int:
    try:
        return httpx.get(url, timeout=5, **options).status_code
    except httpx.HTTPError:
        return 0


def wait_until(condition, process: subprocess.Popen, log: Path, what: str, seen: list[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            pytest.fail(f"the image's command exited ({process.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    last = seen[-1] if seen else "nothing"
    pytest.fail(f"no {what} within {START_TIMEOUT} s (last answer: {last}):\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def one_model(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder mounted like /models: one tiny checkpoint (and the offline config beside it that the tiny
    random models need), so the first load is quick."""
    mounted = tmp_path_factory.mktemp("mounted-models")
    shutil.copyfile(tiny_models_dir / "tiny-sd1-safetensors.safetensors", mounted / "tiny-sd1.safetensors")
    shutil.copytree(tiny_models_dir / "tiny-sd1-safetensors.config", mounted / "tiny-sd1.config")
    return mounted


def test_image_command_serves_ready_behind_a_generated_password(tmp_path, one_model):
    env = container_env(tmp_path, one_model, free_port())
    with running_image(env, tmp_path) as image:
        base = image.base
        assert status(base + "/ready") == 401, "the container is never open without a login"
        match = re.search(r"user: (\S+)\n\s*password: (\S+)", image.output())
        assert match, image.output()[-3000:]
        login = (match.group(1), match.group(2))
        image.wait_for("/ready", auth=login)
        assert status(base + "/sdapi/v1/sd-models") == 401
        models = httpx.get(base + "/sdapi/v1/sd-models", auth=login, timeout=10).json()
        assert [m["model_name"] for m in models] == ["tiny-sd1"]
        probe = subprocess.run([sys.executable, "-m", "sdlocal.healthcheck"], env=env, capture_output=True,
                               text=True, check=False)
        assert probe.returncode == 0 and "HTTP 200" in probe.stdout


def test_image_command_takes_the_login_from_the_environment(tmp_path, one_model):
    env = container_env(tmp_path, one_model, free_port(), SDLOCAL_GRADIO_AUTH="me:long-secret")
    with running_image(env, tmp_path) as image:
        assert status(image.base + "/ready", auth=("me", "wrong")) == 401
        image.wait_for("/ready", auth=("me", "long-secret"))
        assert "password:" not in image.output(), "no password is generated when one is given"
