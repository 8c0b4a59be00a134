"""The ingress's parts that need no Ray: the discovery-only engine and worker errors crossing as values."""

from __future__ import annotations

import pickle

import pytest

from sdlocal.cluster.services import DiscoveryEngine, Failure
from sdlocal.engine.config import EngineConfig
from sdlocal.engine.request import EngineError, ModelNotFoundError, RequestError


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> DiscoveryEngine:
    from sdlocal.engine.synthetic import save_tiny_model

    root = tmp_path_factory.mktemp("discovery")
    for name in ("tiny-a", "tiny-b"):
        save_tiny_model(root / "models" / "Stable-diffusion" / name, family="sd1", fmt="diffusers")
    return DiscoveryEngine(EngineConfig(data_dir=root / "data", models_dirs=[root / "models"]))


def test_the_default_is_the_first_model_and_load_only_changes_it(engine: DiscoveryEngine) -> None:
    assert engine.current_model is not None and engine.current_model.name == "tiny-a"
    try:
        assert engine.load("tiny-b").name == "tiny-b"
        assert engine.current_model.name == "tiny-b"
        assert engine._cache is None  # no pipeline cache was even made: nothing loaded on the ingress
    finally:
        engine.load("tiny-a")
    with pytest.raises(ModelNotFoundError):
        engine.load("nowhere")
    with pytest.raises(RuntimeError, match="does not generate"):
        engine.generate(None)


def test_a_configured_default_that_is_gone_means_no_default(engine: DiscoveryEngine) -> None:
    gone = DiscoveryEngine(engine.config, default_model="deleted-model")
    assert gone.current_model is None


@pytest.mark.parametrize("error", [RequestError("steps", 0, "must be 1 or more"),
                                   ModelNotFoundError("tiny-c", ["tiny-a"]),
                                   EngineError("out of GPU memory", "use a smaller image")])
def test_worker_errors_cross_as_values_and_keep_their_type(error: Exception) -> None:
    again = pickle.loads(pickle.dumps(Failure.of(error))).to_exception()
    assert type(again) is type(error) and str(again) == str(error)


def test_an_unexpected_worker_error_is_named() -> None:
    again = Failure.of(ZeroDivisionError("division by zero")).to_exception()
    assert isinstance(again, RuntimeError) and "ZeroDivisionError: division by zero" in str(again)
