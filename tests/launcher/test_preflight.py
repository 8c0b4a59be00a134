"""The launcher's standard-library checks: lock parsing, version comparison, torch index and Python choice."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sdlocal import preflight
from sdlocal.preflight import Candidate, Mismatch

ROOT = Path(__file__).resolve().parents[2]

SMI_OK = textwrap.dedent("""\
    +-----------------------------------------------------------------------------------------+
    | NVIDIA-SMI 580.65.06              Driver Version: 580.65.06      CUDA Version: 13.0     |
    |-----------------------------------------+------------------------+----------------------+
    | GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
    |=========================================+========================+======================|
    |   0  NVIDIA GeForce RTX 4090        Off |   00000000:01:00.0  On |                  Off |
    +-----------------------------------------+------------------------+----------------------+
    """)


def test_preflight_imports_only_the_standard_library():
    code = ("import sys; before = set(sys.modules); import sdlocal.preflight; "
            "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
            "third = sorted(m for m in new if m not in sys.stdlib_module_names and m != 'sdlocal'); print(third)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_launch_py_imports_only_the_standard_library_before_the_check():
    code = ("import sys, runpy; before = set(sys.modules); sys.argv = ['launch.py']; "
            "ns = runpy.run_path('launch.py', run_name='not_main'); "
            "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
            "print(sorted(m for m in new if m not in sys.stdlib_module_names and m != 'sdlocal'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lock_files_pin_every_direct_dependency_exactly():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = preflight.read_lock(ROOT / "requirements.lock")
    for requirement in project["dependencies"]:
        name = preflight.normalize(requirement.split("=")[0].split("<")[0].split(">")[0].strip())
        assert name in pins, f"{name} from pyproject.toml is missing in requirements.lock"
    assert pins["torch"] == "2.13.0"
    assert "torchvision" not in pins
    assert not [n for n in pins if n.startswith("nvidia-")]
    test_pins = preflight.read_lock(ROOT / "requirements-test.lock")
    assert {"pytest", "playwright", "ruff"} <= set(test_pins)
    assert all(test_pins[name] == version for name, version in pins.items())


def test_read_lock_rejects_a_line_that_is_not_a_pin(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("# comment\ntorch==2.13.0\nnumpy>=2\n")
    with pytest.raises(ValueError, match=r"requirements.lock:3: 'numpy>=2' is not a 'name==version' pin"):
        preflight.read_lock(lock)


def test_read_lock_applies_platform_markers(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(f'Pillow==12.3.0\ncolorama==0.4.6 ; sys_platform == "{sys.platform}"\n'
                    'pywin32==1 ; sys_platform == "nonexistent-os"\n')
    assert preflight.read_lock(lock) == {"pillow": "12.3.0", "colorama": "0.4.6"}


def test_compare_names_missing_and_different_packages_and_ignores_build_labels():
    pins = {"torch": "2.13.0", "diffusers": "0.42.1", "gradio": "6.31.0"}
    installed = {"torch": "2.13.0+cpu", "diffusers": "0.41.0"}
    result = preflight.compare(pins, installed.get)
    assert result == [Mismatch("diffusers", "0.41.0", "0.42.1"), Mismatch("gradio", None, "6.31.0")]
    assert result[0].describe() == "diffusers: installed 0.41.0, pinned 0.42.1"
    assert result[1].describe() == "gradio: not installed, pinned 6.31.0"


def test_parse_nvidia_smi_reads_driver_cuda_and_gpu():
    info = preflight.parse_nvidia_smi(SMI_OK)
    assert info == preflight.NvidiaInfo("580.65.06", "13.0", ("NVIDIA GeForce RTX 4090",))
    assert preflight.parse_nvidia_smi(None) is None
    assert preflight.parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the driver") is None


@pytest.mark.parametrize(("platform", "nvidia", "override", "cpu_ok", "expected", "why"), [
    ("linux", True, None, True, None, "default index"),
    ("win32", True, None, True, preflight.CUDA_INDEX_URL, "NVIDIA GPU on Windows"),
    ("linux", False, None, True, preflight.CPU_INDEX_URL, "no NVIDIA GPU: torch's CPU build"),
    ("win32", False, None, True, preflight.CPU_INDEX_URL, "CPU build"),
    ("linux", False, None, False, None, "cannot be reached"),
    ("linux", False, "https://mirror.example/whl", False, "https://mirror.example/whl", "TORCH_INDEX_URL"),
    ("darwin", False, None, False, None, "macOS"),
])
def test_choose_torch_index(platform, nvidia, override, cpu_ok, expected, why):
    index, reason = preflight.choose_torch_index(platform, nvidia, override, lambda: cpu_ok)
    assert index == expected
    assert why in reason


@pytest.mark.parametrize(("url", "build"), [
    ("https://download.pytorch.org/whl/cu130", "cu130"),
    ("https://download.pytorch.org/whl/cpu/", "cpu"),
    ("https://download.pytorch.org/whl/rocm7.2", "rocm7.2"),
    ("https://download.pytorch.org/whl/nightly/cu128", "cu128"),
    ("https://mirror.example/whl", None),
    ("https://pypi.org/simple", None),
])
def test_index_build_is_read_from_the_address(url, build):
    assert preflight.index_build(url) == build


@pytest.mark.parametrize(("installed", "platform", "url", "spec"), [
    ("2.13.0+cpu", "linux", "https://download.pytorch.org/whl/cu130", "torch==2.13.0+cu130"),
    ("2.13.0+cu130", "linux", "https://download.pytorch.org/whl/cpu", "torch==2.13.0+cpu"),
    ("2.13.0+cpu", "linux", "https://download.pytorch.org/whl/rocm7.2", "torch==2.13.0+rocm7.2"),
    ("2.13.0", "linux", "https://download.pytorch.org/whl/cpu", "torch==2.13.0+cpu"),  # plain = PyPI's CUDA 13.0
    ("2.13.0", "linux", "https://download.pytorch.org/whl/cu126", "torch==2.13.0+cu126"),
    ("2.13.0", "linux", "https://download.pytorch.org/whl/cu130", None),
    ("2.13.0", "win32", "https://download.pytorch.org/whl/cpu", None),  # PyPI's Windows wheel is the CPU build
    ("2.13.0", "win32", "https://download.pytorch.org/whl/cu130", "torch==2.13.0+cu130"),
    ("2.13.0", "darwin", "https://download.pytorch.org/whl/cpu", None),
    ("2.13.0+cpu", "linux", "https://download.pytorch.org/whl/cpu", None),
    ("2.13.0+cpu", "linux", "https://mirror.example/whl", None),
])
def test_torch_rebuild_compares_the_build_labels(installed, platform, url, spec):
    rebuild = preflight.torch_rebuild(installed, "2.13.0", url, platform)
    assert rebuild.spec == spec
    if spec:
        assert rebuild.message.endswith(f"reinstalling {spec} from it")
    elif rebuild.build:
        assert rebuild.message.endswith("nothing changed")
    else:
        assert f"torch {installed} was left as it is" in rebuild.message


def test_build_names_for_messages():
    assert [preflight.describe_build(b) for b in ("cu130", "cu128", "rocm7.2", "cpu")] == [
        "CUDA 13.0", "CUDA 12.8", "ROCm 7.2", "CPU"]
    assert preflight.build_label("2.13.0+CU130") == "cu130" and preflight.build_label("2.13.0") is None


ROCMINFO = textwrap.dedent("""\
    ROCk module version 6.10.5 is loaded
    =====================
    HSA System Attributes
    =====================
    Runtime Version:         1.15
    ==========
    HSA Agents
    ==========
    *******
    Agent 1
    *******
      Name:                    AMD Ryzen 9 7950X 16-Core Processor
      Marketing Name:          AMD Ryzen 9 7950X 16-Core Processor
      Vendor Name:             CPU
      Device Type:             CPU
    *******
    Agent 2
    *******
      Name:                    gfx1100
      Uuid:                    GPU-8d1c2b0a4f3e2d1c
      Marketing Name:          Radeon RX 7900 XTX
      Vendor Name:             AMD
      Device Type:             GPU
      ISA Info:
        ISA 1
          Name:                    amdgcn-amd-amdhsa--gfx1100
    *** Done ***
    """)
ROCM_GPU = preflight.AmdInfo(kfd=True, gpus=("Radeon RX 7900 XTX (gfx1100)",), rocminfo=True)
AMD_NO_DRIVER = preflight.AmdInfo(kfd=False, gpus=("[1002:744c]",))


@pytest.mark.parametrize(("platform", "nvidia", "amd", "override", "cpu_ok", "expected", "why"), [
    ("linux", False, ROCM_GPU, None, True, preflight.ROCM_INDEX_URL,
     "AMD GPU (Radeon RX 7900 XTX (gfx1100)) with ROCm: torch's ROCm 7.2 build from "
     "https://download.pytorch.org/whl/rocm7.2"),
    ("linux", False, preflight.AmdInfo(kfd=True), None, True, preflight.ROCM_INDEX_URL, "AMD GPU with ROCm"),
    ("linux", False, AMD_NO_DRIVER, None, True, preflight.CPU_INDEX_URL, "/dev/kfd is missing"),
    ("linux", False, ROCM_GPU, None, False, None, "download.pytorch.org cannot be reached"),
    ("linux", True, ROCM_GPU, None, True, None, "NVIDIA GPU: torch from the default index"),
    ("linux", False, ROCM_GPU, "https://download.pytorch.org/whl/cpu", True, "https://download.pytorch.org/whl/cpu",
     "TORCH_INDEX_URL"),
    ("win32", False, ROCM_GPU, None, True, preflight.CPU_INDEX_URL, "no NVIDIA GPU"),  # ROCm wheels: Linux only
    ("darwin", False, None, None, True, None, "uses the Apple GPU through MPS"),  # PyPI's wheel, no index URL
])
def test_choose_torch_index_on_amd_and_apple_machines(platform, nvidia, amd, override, cpu_ok, expected, why):
    index, reason = preflight.choose_torch_index(platform, nvidia, override, lambda: cpu_ok, amd)
    assert index == expected
    assert why in reason
    if amd is AMD_NO_DRIVER:
        assert f"--torch-index-url {preflight.ROCM_INDEX_URL}" in reason and "torch's CPU build" in reason


def test_rocm_index_names_a_build_the_pinned_torch_has():
    assert preflight.ROCM_INDEX_URL == f"https://download.pytorch.org/whl/rocm{preflight.ROCM_VERSION_FOR_INDEX}"
    assert preflight.index_build(preflight.ROCM_INDEX_URL) == "rocm7.2"


def test_parse_rocminfo_lists_gpu_agents_only():
    assert preflight.parse_rocminfo(ROCMINFO) == ("Radeon RX 7900 XTX (gfx1100)",)
    assert preflight.parse_rocminfo(None) == () and preflight.parse_rocminfo("ROCk module is NOT loaded") == ()


def _pci(root: Path, slot: str, vendor: str, klass: str, device: str) -> None:
    folder = root / "sys/bus/pci/devices" / slot
    folder.mkdir(parents=True)
    for name, value in (("vendor", vendor), ("class", klass), ("device", device)):
        (folder / name).write_text(value + "\n")


def test_detect_amd_gpu_ignores_nvidia_gpus_and_amd_chipsets(tmp_path):
    _pci(tmp_path, "0000:01:00.0", "0x10de", "0x030000", "0x2684")  # NVIDIA RTX 4090
    _pci(tmp_path, "0000:00:14.0", "0x1022", "0x060000", "0x790e")  # AMD chipset (vendor 0x1022, a bridge)
    _pci(tmp_path, "0000:02:00.1", "0x1002", "0x040300", "0xab30")  # an AMD GPU's HDMI audio: class 0x04, not 0x03
    asked = []
    assert preflight.detect_amd_gpu(tmp_path, lambda: asked.append(1) or ROCMINFO) is None
    assert asked == [], "rocminfo is not run on a machine with nothing AMD"


def test_detect_amd_gpu_from_pci_alone_is_not_usable(tmp_path):
    _pci(tmp_path, "0000:03:00.0", "0x1002", "0x030000", "0x744c")
    info = preflight.detect_amd_gpu(tmp_path, lambda: None)
    assert info == preflight.AmdInfo(kfd=False, kfd_access=False, gpus=("[1002:744c]",))
    assert not info.usable


def test_detect_amd_gpu_with_kfd_rocminfo_and_rocm_version(tmp_path):
    _pci(tmp_path, "0000:03:00.0", "0x1002", "0x038000", "0x744c")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/kfd").write_text("")
    (tmp_path / "opt/rocm/.info").mkdir(parents=True)
    (tmp_path / "opt/rocm/.info/version").write_text("6.4.1-120\n")
    info = preflight.detect_amd_gpu(tmp_path, lambda: ROCMINFO)
    assert info.usable and info.kfd and info.kfd_access and info.rocminfo
    assert info.gpus == ("Radeon RX 7900 XTX (gfx1100)",) and info.rocm == "6.4.1"
    no_tool = preflight.detect_amd_gpu(tmp_path, lambda: None)
    assert no_tool.usable and no_tool.gpus == ("[1002:744c]",), "/dev/kfd alone is enough"


def test_pip_report_tells_cpu_from_cuda_builds():
    cpu = {"install": [{"metadata": {"name": "torch", "version": "2.13.0+cpu"}},
                       {"metadata": {"name": "sympy", "version": "1.14.0"}}]}
    cuda = {"install": [{"metadata": {"name": "torch", "version": "2.13.0"}},
                        {"metadata": {"name": "nvidia-cudnn-cu13", "version": "9.20.0.48"}}]}
    labelled = {"install": [{"metadata": {"name": "torch", "version": "2.13.0+cu130"}}]}
    assert preflight.pip_report_is_cpu_torch(cpu) is True
    assert preflight.pip_report_is_cpu_torch(cuda) is False
    assert preflight.pip_report_is_cpu_torch(labelled) is False
    assert preflight.pip_report_is_cpu_torch({"install": []}) is None


def _pick(probes: dict[str, bool | None], nvidia=False, override=None, cpu_ok=False):
    said: list[str] = []
    asked: list[str] = []

    def probe(path):
        asked.append(path)
        return probes[path]

    candidates = [Candidate(f"/usr/bin/python{v}", v) for v in probes_versions(probes)]
    chosen = preflight.pick_python(candidates, nvidia, override, lambda: cpu_ok, probe, said.append)
    return chosen, said, asked


def probes_versions(probes):
    return [path.removeprefix("/usr/bin/python") for path in probes]


def test_pick_python_prefers_one_that_gets_the_cpu_build_and_says_why(monkeypatch):
    monkeypatch.setattr(preflight, "platform_is_mac", lambda: False)
    chosen, said, _ = _pick({"/usr/bin/python3.12": False, "/usr/bin/python3.11": True})
    assert chosen.version == "3.11"
    assert said == ["Python 3.12: only a CUDA build of torch 2.13.0 is reachable (about 3 GB of NVIDIA libraries "
                    "this machine cannot use); using Python 3.11, which gets the CPU build."]


def test_pick_python_does_not_probe_with_a_gpu_or_a_reachable_cpu_index(monkeypatch):
    monkeypatch.setattr(preflight, "platform_is_mac", lambda: False)
    for kwargs in ({"nvidia": True}, {"cpu_ok": True}, {"override": "https://mirror.example"}):
        chosen, said, asked = _pick({"/usr/bin/python3.12": False, "/usr/bin/python3.11": True}, **kwargs)
        assert chosen.version == "3.12" and asked == [] and said == []


def test_pick_python_falls_back_to_the_first_and_says_so(monkeypatch):
    monkeypatch.setattr(preflight, "platform_is_mac", lambda: False)
    chosen, said, asked = _pick({"/usr/bin/python3.12": False, "/usr/bin/python3.10": None})
    assert chosen.version == "3.12"
    assert len(asked) == 2
    assert "using Python 3.12 with the default index" in said[0]
    assert "TORCH_INDEX_URL" in said[0]


def test_pip_install_command_uses_the_lock_as_constraints():
    cmd = preflight.pip_install_command("/venv/bin/python", ["torch==2.13.0"], preflight.CPU_INDEX_URL,
                                        Path("/repo/requirements.lock"))
    assert cmd[:4] == ["/venv/bin/python", "-m", "pip", "install"]
    assert ["--extra-index-url", preflight.CPU_INDEX_URL] == cmd[cmd.index("--extra-index-url"):][:2]
    assert ["-c", "/repo/requirements.lock"] == cmd[cmd.index("-c"):][:2]
    assert cmd[-1] == "torch==2.13.0"


def test_python_supported_versions():
    assert preflight.python_supported((3, 10)) and preflight.python_supported((3, 12, 1))
    assert not preflight.python_supported((3, 9)) and not preflight.python_supported((3, 13))
    assert preflight.supported_text() == "3.10, 3.11, 3.12"


def test_url_reachable_is_false_quickly_for_a_closed_port():
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    assert preflight.url_reachable(f"http://127.0.0.1:{port}/", timeout=2) is False
    assert time.monotonic() - started < 10



def test_gpu_tool_output_is_none_when_the_tool_is_missing_or_fails(tmp_path):
    tool = tmp_path / "fake-smi"
    tool.write_text("#!/bin/sh\necho 'Driver Version: 580.1'\n")
    tool.chmod(0o755)
    broken = tmp_path / "broken-smi"
    broken.write_text("#!/bin/sh\necho 'No devices were found'\nexit 9\n")
    broken.chmod(0o755)
    assert preflight.tool_output(str(tool)) == "Driver Version: 580.1\n"
    assert preflight.tool_output(str(broken)) is None
    assert preflight.tool_output(None) is None
    assert preflight.tool_output(str(tmp_path / "absent")) is None  # OSError becomes None
