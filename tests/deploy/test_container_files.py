"""The Dockerfile, .dockerignore and compose.yaml, checked offline: linters, the Compose schema, and their content.

There is no Docker engine on these machines, so what a build would show is checked from the files: hadolint on
the Dockerfile, the Compose specification's schema on compose.yaml, the Dockerfile's torch choice run through
``sh`` with pip replaced by a recorder, and the settings each file must agree on (user, port, volumes, probe).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HADOLINT = shutil.which("hadolint", path=str(BIN)) or "hadolint"
CHECK_JSONSCHEMA = shutil.which("check-jsonschema", path=str(BIN)) or "check-jsonschema"


def instructions(path: Path = ROOT / "Dockerfile") -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(path)))


def only(cmd: str) -> dockerfile.Command:
    found = [c for c in instructions() if c.cmd == cmd]
    assert len(found) == 1, f"expected one {cmd}, found {len(found)}"
    return found[0]


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))


# ----- Dockerfile -------------------------------------------------------------------------------------------------

def test_hadolint_passes_at_its_strictest_threshold():
    done = subprocess.run([HADOLINT, "--failure-threshold", "style", "Dockerfile"], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_is_live_it_fails_a_careless_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nUSER root\n")
    done = subprocess.run([HADOLINT, str(bad)], capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "DL3007" in done.stdout and "DL3002" in done.stdout


def test_every_ignored_hadolint_rule_is_named_and_explained():
    for number, line in enumerate((ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines(), 1):
        if "hadolint" in line and "ignore" in line:
            match = re.search(r"hadolint ignore=((?:DL|SC)\d+(?:,(?:DL|SC)\d+)*)\s*(.*)", line)
            assert match and len(match.group(2)) > 15, f"Dockerfile:{number} ignores a rule without saying why"


def test_the_base_image_is_the_slim_python_311():
    assert only("FROM").value[0] == "python:3.11-slim-bookworm"


def test_dependencies_and_code_are_separate_layers():
    """The lock and pip come before sdlocal's code, so a code change does not reinstall torch."""
    steps = instructions()
    order = [(c.cmd, c.value) for c in steps if c.cmd in ("COPY", "RUN")]
    lock_copy = next(i for i, (cmd, value) in enumerate(order) if cmd == "COPY" and "requirements.lock" in value)
    pip_run = next(i for i, (cmd, value) in enumerate(order) if cmd == "RUN" and "pip install" in value[0])
    code_copy = next(i for i, (cmd, value) in enumerate(order) if cmd == "COPY" and value[0] == "sdlocal")
    assert lock_copy < pip_run < code_copy
    assert order[lock_copy][1][:-1] == ("requirements.lock",), "only the lock goes into the dependency layer"
    assert "-r requirements.lock" in order[pip_run][1][0] and "--no-cache-dir" in order[pip_run][1][0]


def test_runs_as_a_numeric_non_root_user_with_volumes_port_and_probe():
    user = [c for c in instructions() if c.cmd == "USER"][-1].value[0]
    assert user == "1000:1000"
    assert set(only("VOLUME").value) == {"/data", "/cache"}
    assert only("EXPOSE").value == ("7860",)
    health = only("HEALTHCHECK")
    assert health.value == ("CMD", "python", "-m", "sdlocal.healthcheck")
    flags = dict(flag.lstrip("-").split("=", 1) for flag in health.flags)
    assert int(flags["start-period"].rstrip("s")) >= 120, "the first start imports torch and loads a model"
    assert only("ENTRYPOINT").value == ("python", "-m", "sdlocal.container")
    env = image_env()
    assert env["SDLOCAL_DATA_DIR"] == "/data" and env["HF_HOME"].startswith("/cache/")
    assert env["SDLOCAL_PORT"] == "7860" and env["SDLOCAL_MODELS_DIRS"] == "/models"


def image_env() -> dict[str, str]:
    """The image's ENV, as the container sees it."""
    env: dict[str, str] = {}
    for command in instructions():
        if command.cmd == "ENV":
            values = list(command.value)
            for key, value in zip(values[::2], values[1::2], strict=True):
                env[key] = shlex.split(value)[0] if value else ""
    return env


def torch_install_script() -> str:
    run = next(c for c in instructions() if c.cmd == "RUN" and "pip install" in c.value[0])
    return run.value[0]


