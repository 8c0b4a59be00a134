"""``sdlocal cluster serve``: its flags, its errors, and a real start, answer and Ctrl+C on a local Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sdlocal.cli import main

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


def test_build_app_is_the_kuberay_entry_over_cluster_yaml(tmp_path: Path) -> None:
    from ray import serve  # the test lock has the cluster extra

    from sdlocal.cluster.app import build_app

    assert isinstance(build_app({"config": str(write_config(tmp_path))}), serve.Application)
    with pytest.raises(ValueError, match="args needs 'config'"):
        build_app({})
