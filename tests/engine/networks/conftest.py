"""Fixtures for the embedding tests: an engine config over temporary folders (files are written by ``files``)."""

from __future__ import annotations

from pathlib import Path

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
