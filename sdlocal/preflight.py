"""Checks the launcher runs before the environment is known to be good: standard library only.

``launch.py`` imports this module while torch, gradio and friends may still be missing or at the wrong version,
so nothing here may import anything outside the standard library (``tests/launcher`` checks that). The doctor
(``sdlocal.doctor``) reuses the same functions once the environment is verified.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_PYTHONS: tuple[tuple[int, int], ...] = ((3, 10), (3, 11), (3, 12))
ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE = ROOT / "requirements.lock"
TEST_LOCK_FILE = ROOT / "requirements-test.lock"
CPU_INDEX_URL = "https://download.pytorch.org/whl/cpu"
# The CUDA build of the pinned torch for Windows with an NVIDIA GPU (PyPI's Windows wheel is CPU-only). CUDA 13.0 is
# the CUDA of PyPI's own Linux wheel of torch 2.13.0 (its nvidia-cuda-runtime is 13.0), so the index has it.
CUDA_INDEX_URL = "https://download.pytorch.org/whl/cu130"
TORCH_CUDA_FOR_INDEX = "13.0"
XFORMERS_PIN = "xformers==0.0.35"
# torch's ROCm build for AMD GPUs on Linux. PyTorch publishes each release for two ROCm versions: torch 2.11 and 2.12
# for ROCm 7.1 and 7.2, and public ROCm setups of torch 2.13.0 install 2.13.0+rocm7.2 from this index, so 7.2 is the
# version the pinned torch certainly has wheels for. The wheel bundles ROCm's libraries (only the amdgpu kernel
# driver is needed, any ROCm installed on the system is not used). Change it here together with the torch pin.
ROCM_VERSION_FOR_INDEX = "7.2"
ROCM_INDEX_URL = f"https://download.pytorch.org/whl/rocm{ROCM_VERSION_FOR_INDEX}"
AMD_PCI_VENDOR = "0x1002"  # ATI/AMD graphics (AMD's CPUs and chipsets are 0x1022)

# Oldest NVIDIA driver (Linux / Windows) that runs each CUDA runtime, from NVIDIA's CUDA release notes.
MIN_DRIVER_FOR_CUDA: dict[str, tuple[str, str]] = {
    "11.8": ("520.61.05", "520.06"),
    "12.0": ("525.60.13", "527.41"),
    "12.1": ("530.30.02", "531.14"),
    "12.2": ("535.54.03", "536.25"),
    "12.3": ("545.23.06", "545.84"),
    "12.4": ("550.54.14", "551.61"),
    "12.5": ("555.42.02", "555.85"),
    "12.6": ("560.28.03", "560.76"),
    "12.8": ("570.26", "570.65"),
    "12.9": ("575.51.03", "576.02"),
    "13.0": ("580.65.06", "580.88"),
}


def python_supported(version: tuple[int, ...] | None = None) -> bool:
    version = tuple(sys.version_info[:2]) if version is None else tuple(version[:2])
    return version in SUPPORTED_PYTHONS


def supported_text() -> str:
    return ", ".join(f"{a}.{b}" for a, b in SUPPORTED_PYTHONS)


# ----- the lock file ---------------------------------------------------------------------------------------------

def normalize(name: str) -> str:
    """PEP 503 name normalisation: ``Pillow`` == ``pillow``, ``huggingface_hub`` == ``huggingface-hub``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK_FILE) -> dict[str, str]:
    """``name==version`` lines (comments, blank lines and ``; markers`` that do not apply here are skipped)."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        spec, _, marker = line.partition(";")
        if marker.strip() and not marker_applies(marker.strip()):
            continue
        name, sep, version = spec.strip().partition("==")
        if not sep or not name.strip() or not version.strip():
            raise ValueError(f"{path}:{number}: {raw!r} is not a 'name==version' pin; regenerate the lock with "
                             "'python tools/lock.py'")
        pins[normalize(name.strip())] = version.strip()
    return pins


def marker_applies(marker: str) -> bool:
    """The few environment markers the lock uses: ``sys_platform == "..."`` / ``!=``, joined by ``and``."""
    for part in marker.split(" and "):
        match = re.fullmatch(r'\s*sys_platform\s*(==|!=)\s*["\']([^"\']+)["\']\s*', part)
        if not match:
            raise ValueError(f"unsupported marker in the lock file: {marker!r}")
        equal = sys.platform == match.group(2)
        if equal != (match.group(1) == "=="):
            return False
    return True


def base_version(version: str) -> str:
    """``2.13.0+cpu`` -> ``2.13.0``: the local label names the build (CPU/CUDA), not the release."""
    return version.split("+", 1)[0]


@dataclass(frozen=True)
class Mismatch:
    """A package whose installed version differs from the lock (``installed`` is None when missing)."""

    name: str
    installed: str | None
    pinned: str

    def describe(self) -> str:
        have = "not installed" if self.installed is None else f"installed {self.installed}"
        return f"{self.name}: {have}, pinned {self.pinned}"


def installed_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def compare(pins: Mapping[str, str], installed: Callable[[str], str | None] = installed_version) -> list[Mismatch]:
    """Every pinned package whose installed version is missing or different (local build labels ignored)."""
    out = []
    for name, pinned in sorted(pins.items()):
        have = installed(name)
        if have is None or base_version(have) != base_version(pinned):
            out.append(Mismatch(name, have, pinned))
    return out


# ----- NVIDIA GPU and the torch build ------------------------------------------------------------------------------

@dataclass(frozen=True)
class NvidiaInfo:
    """What ``nvidia-smi`` says: the driver version and the newest CUDA it supports."""

    driver: str | None
    cuda: str | None
    gpus: tuple[str, ...] = ()


def tool_output(exe: str | None, timeout: float = 10.0) -> str | None:
    """A GPU tool's plain output, or None when it is missing or fails (no driver, no GPU): never an exception."""
    if exe is None:
        return None
    try:
        done = subprocess.run([exe], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def run_nvidia_smi(timeout: float = 10.0) -> str | None:
    """The plain ``nvidia-smi`` output, or None when there is no tool or it fails (no driver, no GPU)."""
    return tool_output(shutil.which("nvidia-smi"), timeout)


def parse_nvidia_smi(output: str | None) -> NvidiaInfo | None:
    """Driver and CUDA version from nvidia-smi's header; None when the output shows no working driver."""
    if not output:
        return None
    driver = re.search(r"Driver Version:\s*([0-9.]+)", output)
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", output)
    if driver is None:
        return None
    gpus = tuple(m.strip() for m in re.findall(r"^\|\s+\d+\s+(NVIDIA[^|]*?)\s{2,}", output, flags=re.MULTILINE))
    return NvidiaInfo(driver.group(1), cuda.group(1) if cuda else None, gpus)


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


def choose_torch_index(platform: str, has_nvidia: bool, override: str | None,
                       cpu_index_reachable: Callable[[], bool], amd: AmdInfo | None = None) -> tuple[str | None, str]:
    """Which index to install torch from, and why (said to the user).

    None means pip's configured/default index. Linux with an NVIDIA GPU: PyPI (its Linux wheel is the CUDA
    build). Windows with an NVIDIA GPU: the CUDA index (PyPI's Windows wheel is CPU-only). Linux with an AMD GPU
    that ROCm can reach (``/dev/kfd``): the ROCm index. macOS: PyPI (its wheel drives Apple GPUs through MPS).
    Otherwise the CPU index, so no gigabytes of CUDA libraries; if download.pytorch.org cannot be reached, the
    default index, said so.
    """
    if override:
        return override, f"torch from {override} (--torch-index-url / TORCH_INDEX_URL)"
    if has_nvidia:
        if platform.startswith("win"):
            why = f"NVIDIA GPU on Windows: torch's CUDA {TORCH_CUDA_FOR_INDEX} build from {CUDA_INDEX_URL}"
            return CUDA_INDEX_URL, why
        return None, "NVIDIA GPU: torch from the default index (its Linux/macOS wheel is the GPU build)"
    if platform == "darwin":
        return None, ("macOS: torch from the default index (its wheel uses the Apple GPU through MPS; no CUDA "
                      "libraries are downloaded)")
    no_gpu = "no NVIDIA GPU"
    if amd is not None and platform.startswith("linux"):
        if amd.usable and cpu_index_reachable():
            return ROCM_INDEX_URL, f"{amd.describe()} with ROCm: torch's ROCm {ROCM_VERSION_FOR_INDEX} build from " \
                                   f"{ROCM_INDEX_URL}"
        if amd.usable:
            return None, (f"{amd.describe()} with ROCm, but download.pytorch.org cannot be reached: torch from the "
                          "default index (your pip configuration); later: --torch-index-url " + ROCM_INDEX_URL)
        no_gpu = (f"{amd.describe()} without ROCm's kernel interface (/dev/kfd is missing, the amdgpu driver is not "
                  f"loaded; once it is: --torch-index-url {ROCM_INDEX_URL}), so")
    if cpu_index_reachable():
        return CPU_INDEX_URL, f"{no_gpu}: torch's CPU build from {CPU_INDEX_URL}"
    return None, (f"{no_gpu}, and {CPU_INDEX_URL} cannot be reached: torch from the default index "
                  "(your pip configuration)")


# ----- AMD GPUs on Linux (ROCm) -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AmdInfo:
    """An AMD GPU on Linux and whether ROCm can reach it; from /dev/kfd, rocminfo and the PCI devices in /sys."""

    kfd: bool  # /dev/kfd exists: the amdgpu kernel driver's compute interface, which torch's ROCm build needs
    kfd_access: bool = True  # this user may open it (members of the render/video groups may)
    gpus: tuple[str, ...] = ()  # "AMD Radeon RX 7900 XTX (gfx1100)" from rocminfo, else PCI ids
    rocminfo: bool = False  # rocminfo listed a GPU agent, so ROCm's runtime sees it
    rocm: str | None = None  # the system's ROCm (/opt/rocm/.info/version), when one is installed

    @property
    def usable(self) -> bool:
        return self.kfd or self.rocminfo

    def describe(self) -> str:
        return "AMD GPU" + (f" ({', '.join(self.gpus)})" if self.gpus else "")


def parse_rocminfo(output: str | None) -> tuple[str, ...]:
    """The GPU agents in ``rocminfo``'s output: marketing name and gfx target, e.g. ``Radeon RX 7900 XTX (gfx1100)``."""
    gpus = []
    for block in re.split(r"^\s*Agent \d+\s*$", output or "", flags=re.MULTILINE)[1:]:
        fields: dict[str, str] = {}
        for key, value in re.findall(r"^[ \t]*([A-Za-z ]+?):[ \t]*(.*?)[ \t]*$", block, flags=re.MULTILINE):
            fields.setdefault(key, value)  # the agent's own Name comes before its ISA's
        if fields.get("Device Type") != "GPU":
            continue
        name, target = fields.get("Marketing Name", ""), fields.get("Name", "")
        gpus.append(f"{name} ({target})" if name and target else name or target)
    return tuple(gpus)


def amd_pci_gpus(devices: Path = Path("/sys/bus/pci/devices")) -> tuple[str, ...]:
    """AMD display devices (vendor 0x1002, class 0x03xxxx) as ``[1002:744c]`` ids; () when there is no sysfs."""
    found = []
    for device in sorted(devices.glob("*")) if devices.is_dir() else ():
        try:
            vendor = (device / "vendor").read_text().strip().lower()
            klass = (device / "class").read_text().strip().lower()
            product = (device / "device").read_text().strip().lower()
        except OSError:
            continue
        if vendor == AMD_PCI_VENDOR and klass.startswith("0x03"):
            found.append(f"[1002:{product.removeprefix('0x')}]")
    return tuple(found)


def run_rocminfo(timeout: float = 10.0) -> str | None:
    exe = shutil.which("rocminfo") or ("/opt/rocm/bin/rocminfo" if Path("/opt/rocm/bin/rocminfo").exists() else None)
    return tool_output(exe, timeout)


def rocm_version(root: Path = Path("/")) -> str | None:
    """The installed ROCm's version from ``/opt/rocm/.info/version`` (``6.4.1-120`` -> ``6.4.1``)."""
    try:
        text = (root / "opt/rocm/.info/version").read_text().strip()
    except OSError:
        return None
    return text.split("-", 1)[0] or None


def detect_amd_gpu(root: Path = Path("/"), rocminfo: Callable[[], str | None] = run_rocminfo) -> AmdInfo | None:
    """An AMD GPU on this (Linux) machine, or None; ``root`` and ``rocminfo`` are replaced in tests."""
    kfd_path = root / "dev/kfd"
    kfd = kfd_path.exists()
    pci = amd_pci_gpus(root / "sys/bus/pci/devices")
    if not kfd and not pci:
        return None  # nothing AMD here: do not run rocminfo at all
    agents = parse_rocminfo(rocminfo())
    return AmdInfo(kfd=kfd, kfd_access=kfd and os.access(kfd_path, os.R_OK | os.W_OK), gpus=agents or pci,
                   rocminfo=bool(agents), rocm=rocm_version(root))


def local_amd_gpu() -> AmdInfo | None:
    """:func:`detect_amd_gpu` on Linux; None elsewhere (torch's ROCm wheels are Linux-only)."""
    return detect_amd_gpu() if sys.platform.startswith("linux") else None


# ----- which build of torch: the local version label ---------------------------------------------------------------

# The last part of a PyTorch wheel index's address names the build it serves, and that build's wheels carry the same
# name as their local version label: .../whl/cu130 serves 2.13.0+cu130, .../whl/rocm7.2 serves 2.13.0+rocm7.2.
INDEX_BUILD = re.compile(r"cpu|cu\d{2,3}|rocm\d+(?:\.\d+)*|xpu")


def build_label(version: str) -> str | None:
    """``2.13.0+cu130`` -> ``cu130``; None for a plain version (the wheel of PyPI, the default index)."""
    _, sep, label = version.partition("+")
    return label.lower() if sep and label else None


def default_build(platform: str) -> str:
    """The build of PyPI's plain torch wheel: CUDA 13.0 on Linux (FACTS), the CPU build on Windows and macOS."""
    if platform.startswith("linux"):
        return "cu" + TORCH_CUDA_FOR_INDEX.replace(".", "")
    return "cpu"


def installed_build(version: str, platform: str) -> str:
    """The build an installed torch is: its label, or the default index's build when it has none."""
    return build_label(version) or default_build(platform)


def index_build(index_url: str) -> str | None:
    """The build an index serves, from its address (``.../whl/cu130`` -> ``cu130``); None when it cannot be told."""
    last = urllib.parse.urlsplit(index_url.strip()).path.rstrip("/").rsplit("/", 1)[-1].lower()
    return last if INDEX_BUILD.fullmatch(last) else None


def describe_build(build: str) -> str:
    """``cu130`` -> ``CUDA 13.0``, ``rocm7.2`` -> ``ROCm 7.2``, ``cpu`` -> ``CPU``: for messages."""
    if build.startswith("cu") and build[2:].isdigit():
        return f"CUDA {build[2:-1]}.{build[-1]}"
    if build.startswith("rocm"):
        return f"ROCm {build[4:]}"
    return {"cpu": "CPU", "xpu": "Intel XPU"}.get(build, build)


@dataclass(frozen=True)
class TorchRebuild:
    """What ``--torch-index-url`` means for a torch already at the pinned release: a spec to install, and why."""

    spec: str | None  # e.g. "torch==2.13.0+cu130"; None when nothing is to be installed
    message: str
    build: str | None = None  # the build the index serves, when known


def torch_rebuild(installed: str, pinned: str, index_url: str, platform: str) -> TorchRebuild:
    """Reinstall torch from ``index_url`` only when the installed build differs from the one that index serves.

    The version numbers already match, so ``pip install torch==2.13.0`` would be a no-op: the spec names the build
    (``torch==2.13.0+cu130``), which the lock's ``torch==2.13.0`` constraint allows (PEP 440 ignores local labels
    when the constraint has none). An index whose address does not name a build is left alone, said so.
    """
    want = index_build(index_url)
    if want is None:
        return TorchRebuild(None, f"cannot tell from its address which torch build {index_url} serves (it does "
                                  "not end in /cpu, /cu130, /rocm7.2 or the like), so torch "
                                  f"{installed} was left as it is. To install torch from it anyway, delete the venv "
                                  "folder and run webui.sh again with the same --torch-index-url")
    have = installed_build(installed, platform)
    if want == have:
        return TorchRebuild(None, f"torch {installed} is already the {describe_build(want)} build that {index_url} "
                                  "serves: nothing changed", want)
    spec = f"torch=={base_version(pinned)}+{want}"
    return TorchRebuild(spec, f"torch {installed} is the {describe_build(have)} build; {index_url} serves the "
                              f"{describe_build(want)} build: reinstalling {spec} from it", want)


def url_reachable(url: str, timeout: float = 4.0) -> bool:
    """A quick HEAD request: seconds, not pip's 180 s timeout, so an offline machine is told at once."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


def pip_report_is_cpu_torch(report: Mapping) -> bool | None:
    """Given pip's ``--dry-run --report`` JSON for ``torch``: True if a CPU build, False if CUDA, None if unknown.

    A CUDA build shows either a ``+cuXXX`` local label or ``nvidia-*`` packages among what would be installed.
    """
    items = report.get("install") or []
    torch_version = None
    names = []
    for item in items:
        meta = item.get("metadata") or {}
        name = normalize(str(meta.get("name", "")))
        names.append(name)
        if name == "torch":
            torch_version = str(meta.get("version", ""))
    if torch_version is None:
        return None
    if "+cu" in torch_version or any(n.startswith("nvidia-") for n in names):
        return False
    return True


def pip_install_command(python: str, requirements: Iterable[str], index_url: str | None = None,
                        lock: Path | None = None) -> list[str]:
    """``python -m pip install`` with the lock as constraints, so dependencies resolve to the pinned versions."""
    cmd = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    if index_url:
        # --extra-index-url keeps PyPI (or the configured index) for torch's own dependencies.
        cmd += ["--extra-index-url", index_url]
    if lock is not None:
        cmd += ["-c", str(lock)]
    cmd += list(requirements)
    return cmd


# ----- choosing the Python for a new venv (webui.sh / webui.bat, before any venv exists) -------------------------

@dataclass(frozen=True)
class Candidate:
    """A Python interpreter that runs and is a supported version."""

    path: str
    version: str  # "3.11"


def probe_torch_build(python: str, timeout: float = 180.0) -> bool | None:
    """Would ``python``'s pip, with the indexes it can reach, install a CPU build of the pinned torch?

    Uses ``pip install --dry-run --report`` so nothing is downloaded but metadata. None when pip cannot tell.
    """
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--disable-pip-version-check", "--report", str(report), f"torch=={torch_pin()}"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        if done.returncode != 0 or not report.exists():
            return None
        try:
            return pip_report_is_cpu_torch(json.loads(report.read_text(encoding="utf-8")))
        except ValueError:
            return None


def torch_pin(lock: Path = LOCK_FILE) -> str:
    try:
        return read_lock(lock)["torch"]
    except (OSError, KeyError, ValueError):
        return "2.13.0"


def pick_python(candidates: list[Candidate], has_gpu: bool, override: str | None,
                cpu_index_reachable: Callable[[], bool], probe: Callable[[str], bool | None],
                say: Callable[[str], None]) -> Candidate:
    """The Python to build the venv with: the newest supported one, unless only an older one gets a CPU torch.

    Without an NVIDIA GPU and without the CPU index, a Python whose reachable indexes offer only the CUDA build
    of torch would pull about 3 GB of NVIDIA libraries the machine cannot use, so a candidate that gets the CPU
    build is preferred. With a GPU torch has a build for (NVIDIA, or AMD with ROCm), an index override, or the CPU
    index reachable, the first candidate is used.
    """
    if not candidates:
        raise ValueError("no candidates")
    first = candidates[0]
    if has_gpu or override or platform_is_mac():
        return first
    if cpu_index_reachable():
        return first
    cuda_only: list[Candidate] = []
    for candidate in candidates:
        result = probe(candidate.path)
        if result is True:
            for skipped in cuda_only:
                say(f"Python {skipped.version}: only a CUDA build of torch {torch_pin()} is reachable (about 3 GB of "
                    f"NVIDIA libraries this machine cannot use); using Python {candidate.version}, which gets the "
                    "CPU build.")
            return candidate
        if result is False:
            cuda_only.append(candidate)
    say(f"No supported Python gets a CPU build of torch {torch_pin()} from the reachable indexes and "
        f"{CPU_INDEX_URL} cannot be reached: using Python {first.version} with the default index "
        "(it may download the CUDA build, about 3 GB). Set TORCH_INDEX_URL to a CPU wheel index to avoid that.")
    return first


def platform_is_mac() -> bool:
    return sys.platform == "darwin"


def has_nvidia_gpu() -> bool:
    return parse_nvidia_smi(run_nvidia_smi()) is not None
