"""Container and Cog tests run on the engine tests' tiny models (the same session fixtures, imported)."""

from __future__ import annotations

from tests.engine.conftest import model_name, no_network, tiny_models_dir  # noqa: F401
