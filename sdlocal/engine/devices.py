"""Which device, precision and attention the engine runs with, and why.

The choices are resolved once per configuration into a ``Runtime`` (what the loader uses) and a
``Capabilities`` (what the UI shows: the choice, the reason, and for every alternative either "" or why it
cannot be used here). CPU bf16 detection is a pure function over a set of CPU feature flags so that it can be
tested with the flags of machines we do not have.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdlocal.engine.config import EngineConfig

# x86 features that execute bf16 matrix maths in hardware; without them torch emulates bf16 through fp32 and
# it is slower than plain fp32.
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# ARMv8.6 BF16 (Linux /proc/cpuinfo "Features: ... bf16", macOS hw.optional.arm.FEAT_BF16).
ARM_BF16_FLAG = "bf16"


@dataclass
class Capabilities:
    """What this machine can run: the chosen device/precision/attention, each alternative with a reason if not."""

    device: str
    device_name: str
    precision: str
    precision_reason: str
    precisions: dict[str, str]
    attention: str
    attentions: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    memory_mode: str = "normal"  # "normal", "medvram" or "lowvram" (A1111's memory modes)
    memory_reason: str = ""  # what the memory options do here, and what could not be applied and why


@dataclass
class Runtime:
    """The resolved settings the loader and generator apply to a pipeline (torch types kept as strings here)."""

    device: str  # "cuda", "mps" or "cpu"
    precision: str  # "fp16", "bf16" or "fp32": the UNet and text encoders
    vae_precision: str  # the VAE; fp32 with no_half_vae
    attention: str  # "sdpa" or "xformers"
    attention_slicing: bool
    vae_slicing: bool
    cpu_offload: bool  # model CPU offload: whole models move to the GPU while they run
    capabilities: Capabilities
    fast: bool = False  # apply ``engine.fast.apply_fast_mode`` after placing a pipeline
    sequential_offload: bool = False  # sequential CPU offload: layer by layer (lowvram)

    @property
    def dtype(self) -> Any:
        return torch_dtype(self.precision)

    @property
    def vae_dtype(self) -> Any:
        return torch_dtype(self.vae_precision)


def torch_dtype(precision: str) -> Any:
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]


# ------------------------------------------------------------------------------------------- CPU features
def cpu_native_bf16(flags: set[str] | frozenset[str], machine: str = "x86_64") -> tuple[bool, str]:
    """Whether a CPU with these feature flags runs bf16 natively, and the one-line reason.

    Pure on purpose: tests pass the flag sets of other CPUs.
    """
    lowered = {flag.lower() for flag in flags}
    arch = machine.lower()
    if arch in ("arm64", "aarch64") or arch.startswith("armv"):
        if ARM_BF16_FLAG in lowered:
            return True, "this ARM CPU has the BF16 extension"
        return False, "this ARM CPU lacks the BF16 extension"
    found = [flag for flag in X86_BF16_FLAGS if flag in lowered]
    if found:
        return True, f"this CPU executes bf16 natively ({', '.join(found)})"
    return False, "this CPU has no native bf16 (no avx512_bf16 or amx_bf16)"


def read_cpu_flags() -> set[str]:
    """The CPU feature flags as the operating system reports them (Linux /proc/cpuinfo, macOS sysctl)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    flags.update(value.split())
                    break
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5)
            if out.stdout.strip() == "1":
                flags.add(ARM_BF16_FLAG)
        except (OSError, subprocess.SubprocessError):
            pass
    return flags


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def bf16_by_timing(fp32_seconds: float, bf16_seconds: float) -> tuple[bool, str]:
    """Native bf16 judged from a matmul timing, for CPUs whose features the OS does not tell (Windows, macOS x86).

    Emulated bf16 runs through fp32 plus conversions, so it is never much faster than fp32; hardware bf16 is about
    twice as fast. Anything under 0.8x the fp32 time can only be hardware.
    """
    ratio = bf16_seconds / fp32_seconds if fp32_seconds > 0 else float("inf")
    if ratio <= 0.8:
        return True, f"bf16 matmuls ran {1 / ratio:.1f}x faster than fp32 on this CPU (timed: the OS does not list " \
                     "its features)"
    return False, f"bf16 matmuls were not faster than fp32 on this CPU ({ratio:.2f}x the time; timed: the OS does " \
                  "not list its features)"


