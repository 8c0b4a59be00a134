"""Engine test fixtures: tiny random models in every format, built once per session in temporary folders.

Nothing is downloaded: the models come from ``sdlocal.engine.synthetic`` with the bundled tokenizers, and the
``no_network`` fixture fails any connection that leaves the machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read once when huggingface_hub is imported: before diffusers

import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: builds or loads a real-size model (deselect with -m 'not slow')")


# ------------------------------------------------------------------------------------------- no network
@dataclass
class NetworkLog:
    attempts: list[str] = field(default_factory=list)


_LOOPBACK = ("127.", "::1", "localhost", "0.0.0.0")


def _is_loopback(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = str(address[0])
    else:
        return True  # AF_UNIX paths
    return host.startswith(_LOOPBACK) or host == "::1"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch):
    """Fail (and record) every non-loopback connection or DNS lookup while the test runs."""
    log = NetworkLog()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self, address):  # type: ignore[no-untyped-def]
        if not _is_loopback(address):
            log.attempts.append(f"connect {address}")
            raise OSError(f"network access attempted in a test: {address}")
        return real_connect(self, address)

    def connect_ex(self, address):  # type: ignore[no-untyped-def]
        if not _is_loopback(address):
            log.attempts.append(f"connect_ex {address}")
            raise OSError(f"network access attempted in a test: {address}")
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host is not None and not _is_loopback((str(host),)):
            log.attempts.append(f"getaddrinfo {host}")
            raise OSError(f"network lookup attempted in a test: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield log
    assert not log.attempts, f"network attempts: {log.attempts}"


# ------------------------------------------------------------------------------------------- tiny models
TINY_FORMATS = {
    "tiny-sd1-diffusers": ("sd1", "diffusers"),
    "tiny-sd1-safetensors.safetensors": ("sd1", "safetensors"),
    "tiny-sd1-ckpt.ckpt": ("sd1", "ckpt"),
    "tiny-sdxl-diffusers": ("sdxl", "diffusers"),
    "tiny-sdxl-safetensors.safetensors": ("sdxl", "safetensors"),
}


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with a tiny SD1-like and SDXL-like model in each format, plus an inpainting one."""
    from sdlocal.engine.synthetic import save_tiny_model

    root = tmp_path_factory.mktemp("models") / "Stable-diffusion"
    root.mkdir()
    for name, (family, fmt) in TINY_FORMATS.items():
        save_tiny_model(root / name, family=family, fmt=fmt)
    save_tiny_model(root / "tiny-sd1-inpainting", family="sd1", fmt="diffusers", inpainting=True)
    return root


def model_name(filename: str) -> str:
    """Discovery's name for a file in the tiny folder: the relative path without its extension."""
    for suffix in (".safetensors", ".ckpt"):
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def make_engine(models_dir: Path, data_dir: Path, **options: object):
    from sdlocal.engine import Engine, EngineConfig

    return Engine(EngineConfig(data_dir=data_dir, models_dirs=[models_dir], **options))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def engine(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """An fp32 CPU engine over the tiny models (fp32 so comparisons are exact), keeping all of them loaded."""
    return make_engine(tiny_models_dir, tmp_path_factory.mktemp("data"), device="cpu", precision="fp32",
                       max_loaded_models=8)


@pytest.fixture
def request_for():
    """Build a small valid request (64x64, 2 steps) for a tiny model, with overrides."""
    from sdlocal.engine import GenerationRequest

    def build(model: str = "tiny-sd1-diffusers", **overrides: object) -> GenerationRequest:
        values: dict[str, object] = dict(prompt="a red cube on a table", negative_prompt="blurry", model=model,
                                         sampler="Euler", steps=2, width=64, height=64, seed=1234, cfg_scale=7.0)
        values.update(overrides)
        return GenerationRequest.build(**values)

    return build


def pixels(image) -> "object":  # noqa: UP037 - numpy is imported lazily
    import numpy as np

    return np.asarray(image, dtype=np.int16)
