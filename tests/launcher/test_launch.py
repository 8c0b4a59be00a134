"""launch.py: installs only what differs from the lock, names each package, and never installs with --skip-install."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sdlocal import preflight

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def launch(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("sdlocal_launch_under_test", ROOT / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lock = tmp_path / "requirements.lock"
    lock.write_text("torch==2.13.0\ndiffusers==0.42.1\npillow==12.3.0\n")
    installed = {"torch": "2.13.0+cpu", "diffusers": "0.40.0", "pillow": "12.3.0", "sdlocal": "0.1.0"}
    calls: list[list[str]] = []

    def fake_run(cmd, check=False, **kwargs):
        calls.append(list(cmd))
        for spec_text in cmd:
            if "==" in spec_text and not spec_text.startswith("-"):
                name, version = spec_text.split("==")
                installed[name] = version
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(preflight, "installed_version", installed.get)
    monkeypatch.setattr(preflight, "compare", lambda pins, get=installed.get: _compare(pins, get))
    monkeypatch.setattr(preflight, "has_nvidia_gpu", lambda: False)
    monkeypatch.setattr(preflight, "local_amd_gpu", lambda: None)
    monkeypatch.setattr(module.subprocess, "run", fake_run)
    monkeypatch.delenv("TORCH_INDEX_URL", raising=False)
    module.test_state = {"lock": lock, "installed": installed, "calls": calls}
    return module


def _compare(pins, get):
    out = []
    for name, pinned in sorted(pins.items()):
        have = get(name)
        if have is None or preflight.base_version(have) != pinned:
            out.append(preflight.Mismatch(name, have, pinned))
    return out


def test_installs_only_the_package_that_differs_and_names_it(launch, capsys):
    state = launch.test_state
    assert launch.ensure_environment(False, None, False, state["lock"]) is True
    out = capsys.readouterr().out
    assert "diffusers: installed 0.40.0, pinned 0.42.1" in out
    [cmd] = state["calls"]
    assert cmd[-1] == "diffusers==0.42.1"
    assert "torch==2.13.0" not in cmd and "pillow==12.3.0" not in cmd
    assert ["-c", str(state["lock"])] == cmd[cmd.index("-c"):][:2]
    assert "--extra-index-url" not in cmd  # torch was fine: no index choice needed


def test_skip_install_only_reports(launch, capsys):
    state = launch.test_state
    assert launch.ensure_environment(True, None, False, state["lock"]) is True
    assert state["calls"] == []
    assert "--skip-install: 1 package(s) differ" in capsys.readouterr().out


def test_nothing_to_do_is_fast_and_silent_about_pip(launch, capsys):
    state = launch.test_state
    state["installed"]["diffusers"] = "0.42.1"
    assert launch.ensure_environment(False, None, False, state["lock"]) is True
    assert state["calls"] == []
    assert "all 3 pinned packages match the lock" in capsys.readouterr().out


def test_torch_override_index_is_used(launch, capsys):
    state = launch.test_state
    state["installed"]["torch"] = "2.12.0"
    assert launch.ensure_environment(False, "https://mirror.example/whl", False, state["lock"]) is True
    [cmd] = state["calls"]
    assert ["--extra-index-url", "https://mirror.example/whl"] == cmd[cmd.index("--extra-index-url"):][:2]
    assert "torch==2.13.0" in cmd and "TORCH_INDEX_URL" in capsys.readouterr().out


CU130 = "https://download.pytorch.org/whl/cu130"


def test_torch_index_url_reinstalls_a_cpu_torch_as_the_build_that_index_serves(launch, capsys):
    """Existing venv, torch 2.13.0+cpu at the pinned release: --torch-index-url .../cu130 reinstalls it, said so."""
    state = launch.test_state
    state["installed"]["diffusers"] = "0.42.1"
    assert launch.ensure_environment(False, CU130, False, state["lock"]) is True
    [cmd] = state["calls"]
    assert cmd[-1] == "torch==2.13.0+cu130"
    assert ["--extra-index-url", CU130] == cmd[cmd.index("--extra-index-url"):][:2]
    assert ["-c", str(state["lock"])] == cmd[cmd.index("-c"):][:2]
    out = capsys.readouterr().out
    assert ("torch 2.13.0+cpu is the CPU build; https://download.pytorch.org/whl/cu130 serves the CUDA 13.0 build: "
            "reinstalling torch==2.13.0+cu130 from it") in out
    assert "torch reinstalled: now 2.13.0+cu130 (CUDA 13.0 build)" in out


def test_torch_index_url_from_the_environment_variable_and_beside_other_packages(launch, capsys, monkeypatch):
    state = launch.test_state
    monkeypatch.setenv("TORCH_INDEX_URL", "https://download.pytorch.org/whl/rocm7.2/")
    assert launch.ensure_environment(False, None, False, state["lock"]) is True
    [cmd] = state["calls"]
    assert cmd[-2:] == ["diffusers==0.42.1", "torch==2.13.0+rocm7.2"]
    assert "--extra-index-url" in cmd
    assert "torch reinstalled: now 2.13.0+rocm7.2 (ROCm 7.2 build)" in capsys.readouterr().out


@pytest.mark.parametrize(("installed", "url", "said"), [
    ("2.13.0+cpu", "https://download.pytorch.org/whl/cpu",
     "torch 2.13.0+cpu is already the CPU build that https://download.pytorch.org/whl/cpu serves: nothing changed"),
    ("2.13.0", CU130, "torch 2.13.0 is already the CUDA 13.0 build"),  # PyPI's plain Linux wheel is CUDA 13.0
    ("2.13.0+cpu", "https://mirror.example/simple", "cannot tell from its address which torch build"),
])
def test_torch_index_url_that_matches_or_cannot_be_told_installs_nothing_and_says_so(launch, capsys, monkeypatch,
                                                                                      installed, url, said):
    monkeypatch.setattr(launch.sys, "platform", "linux")
    state = launch.test_state
    state["installed"].update(diffusers="0.42.1", torch=installed)
    assert launch.ensure_environment(False, url, False, state["lock"]) is True
    assert state["calls"] == []
    out = capsys.readouterr().out
    assert said in out and "all 3 pinned packages match the lock" in out


def test_torch_rebuild_is_only_reported_with_skip_install(launch, capsys):
    state = launch.test_state
    state["installed"]["diffusers"] = "0.42.1"
    assert launch.ensure_environment(True, CU130, False, state["lock"]) is True
    assert state["calls"] == []
    out = capsys.readouterr().out
    assert "reinstalling torch==2.13.0+cu130" in out and "--skip-install: 1 package(s) differ" in out


def test_a_reinstall_that_leaves_the_old_build_fails_with_a_fix(launch, capsys, monkeypatch):
    state = launch.test_state
    state["installed"]["diffusers"] = "0.42.1"
    monkeypatch.setattr(launch.subprocess, "run", lambda cmd, check=False, **k: subprocess.CompletedProcess(cmd, 0))
    assert launch.ensure_environment(False, CU130, False, state["lock"]) is False
    out = capsys.readouterr().out
    assert "FAILURE: torch is 2.13.0+cpu after pip, not the CUDA 13.0 build asked for" in out
    assert "delete the venv folder" in out


def test_a_new_venv_on_an_amd_gpu_with_rocm_gets_torch_from_the_rocm_index(launch, capsys, monkeypatch):
    state = launch.test_state
    state["installed"].update(torch=None, diffusers="0.42.1")
    monkeypatch.setattr(launch.sys, "platform", "linux")
    monkeypatch.setattr(preflight, "local_amd_gpu", lambda: preflight.AmdInfo(kfd=True, gpus=("Radeon RX 7900 XTX",)))
    monkeypatch.setattr(preflight, "url_reachable", lambda url, timeout=4.0: True)
    monkeypatch.setattr(preflight, "probe_torch_build", lambda python: pytest.fail("no probe: the ROCm index is used"))
    assert launch.ensure_environment(False, None, False, state["lock"]) is True
    [cmd] = state["calls"]
    assert ["--extra-index-url", preflight.ROCM_INDEX_URL] == cmd[cmd.index("--extra-index-url"):][:2]
    assert cmd[-1] == "torch==2.13.0"
    assert "AMD GPU (Radeon RX 7900 XTX) with ROCm: torch's ROCm 7.2 build" in capsys.readouterr().out


def test_failed_pip_stops_with_a_fix(launch, capsys, monkeypatch):
    state = launch.test_state
    monkeypatch.setattr(launch.subprocess, "run", lambda cmd, check=False, **k: subprocess.CompletedProcess(cmd, 1))
    assert launch.ensure_environment(False, None, False, state["lock"]) is False
    assert "FAILURE: pip could not install" in capsys.readouterr().out


def test_xformers_is_not_installed_without_an_nvidia_gpu(launch, capsys):
    state = launch.test_state
    state["installed"]["diffusers"] = "0.42.1"
    assert launch.ensure_environment(False, None, True, state["lock"]) is True
    assert state["calls"] == []
    assert "--xformers needs an NVIDIA GPU" in capsys.readouterr().out


def test_launcher_flags_are_taken_out_before_the_app_sees_them(launch):
    argv = ["--port", "7001", "--torch-index-url=https://x", "--listen"]
    assert launch.take_option(argv, "--torch-index-url") == "https://x"
    assert argv == ["--port", "7001", "--listen"]
    assert launch.wants_xformers(["--attention", "xformers"]) and not launch.wants_xformers(["--attention", "sdpa"])


def test_unsupported_python_is_refused(monkeypatch, capsys):
    code = ("import sys; sys.version_info = (3, 9, 0, 'final', 0); sys.argv = ['launch.py', '--doctor']; "
            "import runpy; runpy.run_path('launch.py', run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1
    assert "is not supported" in out.stdout and "3.10, 3.11, 3.12" in out.stdout


def test_webui_scripts_refuse_when_no_supported_python(tmp_path):
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\necho 3.9\n")  # answers every question with an unsupported version
    fake.chmod(0o755)
    out = subprocess.run(["bash", str(ROOT / "webui.sh")], capture_output=True, text=True,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin", "PYTHON": str(fake), "VENV_DIR": str(tmp_path / "v"),
                              "HOME": str(tmp_path)})
    assert out.returncode == 1
    assert "sdlocal needs Python 3.10, 3.11 or 3.12" in out.stderr


def test_webui_sh_passes_torch_index_url_from_webui_user_sh_to_launch_py(tmp_path):
    """A TORCH_INDEX_URL assigned without 'export' in webui-user.sh still reaches launch.py (which reinstalls torch)."""
    shutil.copy(ROOT / "webui.sh", tmp_path / "webui.sh")
    (tmp_path / "webui-user.sh").write_text("TORCH_INDEX_URL=https://download.pytorch.org/whl/rocm7.2\n"
                                            "COMMANDLINE_ARGS='--port 7001'\n")
    venv_python = tmp_path / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text('#!/bin/sh\nif [ "$1" = "-c" ]; then echo 3.11; exit 0; fi\n'
                           'echo "index=$TORCH_INDEX_URL args=$*"\n')
    venv_python.chmod(0o755)
    out = subprocess.run(["bash", str(tmp_path / "webui.sh"), "--listen"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "index=https://download.pytorch.org/whl/rocm7.2 args=launch.py --listen --port 7001"


def test_webui_bat_follows_the_same_steps():
    sh = (ROOT / "webui.sh").read_text()
    bat = (ROOT / "webui.bat").read_text()
    for step in ("rem 1.", "rem 2.", "rem 3.", "rem 4.", "rem 5.", "rem 6.", "rem 7."):
        assert step in bat and step.replace("rem", "#") in sh
    assert "pause" in bat and "--pick-python" in bat and "COMMANDLINE_ARGS" in bat
