"""``sdlocal cluster serve``: its flags, its errors, and a real start, answer and Ctrl+C on a local Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from sdlocal.cli import main
from tests.servers import free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]


def write_config(folder: Path, text: str = "") -> Path:
    path = folder / "cluster.yaml"
    path.write_text(f"models_dir: {folder / 'models'}\ndata_dir: {folder / 'data'}\n{text}", encoding="utf-8")
    return path


def test_without_ray_it_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" raises ImportError, as when it is not installed
    assert main(["cluster", "serve", "--config", str(write_config(tmp_path))]) == 1
    assert 'pip install "sdlocal[cluster]"' in capsys.readouterr().out


def test_a_bad_config_is_named_before_anything_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "generator: {max_replicas: 0}\n")
    assert main(["cluster", "serve", "--config", str(path)]) == 2
    assert "generator.max_replicas: 0 is not allowed" in capsys.readouterr().out


def test_the_config_flag_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["cluster", "serve"])
    assert caught.value.code == 2 and "--config" in capsys.readouterr().err


def test_sdlocal_serve_never_imports_ray() -> None:
    code = ("import sys, sdlocal.cli, sdlocal.server, sdlocal.services; sdlocal.cli.build_parser(); "
            "sdlocal.cli.parse_command(['serve', '--nowebui']); print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def test_cluster_serve_answers_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    from sdlocal.engine.synthetic import save_tiny_model

    save_tiny_model(tmp_path / "models" / "Stable-diffusion" / "tiny-a", family="sd1", fmt="diffusers")
    path = write_config(tmp_path, "device: cpu\nprecision: fp32\n"
                                  "generator: {num_gpus: 0, min_replicas: 1, max_replicas: 1}\n")
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
           "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}
    process = subprocess.Popen([sys.executable, "-m", "sdlocal", "cluster", "serve", "--config", str(path),
                                "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    announced = f"[sdlocal] Cluster API: http://127.0.0.1:{port}/sdapi/v1"
    try:
        deadline = time.monotonic() + 150
        while not any(line.startswith(announced) for line in lines):  # printed once every deployment runs
            assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        wait_http(f"http://127.0.0.1:{port}/health", timeout=30)
        models = httpx.get(f"http://127.0.0.1:{port}/sdapi/v1/sd-models", timeout=30).json()
        assert [model["model_name"] for model in models] == ["tiny-a"]
        process.send_signal(signal.SIGINT)
        process.wait(timeout=300)  # Serve stops each replica gracefully: on a loaded 2-core machine, minutes
        reader.join(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, "".join(lines)
    assert "[sdlocal] stopped\n" in lines


def test_build_app_is_the_kuberay_entry_over_cluster_yaml(tmp_path: Path) -> None:
    from ray import serve  # the test lock has the cluster extra

    from sdlocal.cluster.app import build_app

    assert isinstance(build_app({"config": str(write_config(tmp_path))}), serve.Application)
    with pytest.raises(ValueError, match="args needs 'config'"):
        build_app({})
