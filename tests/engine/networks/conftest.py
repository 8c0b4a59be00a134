"""Fixtures for the embedding tests: an engine config over temporary folders (files are written by ``files``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sdlocal.engine.config import EngineConfig


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """sdlocal's data dir, with its (empty) ``embeddings`` folder."""
    folder = tmp_path / "data"
    (folder / "embeddings").mkdir(parents=True)
    return folder


@pytest.fixture
def config(data_dir: Path) -> EngineConfig:
    return EngineConfig(data_dir=data_dir)


@pytest.fixture
def own(data_dir: Path) -> Path:
    """``<data dir>/embeddings``."""
    return data_dir / "embeddings"


@pytest.fixture(scope="module")
def sd1() -> Any:
    """A tiny SD 1.x pipeline (the tiny models' module names and shapes), to write and read LoRAs for."""
    from sdlocal.engine.synthetic import build_tiny_pipeline

    return build_tiny_pipeline("sd1")


@pytest.fixture(scope="module")
def sd2() -> Any:
    from sdlocal.engine.synthetic import build_tiny_pipeline

    return build_tiny_pipeline("sd2")


@pytest.fixture(scope="module")
def sdxl() -> Any:
    from sdlocal.engine.synthetic import build_tiny_pipeline

    return build_tiny_pipeline("sdxl")