def run_torch_choice(tmp_path: Path, **build_args: str) -> subprocess.CompletedProcess:
    """The Dockerfile's install step under ``sh`` with the build args, pip and python replaced by recorders."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    for tool in ("pip", "python"):
        (fake / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "$RECORD"\n')
        (fake / tool).chmod(0o755)
    record = tmp_path / "record.txt"
    record.unlink(missing_ok=True)
    env = {"PATH": f"{fake}{os.pathsep}/usr/bin{os.pathsep}/bin", "RECORD": str(record),
           "TORCH": "cuda", "TORCH_INDEX_URL": "", **build_args}
    done = subprocess.run(["sh", "-c", torch_install_script()], env=env, capture_output=True, text=True, check=False)
    done.stdout = record.read_text() if record.exists() else ""
    return done


@pytest.mark.parametrize(("torch", "index"), [
    ("cuda", None),
    ("cpu", "https://download.pytorch.org/whl/cpu"),
    ("cu126", "https://download.pytorch.org/whl/cu126"),
])
def test_the_torch_build_argument_picks_the_index(tmp_path, torch, index):
    done = run_torch_choice(tmp_path, TORCH=torch)
    assert done.returncode == 0, done.stderr
    pip = next(line for line in done.stdout.splitlines() if line.startswith("pip "))
    words = pip.split()
    assert words[-2:] == ["-r", "requirements.lock"], "exactly the lock, nothing looser"
    if index is None:
        assert "--extra-index-url" not in words, "the default is PyPI's torch (the CUDA 13.0 build)"
    else:
        assert words[words.index("--extra-index-url") + 1] == index


def test_torch_index_url_overrides_and_a_wrong_choice_stops_the_build(tmp_path):
    mirror = run_torch_choice(tmp_path, TORCH="cpu", TORCH_INDEX_URL="https://mirror.example/whl/cpu")
    assert "--extra-index-url https://mirror.example/whl/cpu" in mirror.stdout
    wrong = run_torch_choice(tmp_path, TORCH="rocm")
    assert wrong.returncode != 0 and "TORCH=rocm: use cuda" in wrong.stderr and "pip" not in wrong.stdout


def test_dockerignore_keeps_what_the_image_copies_and_nothing_else():
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "an allowlist: venvs, data, models and tests stay out of the build context"
    kept = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = {source for c in instructions() if c.cmd == "COPY" for source in c.value[:-1]}
    assert copied <= kept, f"the Dockerfile copies what .dockerignore leaves out: {copied - kept}"
    assert not kept & {"tests", ".venv-test", "venv", "data", "models", "outputs"}


# ----- compose.yaml -----------------------------------------------------------------------------------------------

def validate_compose(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, check=False)


def test_compose_file_follows_the_compose_specification(tmp_path):
    done = validate_compose(ROOT / "compose.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "compose.yaml"
    broken.write_text((ROOT / "compose.yaml").read_text().replace("start_period:", "start_perod:"))
    assert validate_compose(broken).returncode != 0, "the schema check must catch a misspelt key"


def test_the_gpu_service_reserves_one_nvidia_gpu_and_the_cpu_profile_none():
    services = compose()["services"]
    devices = services["sdlocal"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "profiles" not in services["sdlocal"], "`docker compose up` starts the GPU service"
    cpu = services["sdlocal-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
    assert services["sdlocal"]["build"]["args"]["TORCH"] == "cuda" and cpu["build"]["args"]["TORCH"] == "cpu"
    assert services["sdlocal"]["image"] != cpu["image"], "the two builds must not overwrite one tag"


def test_compose_volumes_user_probe_and_restart_match_the_image():
    data = compose()
    for name, service in data["services"].items():
        mounts = {m["target"]: m for m in service["volumes"]}
        assert mounts["/data"]["type"] == "volume" and mounts["/data"]["source"] in data["volumes"], name
        assert mounts["/cache"]["type"] == "volume" and mounts["/cache"]["source"] in data["volumes"], name
        assert mounts["/models"]["type"] == "bind" and mounts["/models"]["read_only"] is True, name
        assert service["user"] == [c for c in instructions() if c.cmd == "USER"][-1].value[0], name
        assert service["healthcheck"]["test"] == ["CMD", *only("HEALTHCHECK").value[1:]], name
        assert int(service["healthcheck"]["start_period"].rstrip("s")) >= 120, name
        assert service["restart"] == "unless-stopped" and service["init"] is True, name
        assert service["ports"] == ["${SDLOCAL_HOST_PORT:-7860}:7860"], name
        assert set(service["environment"]) >= {"SDLOCAL_GRADIO_AUTH", "SDLOCAL_API_AUTH"}, name
