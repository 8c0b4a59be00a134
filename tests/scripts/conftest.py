"""Script tests run on the engine tests' tiny models (the same session fixtures, imported)."""

from __future__ import annotations

from tests.engine.conftest import engine, make_engine, model_name, pixels, request_for, tiny_models_dir  # noqa: F401
