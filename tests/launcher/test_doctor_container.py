"""The doctor inside a container: a CUDA image started without its GPU says which line to add."""

from __future__ import annotations

from pathlib import Path

from sdlocal import doctor, doctor_container
from sdlocal.doctor import FAILURE, OK, WARNING
from sdlocal.settings import Settings
from tests.launcher.test_doctor import caps, fake_torch, machine


def test_container_runtime_is_told_by_the_files_the_engines_leave(tmp_path):
    assert doctor_container.container_runtime(tmp_path, env={}) is None
    assert doctor_container.container_runtime(tmp_path, env={"container": "lxc"}) == "lxc"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".containerenv").write_text("")
    assert doctor_container.container_runtime(tmp_path, env={}) == "podman"
    (tmp_path / ".dockerenv").write_text("")
    assert doctor_container.container_runtime(tmp_path, env={}) == "docker"


def test_device_nodes_are_the_numbered_gpus_only(tmp_path):
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).write_text("")
    assert doctor_container.nvidia_device_nodes(str(tmp_path / "nvidia[0-9]*")) == [
        str(tmp_path / "nvidia0"), str(tmp_path / "nvidia1")]


def test_cuda_image_without_the_gpu_reservation_names_the_line_to_add(tmp_path):
    report = doctor.diagnose(Settings(data_dir=tmp_path), machine(import_torch=lambda: fake_torch("13.0"),
                                                                  container=lambda: "docker"))
    checks = [f.check for f in report.findings]
    assert "NVIDIA driver" not in checks, "'install the NVIDIA driver' is wrong advice inside a container"
    boxed = next(f for f in report.findings if f.check == "Container GPU")
    assert boxed.level == WARNING and "no /dev/nvidia* devices" in boxed.message and "CPU" in boxed.message
    assert "--gpus all" in boxed.fix and "driver: nvidia, count: 1, capabilities: [gpu]" in boxed.fix
    assert "NVIDIA Container Toolkit" in boxed.fix and "sdlocal-cpu" in boxed.fix
    cuda = next(f for f in report.findings if f.check == "CUDA")
    assert cuda.fix == "See the Container GPU line above."
    assert "fix: Pass the GPU in: `docker run --gpus all" in report.text()


def test_require_gpu_in_a_container_without_the_gpu_fails(tmp_path):
    report = doctor.diagnose(Settings(data_dir=tmp_path, require_gpu=True),
                             machine(import_torch=lambda: fake_torch("13.0"), container=lambda: "docker"))
    assert report.failed
    assert next(f for f in report.findings if f.check == "Container GPU").level == FAILURE


def test_cuda_image_with_its_gpu_checks_the_driver_as_usual(tmp_path):
    smi = "NVIDIA-SMI 580.65.06    Driver Version: 580.65.06    CUDA Version: 13.0"
    report = doctor.diagnose(Settings(data_dir=tmp_path), machine(
        import_torch=lambda: fake_torch("13.0", available=True, arch=["sm_89"]), container=lambda: "docker",
        nvidia_devices=lambda: ["/dev/nvidia0"], nvidia_smi=lambda: smi, capabilities=lambda s: caps("cuda")))
    findings = {f.check: f for f in report.findings}
    assert findings["Container GPU"].level == OK and "/dev/nvidia0" in findings["Container GPU"].message
    assert findings["NVIDIA driver"].level == OK and findings["CUDA"].level == OK
    assert report.device == "cuda"


def test_cpu_image_in_a_container_is_fine(tmp_path):
    report = doctor.diagnose(Settings(data_dir=tmp_path), machine(container=lambda: "docker"))
    boxed = next(f for f in report.findings if f.check == "Container GPU")
    assert boxed.level == OK and "CPU build" in boxed.message


def test_outside_a_container_there_is_no_container_line(tmp_path):
    report = doctor.diagnose(Settings(data_dir=tmp_path), machine(import_torch=lambda: fake_torch("13.0")))
    assert "Container GPU" not in [f.check for f in report.findings]


def test_an_unwritable_volume_says_who_must_own_it():
    finding = doctor.check_data_dir(Path("/data"), lambda p: 10**11, lambda p: "Permission denied", "docker")
    assert finding.level == FAILURE and "is a volume" in finding.fix and "chown -R" in finding.fix
    plain = doctor.check_data_dir(Path("/data"), lambda p: 10**11, lambda p: "Permission denied")
    assert "--data-dir" in plain.fix

