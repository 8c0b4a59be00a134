"""The doctor: every environment check as a finding (ok / warning / failure) with a one-line fix.

Each check is a plain function of its inputs (version numbers, ``nvidia-smi`` text, a torch-like module, probe
functions), so tests simulate machines we do not have: a GPU too new for this torch, an old driver, a used port,
a read-only data dir. :class:`Machine` bundles the real probes; :func:`diagnose` runs every check against it.

A failure stops the launch with the report and a non-zero exit; warnings are printed and the app starts.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from sdlocal import doctor_container, preflight
from sdlocal.settings import Settings

OK, WARNING, FAILURE = "ok", "warning", "failure"
HF_HUB_URL = "https://huggingface.co"
MIN_FREE_GB = 10.0  # one SDXL checkpoint is about 7 GB
CRITICAL_FREE_GB = 1.0


@dataclass
class Finding:
    """One line of the report: what was checked, how it went, and what to do about it."""

    check: str
    level: str  # OK, WARNING or FAILURE
    message: str
    fix: str = ""

    @property
    def title(self) -> str:
        return self.check

    @property
    def ok(self) -> bool:
        return self.level == OK

    def line(self) -> str:
        mark = {OK: "  ok     ", WARNING: "  WARNING", FAILURE: "  FAILURE"}[self.level]
        text = f"{mark}  {self.check}: {self.message}"
        if self.fix and self.level != OK:
            text += f"\n             fix: {self.fix}"
        return text


@dataclass
class Report:
    """All findings, plus what the checks decided for the run (the port to use, offline mode)."""

    findings: list[Finding] = field(default_factory=list)
    port: int | None = None
    offline: bool = False
    device: str | None = None  # what the engine will run on ("cuda", "mps", "cpu"), when torch works
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return any(f.level == FAILURE for f in self.findings)

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]

    def text(self) -> str:
        lines = ["sdlocal doctor"] + [f.line() for f in self.findings]
        failures = sum(f.level == FAILURE for f in self.findings)
        summary = f"{failures} failure(s), {len(self.warnings)} warning(s) in {self.seconds:.1f} s"
        lines.append(("Cannot start: " if failures else "Ready: ") + summary)
        return "\n".join(lines)


# ----- the checks (pure functions of their inputs) ---------------------------------------------------------------

def check_python(version: tuple[int, ...]) -> Finding:
    shown = ".".join(map(str, version[:3]))
    if preflight.python_supported(version):
        return Finding("Python", OK, f"{shown}")
    return Finding("Python", FAILURE, f"{shown} is not supported (sdlocal needs {preflight.supported_text()})",
                   f"Install Python {preflight.supported_text()}, delete the venv folder and run webui.sh again.")


def check_packages(pins: Mapping[str, str], installed: Callable[[str], str | None]) -> Finding:
    mismatches = preflight.compare(pins, installed)
    if not mismatches:
        return Finding("Pinned packages", OK, f"all {len(pins)} match requirements.lock")
    shown = "; ".join(m.describe() for m in mismatches[:5])
    more = f" and {len(mismatches) - 5} more" if len(mismatches) > 5 else ""
    missing_core = [m for m in mismatches if m.installed is None and m.name in ("torch", "diffusers", "gradio")]
    level = FAILURE if missing_core else WARNING
    return Finding("Pinned packages", level, f"{len(mismatches)} differ from the lock: {shown}{more}",
                   "Run webui.sh (or python launch.py) without --skip-install to install the pinned versions.")


def check_torch_import(importer: Callable[[], ModuleType]) -> tuple[Finding, ModuleType | None]:
    try:
        torch = importer()
    except Exception as exc:  # noqa: BLE001 - any import error is the finding
        return (Finding("torch", FAILURE, f"cannot be imported: {type(exc).__name__}: {exc}",
                        "Delete the venv folder and run webui.sh again to reinstall torch."), None)
    return Finding("torch", OK, f"{torch.__version__} ({torch_build(torch)})"), torch


def torch_build(torch: Any) -> str:
    """"ROCm 7.2 build", "CUDA 13.0 build" or "CPU build": ROCm builds set torch.version.hip (and no .cuda)."""
    hip = getattr(torch.version, "hip", None)
    if hip:
        return f"ROCm {'.'.join(str(hip).split('.')[:2])} build"
    cuda = getattr(torch.version, "cuda", None)
    return f"CUDA {cuda} build" if cuda else "CPU build"


def check_nvidia_driver(smi_output: str | None, torch_cuda: str | None, platform: str = sys.platform) -> Finding:
    """Is there an NVIDIA driver, and does it run the CUDA that this torch was built for?"""
    info = preflight.parse_nvidia_smi(smi_output)
    if info is None:
        return Finding("NVIDIA driver", WARNING, "no NVIDIA driver found (nvidia-smi is missing or fails)",
                       "If this computer has an NVIDIA GPU, install NVIDIA's driver; else sdlocal runs on the CPU.")
    gpus = f" for {', '.join(info.gpus)}" if info.gpus else ""
    if torch_cuda is None:
        index = preflight.CUDA_INDEX_URL
        return Finding("NVIDIA driver", WARNING,
                       f"driver {info.driver}{gpus} found, but this torch is a CPU build, so the GPU is not used",
                       f"Reinstall torch with CUDA: delete the venv and run webui.sh --torch-index-url {index}")
    if info.cuda is None:
        return Finding("NVIDIA driver", WARNING, f"driver {info.driver}: nvidia-smi does not say its CUDA version",
                       "Update the NVIDIA driver to a current release.")
    if preflight.version_tuple(info.cuda)[:2] < preflight.version_tuple(torch_cuda)[:2]:
        key = ".".join(torch_cuda.split(".")[:2])
        minimum = preflight.MIN_DRIVER_FOR_CUDA.get(key)
        need = ""
        if minimum:
            need = f" (driver {minimum[1] if platform.startswith('win') else minimum[0]} or newer)"
        return Finding("NVIDIA driver", FAILURE,
                       f"driver {info.driver} runs CUDA up to {info.cuda}, but torch was built for CUDA {torch_cuda}",
                       f"Update the NVIDIA driver to one for CUDA {torch_cuda}{need}.")
    return Finding("NVIDIA driver", OK, f"driver {info.driver}{gpus}, CUDA up to {info.cuda} (torch uses {torch_cuda})")


def check_rocm(amd: preflight.AmdInfo | None, torch: Any) -> Finding:
    """An AMD GPU on Linux: can ROCm reach it, and is this torch the ROCm build that uses it?"""
    hip = getattr(torch.version, "hip", None)
    reinstall = (f"Install torch's ROCm build: run webui.sh --torch-index-url {preflight.ROCM_INDEX_URL} (or delete "
                 "the venv folder and run webui.sh again).")
    if amd is None:
        return Finding("AMD GPU (ROCm)", WARNING, f"this torch is a {torch_build(torch)}, but no AMD GPU was found "
                       "(no /dev/kfd, no AMD display device)",
                       f"Install the build for this machine: webui.sh --torch-index-url {preflight.CPU_INDEX_URL} "
                       f"(or {preflight.CUDA_INDEX_URL} for an NVIDIA GPU).")
    rocm = amd.rocm or (".".join(str(hip).split(".")[:2]) if hip else None)
    desc = amd.describe() + (f", ROCm {rocm}" if rocm else "")  # torch's ROCm wheel needs no system ROCm
    if not amd.usable:
        return Finding("AMD GPU (ROCm)", WARNING, f"{desc}, but /dev/kfd is missing: the amdgpu kernel driver's "
                       "ROCm interface is not loaded, so the GPU cannot be used: RUNNING ON THE CPU",
                       "Install AMD's GPU driver with ROCm support (amdgpu-install --usecase=rocm) and reboot; "
                       f"then run webui.sh --torch-index-url {preflight.ROCM_INDEX_URL}.")
    if not amd.kfd_access:
        return Finding("AMD GPU (ROCm)", WARNING, f"{desc}, but this user may not open /dev/kfd, so ROCm cannot "
                       "use the GPU", "Add yourself to the render and video groups (sudo usermod -aG render,video "
                       "$USER), then log out and in again.")
    if not hip:
        return Finding("AMD GPU (ROCm)", WARNING,
                       f"{desc}, but this torch is a {torch_build(torch)}, so the GPU is not used", reinstall)
    return Finding("AMD GPU (ROCm)", OK,
                   f"{desc}; torch is a {torch_build(torch)} (HIP {hip}), so it runs on the GPU as device 'cuda'")


def check_mps(torch: Any) -> Finding:
    """macOS: can this torch use the Apple GPU (MPS), and if not, why not."""
    mps = getattr(getattr(torch, "backends", None), "mps", None)
    if mps is None or not getattr(mps, "is_built", lambda: True)():
        return Finding("Apple GPU (MPS)", WARNING, "this torch was built without MPS support: RUNNING ON THE CPU",
                       "Reinstall torch from the default index: delete the venv folder and run webui.sh again "
                       "without --torch-index-url or TORCH_INDEX_URL.")
    if mps.is_available():
        return Finding("Apple GPU (MPS)", OK, "usable: sdlocal runs on the Apple GPU (device mps)")
    return Finding("Apple GPU (MPS)", WARNING, "not usable: MPS needs macOS 12.3 or newer on Apple silicon (or on "
                   "a Mac with an AMD GPU): RUNNING ON THE CPU",
                   "Update macOS to 12.3 or newer; on an Intel Mac without an AMD GPU sdlocal runs on the CPU.")


def check_rocm_gpu_arch(name: str, total_memory: int, gcn_arch: str, arch_list: list[str],
                        override: str | None) -> Finding:
    """Was this ROCm torch compiled for this GPU's gfx target? (Else HIP fails with 'invalid device function'.)

    ``HSA_OVERRIDE_GFX_VERSION`` makes ROCm run a close target's kernels on an unlisted GPU (e.g. 11.0.0 for RDNA3
    APUs), so with it set a mismatch is only a warning.
    """
    target = gcn_arch.split(":", 1)[0]
    vram = total_memory / 2**30
    desc = f"{name}, {vram:.1f} GiB, {target or 'unknown gfx target'}"
    built = [a.split(":", 1)[0] for a in arch_list]
    if target and built and target not in built:
        message = f"{desc}: this torch was built for {', '.join(built)}, not {target}"
        if override:
            return Finding("GPU", WARNING, f"{message}; HSA_OVERRIDE_GFX_VERSION={override} is set",
                           "If generation fails with 'invalid device function', unset HSA_OVERRIDE_GFX_VERSION or "
                           "try another value.")
        similar = {"gfx103": "10.3.0", "gfx110": "11.0.0", "gfx115": "11.0.0"}.get(target[:6])
        hint = f"set HSA_OVERRIDE_GFX_VERSION={similar} to run " + ("RDNA2" if similar == "10.3.0" else "RDNA3") + \
            " kernels on it, or " if similar else ""
        return Finding("GPU", FAILURE, message, f"The GPU has no kernels in this torch: {hint}use a GPU that ROCm "
                       "supports; --device cpu runs on the CPU.")
    if vram < 3.5:
        return Finding("GPU", WARNING, f"{desc}: little memory for Stable Diffusion",
                       "Use --precision fp16 with SD 1.5 models; enable VAE slicing and model offload in the UI.")
    return Finding("GPU", OK, desc)


def check_cuda_available(torch: Any, has_driver: bool, require_gpu: bool, fix: str | None = None) -> Finding:
    """``fix``: the advice to give instead of the default one (a container's finding says what to add)."""
    if torch.cuda.is_available():
        return Finding("CUDA", OK, f"available, {torch.cuda.device_count()} device(s)")
    mps = getattr(getattr(torch, "backends", None), "mps", None)
    if mps is not None and mps.is_available():
        return Finding("CUDA", OK, "not available; the Apple GPU (MPS) is used instead")
    level = FAILURE if require_gpu else WARNING
    if has_driver:
        message = "torch.cuda.is_available() is False although an NVIDIA driver is installed: RUNNING ON THE CPU"
        default_fix = ("Check the driver check above; reinstall with webui.sh --torch-index-url for a CUDA build of "
                       "torch.")
    else:
        message = "no usable NVIDIA GPU: RUNNING ON THE CPU (a 512x512 image takes minutes, not seconds)"
        default_fix = "Use a computer with an NVIDIA GPU for speed." if not require_gpu else \
            "--require-gpu was given: start without it to run on the CPU, or fix the GPU setup."
    return Finding("CUDA", level, message, fix or default_fix)


def check_gpu_arch(name: str, total_memory: int, capability: tuple[int, int], arch_list: list[str]) -> Finding:
    """Was this torch compiled for this GPU? (A new GPU with an old torch fails with 'no kernel image'.)"""
    major, minor = capability
    vram = total_memory / 2**30
    sm = f"sm_{major}{minor}"
    desc = f"{name}, {vram:.1f} GiB, compute capability {major}.{minor}"
    if gpu_arch_supported(capability, arch_list):
        level, message, fix = OK, desc, ""
    else:
        level = FAILURE
        message = f"{desc}: this torch was built for {', '.join(arch_list) or 'no GPU'}, not {sm}"
        fix = "Install a torch build for this GPU: delete the venv and run webui.sh with --torch-index-url for a " \
              "newer CUDA (e.g. https://download.pytorch.org/whl/cu130)."
    if level == OK and vram < 3.5:
        return Finding("GPU", WARNING, f"{desc}: little memory for Stable Diffusion",
                       "Use --precision fp16 with SD 1.5 models, and start with --medvram (model offload and VAE "
                       "slicing) or, if that is not enough, --lowvram.")
    return Finding("GPU", level, message, fix)


def gpu_arch_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """sm_XY binaries run on the same major with an equal or higher minor; compute_XY (PTX) JITs to newer GPUs."""
    major, minor = capability
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        if not digits.isdigit() or len(digits) < 2:
            continue
        a_major, a_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and a_major == major and a_minor <= minor:
            return True
        if kind == "compute" and (a_major, a_minor) <= (major, minor):
            return True
    return False


def check_xformers(importer: Callable[[], ModuleType], torch_version: str, cuda_available: bool) -> Finding:
    if not cuda_available:
        return Finding("xformers", WARNING, "asked for, but xformers needs an NVIDIA GPU: using PyTorch SDPA",
                       "Drop --xformers on this machine; SDPA is as fast on current PyTorch.")
    try:
        module = importer()
    except Exception as exc:  # noqa: BLE001
        return Finding("xformers", WARNING, f"asked for, but cannot be imported ({type(exc).__name__}: {exc})",
                       f"pip install {preflight.XFORMERS_PIN} in the venv (or run webui.sh --xformers).")
    version = getattr(module, "__version__", "?")
    expected = preflight.XFORMERS_PIN.split("==")[1]
    if preflight.base_version(version) != expected:
        return Finding("xformers", WARNING, f"{version} is installed; {expected} is the one built for torch "
                       f"{preflight.base_version(torch_version)}",
                       f"pip install {preflight.XFORMERS_PIN} in the venv.")
    return Finding("xformers", OK, f"{version}, matches torch {preflight.base_version(torch_version)}")


def check_data_dir(path: Path, free_bytes: Callable[[Path], int], writable: Callable[[Path], str | None],
                   container: str | None = None) -> Finding:
    """Can we write models and images there, and is there room? ``writable`` returns None or the error text."""
    problem = writable(path)
    if problem is not None:
        return Finding("Data folder", FAILURE, f"{path} is not writable: {problem}",
                       doctor_container.data_dir_fix(path, container))
    free_gb = free_bytes(path) / 1e9
    if free_gb < CRITICAL_FREE_GB:
        return Finding("Data folder", FAILURE, f"{path}: only {free_gb:.1f} GB free",
                       "Free disk space or use --data-dir on a bigger disk.")
    if free_gb < MIN_FREE_GB:
        return Finding("Data folder", WARNING, f"{path}: {free_gb:.1f} GB free (one SDXL model is about 7 GB)",
                       "Free disk space or use --data-dir on a bigger disk.")
    return Finding("Data folder", OK, f"{path}, {free_gb:.0f} GB free")


def check_port(host: str, port: int, is_free: Callable[[str, int], bool],
               tries: int = 20) -> tuple[Finding, int | None]:
    """The asked port, else the next free one (said so); None when none of ``tries`` ports is free."""
    if is_free(host, port):
        return Finding("Port", OK, f"{port} is free"), port
    for candidate in range(port + 1, min(port + 1 + tries, 65536)):
        if is_free(host, candidate):
            return (Finding("Port", WARNING, f"{port} is in use by another program; using {candidate} instead",
                            f"Stop the other program, or choose a port with --port {candidate}."), candidate)
    return (Finding("Port", FAILURE, f"{port} and the next {tries} ports are in use",
                    "Choose a free port with --port."), None)


def check_hub(offline_asked: bool, reachable: Callable[[], bool]) -> tuple[Finding, bool]:
    """Hugging Face Hub reachable (starter models can be downloaded), else offline mode. Returns (finding, offline)."""
    if offline_asked:
        return Finding("Hugging Face Hub", OK, "offline mode (--offline): local models only, no network"), True
    if reachable():
        return Finding("Hugging Face Hub", OK, "reachable: starter models can be downloaded"), False
    return (Finding("Hugging Face Hub", WARNING, "not reachable: running offline with the models already on disk",
                    "Check the internet connection or proxy to download models; --offline silences this check."),
            True)


def check_precision(caps: Any, require_gpu: bool) -> Finding:
    """What the engine chose (device, precision, attention) and why, with its warnings."""
    message = (f"{caps.device} ({caps.device_name}), {caps.precision}: {caps.precision_reason}; "
               f"attention {caps.attention}")
    if caps.device == "cpu":
        level = FAILURE if require_gpu else WARNING
        fix = ("--require-gpu was given: fix the GPU setup (see above) or start without it." if require_gpu
               else "Generation on the CPU is slow; an NVIDIA GPU makes it 50-100x faster.")
        notes = "; ".join(caps.warnings)
        return Finding("Device and precision", level, message + (f" ({notes})" if notes else ""), fix)
    if caps.warnings:
        return Finding("Device and precision", WARNING, message + " (" + "; ".join(caps.warnings) + ")",
                       "Change --device/--precision/--attention, or leave them on auto.")
    return Finding("Device and precision", OK, message)


# ----- the real probes ---------------------------------------------------------------------------------------------

def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def writable_problem(path: Path) -> str | None:
    """Create the folder and a temporary file in it; None on success, else why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def disk_free(path: Path) -> int:
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def import_torch() -> ModuleType:
    import torch

    return torch


def import_xformers() -> ModuleType:
    import xformers

    return xformers


def engine_capabilities(settings: Settings) -> Any:
    from sdlocal.engine.devices import resolve_runtime

    return resolve_runtime(settings.to_engine_config()).capabilities


@dataclass
class Machine:
    """The probes the doctor uses; tests replace any of them to simulate another machine."""

    python_version: tuple[int, ...] = tuple(sys.version_info[:3])
    installed: Callable[[str], str | None] = preflight.installed_version
    pins: Callable[[], dict[str, str]] = preflight.read_lock
    import_torch: Callable[[], ModuleType] = import_torch
    import_xformers: Callable[[], ModuleType] = import_xformers
    nvidia_smi: Callable[[], str | None] = preflight.run_nvidia_smi
    amd_gpu: Callable[[], preflight.AmdInfo | None] = preflight.local_amd_gpu
    gfx_override: Callable[[], str | None] = lambda: os.environ.get("HSA_OVERRIDE_GFX_VERSION")
    disk_free: Callable[[Path], int] = disk_free
    writable: Callable[[Path], str | None] = writable_problem
    port_free: Callable[[str, int], bool] = port_is_free
    hub_reachable: Callable[[], bool] = lambda: preflight.url_reachable(HF_HUB_URL, timeout=3.0)
    capabilities: Callable[[Settings], Any] = engine_capabilities
    platform: str = sys.platform
    container: Callable[[], str | None] = doctor_container.container_runtime
    nvidia_devices: Callable[[], list[str]] = doctor_container.nvidia_device_nodes


QUICK = "quick"  # standard library only: Python, packages, data dir, port, Hub; runs before the server starts
TORCH = "torch"  # the checks that import torch (about 4 s): run after the page is up when serving


def diagnose(settings: Settings, machine: Machine | None = None, check_port_free: bool = True,
             parts: tuple[str, ...] = (QUICK, TORCH)) -> Report:
    """Run the checks of ``parts`` in order; checks that need torch are skipped (not faked) when torch is broken.

    Serving runs the quick part first and the torch part once the page is up, so the UI is not held back by
    importing torch; a failure in either still stops sdlocal with the report and exit code 1.
    """
    machine = machine or Machine()
    started = time.monotonic()
    report = Report(port=settings.port, offline=settings.offline)
    add = report.findings.append
    container = machine.container()
    if QUICK in parts:
        add(check_python(machine.python_version))
        try:
            add(check_packages(machine.pins(), machine.installed))
        except (OSError, ValueError) as exc:
            add(Finding("Pinned packages", WARNING, f"cannot read the lock file: {exc}",
                        "Restore requirements.lock from the repository (git checkout requirements.lock)."))
    torch = None
    if TORCH in parts:
        torch_finding, torch = check_torch_import(machine.import_torch)
        add(torch_finding)
        smi = machine.nvidia_smi()
        has_driver = preflight.parse_nvidia_smi(smi) is not None
        if torch is not None:
            boxed = doctor_container.check_container_gpu(container, machine.nvidia_devices(),
                                                         getattr(torch.version, "cuda", None), settings.require_gpu)
            if boxed is not None:
                add(boxed)
            if boxed is None or boxed.ok:  # "install a driver" is wrong advice in a container without its GPU
                add(check_gpu_vendor(torch, machine, smi, has_driver))
            cuda = check_cuda_available(torch, has_driver, settings.require_gpu,
                                        None if boxed is None or boxed.ok else "See the Container GPU line above.")
            add(cuda)
            if cuda.ok:
                for index in range(torch.cuda.device_count()):
                    add(gpu_arch_finding(torch, index, machine))
            if settings.xformers:
                add(check_xformers(machine.import_xformers, torch.__version__, cuda.ok))
    if QUICK in parts:
        add(check_data_dir(settings.data_dir, machine.disk_free, machine.writable, container))
        if check_port_free:
            port_finding, port = check_port(settings.host, settings.port, machine.port_free)
            add(port_finding)
            report.port = port
        hub_finding, report.offline = check_hub(settings.offline, machine.hub_reachable)
        add(hub_finding)
    if torch is not None:
        try:
            caps = machine.capabilities(settings)
            report.device = caps.device
            add(check_precision(caps, settings.require_gpu))
        except Exception as exc:  # noqa: BLE001 - the engine's own error is the finding
            add(Finding("Device and precision", FAILURE, f"the engine cannot set up the device: {exc}",
                        "Start with --device cpu --precision fp32, and report the error."))
    report.seconds = time.monotonic() - started
    return report


def check_gpu_vendor(torch: Any, machine: Machine, smi: str | None, has_driver: bool) -> Finding:
    """The GPU finding for this machine: Apple (MPS) on macOS, AMD (ROCm) for an AMD GPU or a ROCm torch, else NVIDIA.

    An AMD GPU beside a working NVIDIA driver is usually the processor's integrated graphics: NVIDIA is checked then.
    """
    if machine.platform == "darwin":
        return check_mps(torch)
    hip = getattr(torch.version, "hip", None)
    amd = machine.amd_gpu() if machine.platform.startswith("linux") else None
    if hip or (amd is not None and not has_driver):
        return check_rocm(amd, torch)
    return check_nvidia_driver(smi, getattr(torch.version, "cuda", None), machine.platform)


def gpu_arch_finding(torch: Any, index: int, machine: Machine) -> Finding:
    props = torch.cuda.get_device_properties(index)
    arch_list = list(torch.cuda.get_arch_list())
    if getattr(torch.version, "hip", None):
        return check_rocm_gpu_arch(props.name, props.total_memory, str(getattr(props, "gcnArchName", "")), arch_list,
                                   machine.gfx_override())
    return check_gpu_arch(props.name, props.total_memory, torch.cuda.get_device_capability(index), arch_list)


def run_checks(settings: Settings) -> list[Finding]:
    """The findings alone, for the UI's System tab (the running server holds the port, so it is not checked)."""
    return diagnose(settings, check_port_free=False).findings


def apply(report: Report, settings: Settings) -> None:
    """Carry the doctor's decisions into the settings and the process: the free port and offline mode."""
    if report.port is not None:
        settings.port = report.port
    if report.offline and not settings.offline:
        settings.offline = True
    if settings.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
