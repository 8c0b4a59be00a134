"""Every doctor check against simulated machines: each asserts the finding and its fix."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from sdlocal import doctor, preflight
from sdlocal.doctor import FAILURE, OK, WARNING, Machine
from sdlocal.engine.devices import Capabilities
from sdlocal.settings import Settings
from tests.launcher.test_preflight import SMI_OK

SMI_OLD_DRIVER = SMI_OK.replace("580.65.06", "535.54.03").replace("CUDA Version: 13.0", "CUDA Version: 12.2")


def fake_torch(cuda: str | None = None, available: bool = False, arch: list[str] | None = None,
               capability: tuple[int, int] = (8, 9), name: str = "NVIDIA GeForce RTX 4090", vram_gib: float = 24.0,
               hip: str | None = None, gcn_arch: str = "", mps_built: bool = True, mps_available: bool = False):
    """A torch-shaped object: enough of torch.version, torch.cuda and torch.backends.mps for the checks.

    A ROCm build is what torch's ROCm wheels look like: version.hip set, version.cuda None, and the AMD GPU behind
    torch.cuda with a gcnArchName in its properties.
    """
    props = SimpleNamespace(name=name, total_memory=int(vram_gib * 2**30), gcnArchName=gcn_arch)
    cuda_mod = SimpleNamespace(
        is_available=lambda: available,
        device_count=lambda: 1 if available else 0,
        get_device_properties=lambda i: props,
        get_device_capability=lambda i: capability,
        get_arch_list=lambda: list(arch or []),
    )
    mps = SimpleNamespace(is_available=lambda: mps_available, is_built=lambda: mps_built)
    label = "+rocm" + ".".join(hip.split(".")[:2]) if hip else "+cpu" if cuda is None else ""
    return SimpleNamespace(__version__="2.13.0" + label, version=SimpleNamespace(cuda=cuda, hip=hip),
                           cuda=cuda_mod, backends=SimpleNamespace(mps=mps))


def caps(device="cpu", warnings=None):
    return Capabilities(device=device, device_name="Test CPU" if device == "cpu" else "RTX 4090",
                        precision="fp32" if device == "cpu" else "fp16", precision_reason="because",
                        precisions={"fp32": ""}, attention="sdpa", attentions={"sdpa": ""},
                        warnings=list(warnings or (["No usable NVIDIA GPU: running on the CPU"] if device == "cpu"
                                                   else [])))


# ----- single checks ----------------------------------------------------------------------------------------------

def test_python_version():
    assert doctor.check_python((3, 11, 7)).level == OK
    bad = doctor.check_python((3, 13, 0))
    assert bad.level == FAILURE
    assert "3.13.0 is not supported (sdlocal needs 3.10, 3.11, 3.12)" in bad.message
    assert "Install Python 3.10, 3.11, 3.12" in bad.fix


def test_packages_match_differ_and_missing():
    pins = {"torch": "2.13.0", "diffusers": "0.42.1", "pillow": "12.3.0"}
    ok = doctor.check_packages(pins, {"torch": "2.13.0+cpu", "diffusers": "0.42.1", "pillow": "12.3.0"}.get)
    assert ok.level == OK and "all 3 match" in ok.message
    differ = doctor.check_packages(pins, {"torch": "2.13.0", "diffusers": "0.40.0", "pillow": "12.3.0"}.get)
    assert differ.level == WARNING
    assert "diffusers: installed 0.40.0, pinned 0.42.1" in differ.message
    assert "without --skip-install" in differ.fix
    missing = doctor.check_packages(pins, {"pillow": "12.3.0"}.get)
    assert missing.level == FAILURE and "torch: not installed, pinned 2.13.0" in missing.message


def test_torch_import_failure_and_success():
    def broken():
        raise ImportError("libtorch_cpu.so: cannot open shared object file")

    finding, module = doctor.check_torch_import(broken)
    assert module is None and finding.level == FAILURE
    assert "libtorch_cpu.so" in finding.message and "Delete the venv folder" in finding.fix
    finding, module = doctor.check_torch_import(lambda: fake_torch())
    assert finding.level == OK and finding.message == "2.13.0+cpu (CPU build)"


def test_no_nvidia_driver():
    finding = doctor.check_nvidia_driver(None, None)
    assert finding.level == WARNING
    assert "no NVIDIA driver found" in finding.message and "install NVIDIA's driver" in finding.fix


def test_driver_ok_for_torch_cuda():
    finding = doctor.check_nvidia_driver(SMI_OK, "13.0")
    assert finding.level == OK
    assert "driver 580.65.06 for NVIDIA GeForce RTX 4090, CUDA up to 13.0" in finding.message


def test_driver_too_old_for_torch_cuda():
    finding = doctor.check_nvidia_driver(SMI_OLD_DRIVER, "13.0", platform="linux")
    assert finding.level == FAILURE
    assert "runs CUDA up to 12.2, but torch was built for CUDA 13.0" in finding.message
    assert finding.fix == "Update the NVIDIA driver to one for CUDA 13.0 (driver 580.65.06 or newer)."
    windows = doctor.check_nvidia_driver(SMI_OLD_DRIVER, "13.0", platform="win32")
    assert "(driver 580.88 or newer)" in windows.fix


def test_gpu_with_a_cpu_build_of_torch():
    finding = doctor.check_nvidia_driver(SMI_OK, None)
    assert finding.level == WARNING
    assert "this torch is a CPU build" in finding.message and "--torch-index-url" in finding.fix


def test_cuda_not_available_is_a_loud_warning_or_a_failure_with_require_gpu():
    torch = fake_torch(available=False)
    warn = doctor.check_cuda_available(torch, has_driver=False, require_gpu=False)
    assert warn.level == WARNING and "RUNNING ON THE CPU" in warn.message
    fail = doctor.check_cuda_available(torch, has_driver=False, require_gpu=True)
    assert fail.level == FAILURE and "--require-gpu" in fail.fix
    driver_but_no_cuda = doctor.check_cuda_available(torch, has_driver=True, require_gpu=False)
    assert "although an NVIDIA driver is installed" in driver_but_no_cuda.message
    assert doctor.check_cuda_available(fake_torch("13.0", available=True), True, True).level == OK


def test_gpu_arch_covered_and_not_covered():
    arch = ["sm_75", "sm_80", "sm_86", "sm_90"]
    ok = doctor.check_gpu_arch("NVIDIA GeForce RTX 4090", 24 * 2**30, (8, 9), arch)
    assert ok.level == OK and ok.message == "NVIDIA GeForce RTX 4090, 24.0 GiB, compute capability 8.9"
    new = doctor.check_gpu_arch("NVIDIA GeForce RTX 5090", 32 * 2**30, (12, 0), arch)
    assert new.level == FAILURE
    assert "this torch was built for sm_75, sm_80, sm_86, sm_90, not sm_120" in new.message
    assert "--torch-index-url" in new.fix
    small = doctor.check_gpu_arch("NVIDIA GeForce GTX 1050", 2 * 2**30, (6, 1), ["sm_61"])
    assert small.level == WARNING and "little memory" in small.message


def test_arch_rules_same_major_and_ptx():
    assert doctor.gpu_arch_supported((8, 9), ["sm_80"])  # same major, newer minor runs sm_80 binaries
    assert not doctor.gpu_arch_supported((8, 0), ["sm_86"])
    assert not doctor.gpu_arch_supported((12, 0), ["sm_90"])
    assert doctor.gpu_arch_supported((12, 0), ["sm_90", "compute_90"])  # PTX is compiled for newer GPUs
    assert doctor.gpu_arch_supported((10, 0), ["sm_100"])


def test_xformers_checks():
    import_error = doctor.check_xformers(lambda: (_ for _ in ()).throw(ImportError("no module")), "2.13.0", True)
    assert import_error.level == WARNING and "cannot be imported" in import_error.message
    assert "xformers==0.0.35" in import_error.fix
    wrong = doctor.check_xformers(lambda: SimpleNamespace(__version__="0.0.28"), "2.13.0", True)
    assert wrong.level == WARNING and "0.0.28 is installed; 0.0.35 is the one built for torch 2.13.0" in wrong.message
    right = doctor.check_xformers(lambda: SimpleNamespace(__version__="0.0.35"), "2.13.0+cu130", True)
    assert right.level == OK
    no_gpu = doctor.check_xformers(lambda: SimpleNamespace(__version__="0.0.35"), "2.13.0", False)
    assert no_gpu.level == WARNING and "needs an NVIDIA GPU" in no_gpu.message


def test_data_dir_not_writable_simulated():
    finding = doctor.check_data_dir(Path("/data"), lambda p: 100 * 10**9, lambda p: "Read-only file system")
    assert finding.level == FAILURE
    assert finding.message == "/data is not writable: Read-only file system"
    assert "--data-dir" in finding.fix and "SDLOCAL_DATA_DIR" in finding.fix


def test_data_dir_under_a_file_is_not_writable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    problem = doctor.writable_problem(blocker / "data")
    assert problem is not None
    finding = doctor.check_data_dir(blocker / "data", doctor.disk_free, doctor.writable_problem)
    assert finding.level == FAILURE and "is not writable" in finding.message


def test_data_dir_free_space_levels(tmp_path):
    assert doctor.writable_problem(tmp_path / "new" / "dir") is None
    low = doctor.check_data_dir(tmp_path, lambda p: 5 * 10**9, lambda p: None)
    assert low.level == WARNING and "5.0 GB free" in low.message and "Free disk space" in low.fix
    none = doctor.check_data_dir(tmp_path, lambda p: 10**8, lambda p: None)
    assert none.level == FAILURE and "only 0.1 GB free" in none.message
    assert doctor.check_data_dir(tmp_path, lambda p: 500 * 10**9, lambda p: None).level == OK


def test_port_in_use_moves_to_the_next_free_one():
    busy = {7860, 7861}
    finding, port = doctor.check_port("127.0.0.1", 7860, lambda h, p: p not in busy)
    assert port == 7862 and finding.level == WARNING
    assert finding.message == "7860 is in use by another program; using 7862 instead"
    assert "--port 7862" in finding.fix
    finding, port = doctor.check_port("127.0.0.1", 7860, lambda h, p: False)
    assert port is None and finding.level == FAILURE


def test_real_port_probe_sees_a_listening_socket():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert doctor.port_is_free("127.0.0.1", port) is False
        finding, chosen = doctor.check_port("127.0.0.1", port, doctor.port_is_free)
        assert chosen != port and f"{port} is in use" in finding.message


def test_hub_reachable_unreachable_and_offline():
    finding, offline = doctor.check_hub(False, lambda: True)
    assert finding.level == OK and offline is False
    finding, offline = doctor.check_hub(False, lambda: False)
    assert finding.level == WARNING and offline is True and "running offline" in finding.message
    called = []
    finding, offline = doctor.check_hub(True, lambda: called.append(1) or True)
    assert offline is True and called == [] and "--offline" in finding.message


def test_precision_finding_from_capabilities():
    cpu = doctor.check_precision(caps("cpu"), require_gpu=False)
    assert cpu.level == WARNING and cpu.message.startswith("cpu (Test CPU), fp32: because")
    assert "No usable NVIDIA GPU" in cpu.message
    assert doctor.check_precision(caps("cpu"), require_gpu=True).level == FAILURE
    gpu = doctor.check_precision(caps("cuda"), require_gpu=True)
    assert gpu.level == OK and gpu.message == "cuda (RTX 4090), fp16: because; attention sdpa"


RX7900 = preflight.AmdInfo(kfd=True, gpus=("Radeon RX 7900 XTX (gfx1100)",), rocminfo=True, rocm="6.4.1")
ROCM_TORCH = dict(hip="7.2.26015-0a1b2c3d", available=True, name="Radeon RX 7900 XTX", gcn_arch="gfx1100",
                  arch=["gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1101", "gfx1200", "gfx1201"])


def test_torch_finding_names_a_rocm_build():
    finding, _ = doctor.check_torch_import(lambda: fake_torch(**ROCM_TORCH))
    assert finding.message == "2.13.0+rocm7.2 (ROCm 7.2 build)"


def test_amd_gpu_with_a_cpu_torch_warns_with_the_rocm_index():
    finding = doctor.check_rocm(RX7900, fake_torch())
    assert finding.level == WARNING
    assert finding.message == ("AMD GPU (Radeon RX 7900 XTX (gfx1100)), ROCm 6.4.1, but this torch is a CPU build, "
                               "so the GPU is not used")
    assert "--torch-index-url https://download.pytorch.org/whl/rocm7.2" in finding.fix
    assert "delete the venv folder" in finding.fix
    unknown = doctor.check_rocm(preflight.AmdInfo(kfd=True), fake_torch())
    assert unknown.message == "AMD GPU, but this torch is a CPU build, so the GPU is not used", \
        "no ROCm version is claimed when neither /opt/rocm nor torch tells it (the ROCm wheel needs no system ROCm)"


def test_amd_gpu_with_a_rocm_torch_reports_both_versions():
    finding = doctor.check_rocm(RX7900, fake_torch(**ROCM_TORCH))
    assert finding.level == OK
    assert finding.message == ("AMD GPU (Radeon RX 7900 XTX (gfx1100)), ROCm 6.4.1; torch is a ROCm 7.2 build "
                               "(HIP 7.2.26015-0a1b2c3d), so it runs on the GPU as device 'cuda'")
    no_system_rocm = doctor.check_rocm(preflight.AmdInfo(kfd=True), fake_torch(**ROCM_TORCH))
    assert no_system_rocm.message.startswith("AMD GPU, ROCm 7.2;"), "the version comes from torch.version.hip then"


def test_amd_gpu_that_rocm_cannot_reach():
    no_driver = doctor.check_rocm(preflight.AmdInfo(kfd=False, gpus=("[1002:744c]",)), fake_torch())
    assert no_driver.level == WARNING and "/dev/kfd is missing" in no_driver.message
    assert "amdgpu-install" in no_driver.fix and "rocm7.2" in no_driver.fix
    no_access = doctor.check_rocm(preflight.AmdInfo(kfd=True, kfd_access=False), fake_torch(**ROCM_TORCH))
    assert no_access.level == WARNING and "may not open /dev/kfd" in no_access.message
    assert "usermod -aG render,video" in no_access.fix
    stray = doctor.check_rocm(None, fake_torch(**ROCM_TORCH))
    assert stray.level == WARNING and "ROCm 7.2 build, but no AMD GPU was found" in stray.message
    assert "whl/cpu" in stray.fix


def test_rocm_gpu_arch_covered_unlisted_and_overridden():
    arch = ROCM_TORCH["arch"]
    ok = doctor.check_rocm_gpu_arch("Radeon RX 7900 XTX", 24 * 2**30, "gfx1100", arch, None)
    assert ok.level == OK and ok.message == "Radeon RX 7900 XTX, 24.0 GiB, gfx1100"
    mi = doctor.check_rocm_gpu_arch("AMD Instinct MI210", 64 * 2**30, "gfx90a:sramecc+:xnack-", arch, None)
    assert mi.level == OK, "the feature suffix after ':' is not part of the target"
    apu = doctor.check_rocm_gpu_arch("AMD Radeon 780M", 8 * 2**30, "gfx1103", arch, None)
    assert apu.level == FAILURE and "this torch was built for gfx90a, gfx942" in apu.message
    assert apu.message.endswith("not gfx1103") and "HSA_OVERRIDE_GFX_VERSION=11.0.0" in apu.fix
    forced = doctor.check_rocm_gpu_arch("AMD Radeon 780M", 8 * 2**30, "gfx1103", arch, "11.0.0")
    assert forced.level == WARNING and "HSA_OVERRIDE_GFX_VERSION=11.0.0 is set" in forced.message


def test_apple_gpu_usable_or_why_not():
    usable = doctor.check_mps(fake_torch(mps_available=True))
    assert usable.level == OK and usable.check == "Apple GPU (MPS)"
    assert usable.message == "usable: sdlocal runs on the Apple GPU (device mps)"
    old_macos = doctor.check_mps(fake_torch())
    assert old_macos.level == WARNING and "needs macOS 12.3 or newer on Apple silicon" in old_macos.message
    not_built = doctor.check_mps(fake_torch(mps_built=False))
    assert not_built.level == WARNING and "built without MPS" in not_built.message
    assert "without --torch-index-url" in not_built.fix


# ----- whole reports on simulated machines ------------------------------------------------------------------------

def machine(**changes):
    base = dict(python_version=(3, 11, 7), installed={"torch": "2.13.0"}.get, pins=lambda: {"torch": "2.13.0"},
                import_torch=fake_torch, import_xformers=lambda: SimpleNamespace(__version__="0.0.35"),
                nvidia_smi=lambda: None, amd_gpu=lambda: None, gfx_override=lambda: None,
                disk_free=lambda p: 100 * 10**9, writable=lambda p: None,
                port_free=lambda h, p: True, hub_reachable=lambda: False, capabilities=lambda s: caps("cpu"),
                platform="linux", container=lambda: None, nvidia_devices=lambda: [])
    base.update(changes)
    return Machine(**base)


def test_cpu_only_machine_starts_with_warnings(tmp_path):
    report = doctor.diagnose(Settings(data_dir=tmp_path), machine())
    assert not report.failed
    assert report.device == "cpu" and report.offline is True and report.port == 7860
    checks = [f.check for f in report.findings]
    assert checks == ["Python", "Pinned packages", "torch", "NVIDIA driver", "CUDA", "Data folder", "Port",
                      "Hugging Face Hub", "Device and precision"]
    assert "Ready: 0 failure(s), 4 warning(s)" in report.text()


def test_serving_splits_the_checks_so_the_page_does_not_wait_for_torch(tmp_path):
    """The quick part never imports torch; the torch part (run after the page is up) never probes the port."""
    def no_torch():
        raise AssertionError("the quick checks imported torch")

    quick = doctor.diagnose(Settings(data_dir=tmp_path), machine(import_torch=no_torch), parts=(doctor.QUICK,))
    assert [f.check for f in quick.findings] == ["Python", "Pinned packages", "Data folder", "Port",
                                                 "Hugging Face Hub"]
    assert quick.device is None and quick.port == 7860

    def port_probed(host, port):
        raise AssertionError("the torch checks probed the port")

    late = doctor.diagnose(Settings(data_dir=tmp_path, require_gpu=True), machine(port_free=port_probed),
                           check_port_free=False, parts=(doctor.TORCH,))
    assert [f.check for f in late.findings] == ["torch", "NVIDIA driver", "CUDA", "Device and precision"]
    assert late.failed and late.device == "cpu", "--require-gpu on a CPU machine still stops sdlocal"


def test_require_gpu_on_a_cpu_machine_fails(tmp_path):
    report = doctor.diagnose(Settings(data_dir=tmp_path, require_gpu=True), machine())
    assert report.failed
    assert "Cannot start: 2 failure(s)" in report.text()


def test_gpu_machine_with_a_too_new_gpu_fails(tmp_path):
    torch = fake_torch("13.0", available=True, arch=["sm_80", "sm_90"], capability=(12, 0))
    report = doctor.diagnose(Settings(data_dir=tmp_path),
                             machine(import_torch=lambda: torch, nvidia_smi=lambda: SMI_OK,
                                     capabilities=lambda s: caps("cuda")))
    gpu = next(f for f in report.findings if f.check == "GPU")
    assert gpu.level == FAILURE and "not sm_120" in gpu.message
    assert report.failed and report.device == "cuda"


def test_healthy_gpu_machine_with_xformers(tmp_path):
    torch = fake_torch("13.0", available=True, arch=["sm_80", "sm_89", "sm_90"])
    report = doctor.diagnose(Settings(data_dir=tmp_path, attention="xformers"),
                             machine(import_torch=lambda: torch, nvidia_smi=lambda: SMI_OK, hub_reachable=lambda: True,
                                     capabilities=lambda s: caps("cuda")))
    assert [f.level for f in report.findings] == [OK] * len(report.findings)
    assert "xformers" in [f.check for f in report.findings]
    assert report.offline is False


def test_amd_machine_with_a_cpu_torch_gets_the_rocm_warning_instead_of_the_nvidia_one(tmp_path):
    report = doctor.diagnose(Settings(data_dir=tmp_path), machine(amd_gpu=lambda: RX7900))
    checks = [f.check for f in report.findings]
    assert "AMD GPU (ROCm)" in checks and "NVIDIA driver" not in checks
    amd = next(f for f in report.findings if f.check == "AMD GPU (ROCm)")
    assert amd.level == WARNING and "rocm7.2" in amd.fix and not report.failed


def test_healthy_amd_machine_with_a_rocm_torch(tmp_path):
    torch = fake_torch(**ROCM_TORCH)
    report = doctor.diagnose(Settings(data_dir=tmp_path),
                             machine(import_torch=lambda: torch, amd_gpu=lambda: RX7900, hub_reachable=lambda: True,
                                     capabilities=lambda s: caps("cuda")))
    assert [(f.check, f.level) for f in report.findings if f.level != OK] == []
    checks = [f.check for f in report.findings]
    assert checks[2:6] == ["torch", "AMD GPU (ROCm)", "CUDA", "GPU"]
    gpu = next(f for f in report.findings if f.check == "GPU")
    assert gpu.message == "Radeon RX 7900 XTX, 24.0 GiB, gfx1100"
    assert report.device == "cuda"


def test_amd_integrated_graphics_beside_an_nvidia_gpu_checks_nvidia(tmp_path):
    torch = fake_torch("13.0", available=True, arch=["sm_89"])
    report = doctor.diagnose(Settings(data_dir=tmp_path),
                             machine(import_torch=lambda: torch, nvidia_smi=lambda: SMI_OK,
                                     amd_gpu=lambda: preflight.AmdInfo(kfd=True, gpus=("[1002:15bf]",)),
                                     capabilities=lambda s: caps("cuda")))
    checks = [f.check for f in report.findings]
    assert "NVIDIA driver" in checks and "AMD GPU (ROCm)" not in checks


def test_mac_reports_the_apple_gpu_not_the_nvidia_driver(tmp_path):
    torch = fake_torch(mps_available=True)
    report = doctor.diagnose(Settings(data_dir=tmp_path),
                             machine(platform="darwin", import_torch=lambda: torch, capabilities=lambda s: caps("mps"),
                                     amd_gpu=lambda: pytest.fail("no AMD probe on macOS")))
    by_check = {f.check: f for f in report.findings}
    assert "NVIDIA driver" not in by_check
    assert by_check["Apple GPU (MPS)"].level == OK and by_check["CUDA"].level == OK
    assert "Apple GPU (MPS) is used instead" in by_check["CUDA"].message


def test_broken_torch_skips_the_torch_checks_and_fails(tmp_path):
    def broken():
        raise OSError("libcudart.so.13: cannot open shared object file")

    report = doctor.diagnose(Settings(data_dir=tmp_path), machine(import_torch=broken))
    checks = [f.check for f in report.findings]
    assert "CUDA" not in checks and "Device and precision" not in checks
    assert report.failed


def test_busy_port_is_carried_into_the_settings(tmp_path):
    settings = Settings(data_dir=tmp_path, port=7860)
    report = doctor.diagnose(settings, machine(port_free=lambda h, p: p != 7860))
    doctor.apply(report, settings)
    assert settings.port == 7861


def test_run_checks_for_the_ui_skips_the_port(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "Machine", lambda: machine(port_free=lambda h, p: False))
    findings = doctor.run_checks(Settings(data_dir=tmp_path))
    assert "Port" not in [f.check for f in findings]
    assert all(f.fix for f in findings if f.level != OK)


@pytest.mark.parametrize("level", [OK, WARNING, FAILURE])
def test_finding_line_shows_the_fix_only_when_not_ok(level):
    line = doctor.Finding("Check", level, "message", "do this").line()
    assert ("fix: do this" in line) == (level != OK)
