"""The doctor inside a container: is the GPU passed in, and are the volumes writable by the container's user?

The failure people meet with Docker is an image with CUDA torch started without the GPU flags: nothing errors,
``torch.cuda.is_available()`` is False, and images take minutes on the CPU. Outside a container "no GPU" means
"install a driver"; inside one it means the run command lacks ``--gpus`` (or compose lacks ``deploy``), so the
finding says the line to add. The probes are plain functions so tests can play any container.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sdlocal.doctor import Finding

CHECK = "Container GPU"
COMPOSE_GPU = ("deploy: resources: reservations: devices: [{driver: nvidia, count: 1, capabilities: [gpu]}]")
GPU_FIX = (f"Pass the GPU in: `docker run --gpus all ...`, or in compose.yaml under the service add {COMPOSE_GPU}. "
           "The host needs an NVIDIA driver >= 580 and the NVIDIA Container Toolkit. Without a GPU, use the CPU "
           "image instead: `docker compose up sdlocal-cpu`.")


def container_runtime(root: Path = Path("/"), env: Mapping[str, str] | None = None) -> str | None:
    """The container engine this process runs under ("docker", "podman", ...), or None on a plain machine."""
    env = os.environ if env is None else env
    if (root / ".dockerenv").exists():
        return "docker"
    if (root / "run" / ".containerenv").exists():
        return "podman"
    return env.get("container") or None  # set by podman, systemd-nspawn and LXC


def nvidia_device_nodes(pattern: str = "/dev/nvidia[0-9]*") -> list[str]:
    """The GPU device files the container runtime passed in (``/dev/nvidia0``, ...)."""
    return sorted(glob.glob(pattern))


def check_container_gpu(runtime: str | None, devices: list[str], torch_cuda: str | None,
                        require_gpu: bool) -> Finding | None:
    """None outside a container; else whether a CUDA image has its GPU (``torch_cuda``: the build's CUDA or None)."""
    from sdlocal.doctor import FAILURE, OK, WARNING, Finding

    if runtime is None:
        return None
    if torch_cuda is None:
        return Finding(CHECK, OK, f"in a {runtime} container with the CPU build of torch (an image built with "
                                  "TORCH=cpu): it runs on the CPU")
    if devices:
        return Finding(CHECK, OK, f"in a {runtime} container, GPU devices passed in: {', '.join(devices)}")
    return Finding(CHECK, FAILURE if require_gpu else WARNING,
                   f"in a {runtime} container without a GPU reservation (no /dev/nvidia* devices): the CUDA image "
                   "RUNS ON THE CPU", GPU_FIX)


def data_dir_fix(path: Path, runtime: str | None) -> str:
    """How to make the data folder writable: a volume in a container, a flag elsewhere."""
    if runtime is None or not hasattr(os, "getuid"):
        return "Pass --data-dir (or set SDLOCAL_DATA_DIR) to a folder you can write to."
    uid, gid = os.getuid(), os.getgid()
    return (f"{path} is a volume: the container runs as uid {uid}, so a host folder mounted there must be writable "
            f"by it (`sudo chown -R {uid}:{gid} <host folder>`), or use a named volume.")