def measure_bf16_speed(size: int = 512, repeats: int = 5) -> tuple[float, float]:
    """Fastest time of one ``size``-square matmul in fp32 and in bf16, interleaved so load spikes hit both."""
    import time

    import torch

    a32 = torch.randn(size, size)
    a16 = a32.to(torch.bfloat16)
    best = {"fp32": float("inf"), "bf16": float("inf")}
    for _ in range(repeats):
        for name, a in (("fp32", a32), ("bf16", a16)):
            started = time.perf_counter()
            torch.mm(a, a)
            best[name] = min(best[name], time.perf_counter() - started)
    return best["fp32"], best["bf16"]


def timed_native_bf16(cache_file: Path, measure: Callable[[], tuple[float, float]] = measure_bf16_speed,
                      ) -> tuple[bool, str]:
    """``bf16_by_timing`` measured once per CPU and torch version and cached in ``cache_file`` (a JSON file)."""
    import torch

    key = {"torch": torch.__version__, "cpu": cpu_name(), "machine": platform.machine()}
    try:
        cached = json.loads(cache_file.read_text(encoding="utf-8"))
        if all(cached.get(k) == v for k, v in key.items()):
            return bf16_by_timing(float(cached["fp32_seconds"]), float(cached["bf16_seconds"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    fp32_seconds, bf16_seconds = measure()
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_name(cache_file.name + ".partial")
        partial.write_text(json.dumps({**key, "fp32_seconds": fp32_seconds, "bf16_seconds": bf16_seconds}),
                           encoding="utf-8")
        os.replace(partial, cache_file)
    except OSError:
        pass  # a read-only data dir: measure again next start
    return bf16_by_timing(fp32_seconds, bf16_seconds)


def choose_cpu_precision(requested: str, flags: set[str] | frozenset[str], machine: str,
                         timed: tuple[bool, str] | None = None) -> tuple[str, str, list[str]]:
    """(precision, reason, warnings) for the CPU; pure so it can be tested with fake flag sets.

    ``timed`` is the timing verdict (``timed_native_bf16``), used instead of the flags when the OS gave none.
    """
    native, why = timed if timed is not None and not flags else cpu_native_bf16(flags, machine)
    warnings: list[str] = []
    if requested == "auto":
        if native:
            return "bf16", f"bf16 on the CPU: {why} (about 2x faster than fp32, a third less memory)", warnings
        return "fp32", f"fp32 on the CPU: {why}, so bf16 would be emulated and slower", warnings
    if requested == "fp16":
        warnings.append("fp16 on the CPU is slow (emulated); use auto, bf16 or fp32 there")
        return "fp16", "fp16 as asked (slow on the CPU)", warnings
    if requested == "bf16":
        if not native:
            warnings.append(f"bf16 was asked but {why}: it runs emulated and slower than fp32")
        return "bf16", f"bf16 as asked; {why}", warnings
    return "fp32", "fp32 as asked", warnings


# ------------------------------------------------------------------------------------------- devices
def _cuda_usable() -> tuple[bool, str]:
    import torch

    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            return False, "this PyTorch build has no CUDA support (CPU-only wheel)"
        return False, "no NVIDIA GPU or driver was found"
    return True, ""


def _mps_usable() -> tuple[bool, str]:
    import torch

    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        return False, "Apple Metal (MPS) is only available on Apple silicon Macs"
    return True, ""


def resolve_device(requested: str) -> tuple[str, str, list[str]]:
    """(device, device_name, warnings); asking for a device that is not there falls back to the CPU with a warning."""
    import torch

    warnings: list[str] = []
    cuda_ok, cuda_why = _cuda_usable()
    mps_ok, mps_why = _mps_usable()
    if requested in ("auto", "cuda") and cuda_ok:
        return "cuda", torch.cuda.get_device_name(0), warnings
    if requested in ("auto", "mps") and mps_ok:
        return "mps", "Apple GPU (Metal)", warnings
    if requested == "cuda":
        warnings.append(f"device cuda was asked but {cuda_why}: running on the CPU")
    elif requested == "mps":
        warnings.append(f"device mps was asked but {mps_why}: running on the CPU")
    else:
        # No time per image here: the UI banner gives the one measured on this machine (Services.cpu_banner).
        warnings.append("No usable NVIDIA GPU: running on the CPU")
    return "cpu", cpu_name(), warnings


def _xformers_reason(device: str) -> str:
    """"" if xformers works here, else why not. Imports xformers (about 5 s) only when CUDA could use it."""
    if device != "cuda":
        return "xformers needs an NVIDIA GPU (CUDA); PyTorch SDPA is used instead"
    import importlib.util

    if importlib.util.find_spec("xformers") is None:
        return "xformers is not installed (pip install 'sdlocal[xformers]'); PyTorch SDPA is as fast on recent GPUs"
    try:
        import torch
        import xformers.ops as xops

        q = torch.zeros(1, 8, 1, 64, device="cuda", dtype=torch.float16)
        xops.memory_efficient_attention(q, q, q)
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable here", with its message
        return f"xformers is installed but does not work here: {str(exc).splitlines()[0][:200]}"
    return ""


def resolve_runtime(config: EngineConfig, cpu_flags: set[str] | None = None) -> Runtime:
    """Turn the configured choices into what the loader applies, with the reasons the UI shows."""
    import torch

    device, device_name, warnings = resolve_device(config.device)
    machine = platform.machine()
    flags = read_cpu_flags() if cpu_flags is None else cpu_flags

    precisions: dict[str, str] = {"fp32": ""}
    if device == "cuda":
        precisions["fp16"] = ""
        precisions["bf16"] = "" if torch.cuda.is_bf16_supported() else "this GPU has no bf16 support (before Ampere)"
        if config.precision == "auto":
            precision, reason = "fp16", "fp16 on the GPU: half the memory of fp32 at the same quality"
        elif precisions.get(config.precision):
            precision = "fp16"
            reason = f"fp16 because {config.precision} cannot be used: {precisions[config.precision]}"
            warnings.append(reason)
        else:
            precision, reason = config.precision, f"{config.precision} as asked"
    elif device == "mps":
        precisions["fp16"] = ""
        bf16_ok = hasattr(torch.backends.mps, "is_macos_or_newer") and torch.backends.mps.is_macos_or_newer(14, 0)
        precisions["bf16"] = "" if bf16_ok else "bf16 on Apple GPUs needs macOS 14 or newer"
        if config.precision == "auto":
            precision, reason = "fp16", "fp16 on the Apple GPU: half the memory of fp32"
        elif precisions.get(config.precision):
            precision = "fp16"
            reason = f"fp16 because {config.precision} cannot be used: {precisions[config.precision]}"
            warnings.append(reason)
        else:
            precision, reason = config.precision, f"{config.precision} as asked"
    else:
        precisions["fp16"] = ""
        precisions["bf16"] = ""
        timed = None
        if not flags and config.precision == "auto":  # the OS does not list CPU features: time it once
            timed = timed_native_bf16(config.data_dir / "cache" / "cpu-bf16.json")
        precision, reason, cpu_warnings = choose_cpu_precision(config.precision, flags, machine, timed)
        warnings += cpu_warnings

    # fp16 VAEs overflow (black or NaN images, notably SDXL's); bf16 has fp32's exponent range so it may follow.
    vae_precision = "fp32" if config.no_half_vae else precision

    attentions = {"sdpa": "", "xformers": ""}
    if config.attention == "xformers":
        attentions["xformers"] = _xformers_reason(device)  # the real check: import + one tiny kernel call
    elif device != "cuda":
        attentions["xformers"] = "xformers needs an NVIDIA GPU (CUDA); PyTorch SDPA is used instead"
    else:
        import importlib.util

        # Only the cheap check until it is chosen: importing xformers costs about 5 s.
        if importlib.util.find_spec("xformers") is None:
            attentions["xformers"] = "xformers is not installed (pip install 'sdlocal[xformers]')"
    attention = "sdpa"
    if config.attention == "xformers":
        if attentions["xformers"]:
            warnings.append(f"attention xformers was asked but {attentions['xformers']}")
        else:
            attention = "xformers"

    memory = resolve_memory(config, device, attention)
    warnings += memory.warnings
    caps = Capabilities(device=device, device_name=device_name, precision=precision, precision_reason=reason,
                        precisions=precisions, attention=attention, attentions=attentions, warnings=warnings,
                        memory_mode=memory.mode, memory_reason=memory.reason)
    return Runtime(device=device, precision=precision, vae_precision=vae_precision, attention=attention,
                   attention_slicing=memory.attention_slicing, vae_slicing=memory.vae_slicing,
                   cpu_offload=memory.offload == "model", sequential_offload=memory.offload == "sequential",
                   capabilities=caps, fast=config.fast)


@dataclass
class MemoryPlan:
    """The memory options that apply on this device, with the reason shown to the user."""

    mode: str  # "normal", "medvram" or "lowvram"
    offload: str  # "none", "model" or "sequential"
    attention_slicing: bool
    vae_slicing: bool
    reason: str
    warnings: list[str] = field(default_factory=list)


def resolve_memory(config: EngineConfig, device: str, attention: str = "sdpa") -> MemoryPlan:
    """A1111's memory modes in diffusers' terms, for ``device``; pure so that tests need no GPU.

    medvram: model CPU offload + VAE slicing; lowvram: sequential CPU offload + attention slicing + VAE slicing
    (attention slicing is left out with xformers, which already saves that memory). Offload moves weights between
    RAM and an NVIDIA GPU, so elsewhere it is off, with the reason; the slicing parts work on every device.
    """
    mode = "lowvram" if config.lowvram else "medvram" if config.medvram else "normal"
    offload = "sequential" if mode == "lowvram" else "model" if mode == "medvram" or config.cpu_offload else "none"
    attention_slicing = config.attention_slicing or (mode == "lowvram" and attention != "xformers")
    vae_slicing = config.vae_slicing or mode != "normal"
    slicing = " and ".join(name for name, on in (("attention slicing", attention_slicing),
                                                 ("VAE slicing", vae_slicing)) if on)
    what = {"sequential": "sequential CPU offload", "model": "model CPU offload"}.get(offload, "")
    warnings: list[str] = []
    dropped = ""
    if offload != "none" and device != "cuda":
        flag = f"--{mode}" if mode != "normal" else "--cpu-offload"
        kept = f"; {slicing} {'stay' if ' and ' in slicing else 'stays'} on" if slicing else ""
        warnings.append(f"{flag}: {what} needs an NVIDIA GPU (CUDA), so it is off on {device} (the model already "
                        f"lives in RAM){kept}")
        dropped = f" (no {what}: it needs an NVIDIA GPU)"
        offload = "none"
    applied = ", ".join(part for part in (what if offload != "none" else "", slicing) if part)
    reason = (f"{mode}: " if mode != "normal" else "") + (applied or "everything on the device, no slicing") + dropped
    return MemoryPlan(mode=mode, offload=offload, attention_slicing=attention_slicing, vae_slicing=vae_slicing,
                      reason=reason, warnings=warnings)


def memory_figures(device: str) -> dict[str, str]:
    """RAM of this process and machine, and GPU memory when there is one; strings ready to show."""
    figures: dict[str, str] = {}
    gib = 1024**3
    try:
        import psutil

        vm = psutil.virtual_memory()
        figures["RAM used by sdlocal"] = f"{psutil.Process().memory_info().rss / gib:.2f} GiB"
        figures["RAM available"] = f"{vm.available / gib:.1f} of {vm.total / gib:.1f} GiB"
    except ImportError:
        try:
            pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            figures["RAM available"] = f"{avail / gib:.1f} of {pages / gib:.1f} GiB"
        except (ValueError, OSError, AttributeError):
            pass
    if device == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info()
        figures["GPU memory free"] = f"{free / gib:.1f} of {total / gib:.1f} GiB"
        figures["GPU memory allocated by sdlocal"] = f"{torch.cuda.memory_allocated() / gib:.2f} GiB"
        figures["GPU peak allocated"] = f"{torch.cuda.max_memory_allocated() / gib:.2f} GiB"
    elif device == "mps":
        import torch

        figures["GPU memory allocated by sdlocal"] = f"{torch.mps.current_allocated_memory() / gib:.2f} GiB"
    return figures
