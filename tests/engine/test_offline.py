"""Discovery, loading and generating touch no network at all, for every format."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine.conftest import TINY_FORMATS, make_engine, model_name


@pytest.mark.parametrize("filename", list(TINY_FORMATS))
def test_discover_load_generate_offline(no_network, tiny_models_dir: Path, tmp_path: Path, request_for,
                                        filename: str) -> None:
    engine = make_engine(tiny_models_dir, tmp_path, device="cpu")
    names = [entry.name for entry in engine.models(refresh=True)]
    assert model_name(filename) in names
    engine.load(model_name(filename))
    result = engine.generate(request_for(model=model_name(filename)))
    assert result.images
    assert no_network.attempts == []


def test_the_guard_really_catches_connections(no_network) -> None:
    import socket

    with pytest.raises(OSError, match="network"):
        socket.create_connection(("example.com", 443), timeout=1)
    assert no_network.attempts
    no_network.attempts.clear()  # this test made the attempt on purpose
