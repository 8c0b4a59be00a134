"""Will the model fit? Checked before loading, so a model too big for the machine is a message, not the OOM killer.

Linux kills a process that runs out of RAM without a word (the user sees the server vanish); CUDA raises deep
inside a load. Comparing the model's size at the target precision with what is free first turns both into an
EngineError with the figures and what to change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sdlocal.engine.request import EngineError

GIB = 2**30


def available_ram() -> int | None:
    """Bytes of RAM the system can give without swapping: MemAvailable on Linux, psutil elsewhere, None unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil missing or unsupported here: no check rather than a false refusal
        return None


def free_gpu_memory(device: str) -> int | None:
    """Free bytes on a CUDA device (``torch.cuda.mem_get_info``), None for other devices or when unknown."""
    if not device.startswith("cuda"):
        return None
    try:
        import torch

        index = torch.device(device).index
        return int(torch.cuda.mem_get_info(torch.cuda.current_device() if index is None else index)[0])
    except Exception:  # noqa: BLE001 - no CUDA after all, a driver error: the load reports the real problem
        return None


@dataclass(frozen=True)
class Needs:
    """Bytes a load needs in RAM and on the GPU (0 when it needs nothing there)."""

    ram: int
    gpu: int = 0


def _gib(value: int) -> str:
    return f"{value / GIB:.1f} GiB" if value >= GIB // 10 else f"{value / 2**20:.0f} MiB"


def check_fits(name: str, needs: Needs, precision: str, device: str,
               ram: Callable[[], int | None] | None = None, gpu: Callable[[str], int | None] | None = None) -> None:
    """Raise an EngineError naming the figures and the fixes when ``needs`` exceeds what is free; else nothing.

    ``ram`` and ``gpu`` (default ``available_ram`` and ``free_gpu_memory``) are injectable so tests can fake a
    small machine.
    """
    ram = ram or available_ram
    gpu = gpu or free_gpu_memory
    smaller = "bf16 or fp16" if precision == "fp32" else None
    if needs.gpu:
        free = gpu(device)
        if free is not None and needs.gpu > free:
            fixes = [f"a smaller precision ({smaller}, half the memory)" if smaller else None,
                     "--lowvram or --medvram (the model stays in RAM and parts move to the GPU while they run)",
                     "--max-loaded-models 1, or close other programs using the GPU"]
            raise EngineError(f"{name}: needs {_gib(needs.gpu)} of GPU memory in {precision}, "
                              f"{_gib(free)} is free on {device}.", "Use " + "; ".join(f for f in fixes if f) + ".")
    free_ram = ram()
    if needs.ram and free_ram is not None and needs.ram > free_ram:
        fixes = [f"a smaller precision ({smaller}, half the memory)" if smaller else None,
                 "--max-loaded-models 1 (other loaded models are unloaded first)",
                 "close other programs or models", "a machine with more RAM"]
        raise EngineError(f"{name}: needs {_gib(needs.ram)} of RAM in {precision}, {_gib(free_ram)} is available.",
                          "Use " + "; ".join(f for f in fixes if f) + ".")
