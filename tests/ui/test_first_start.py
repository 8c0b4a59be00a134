"""A first start on an empty data dir with one SD 1.5 file: what the page opens with, through gradio_client.

A server of its own (not the shared one of test_app.py), so nothing was saved before these tests; each test
clears the saved UI state again when it is done.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gradio_client import Client

from sdlocal.ui.generate_layout import NO_PRESET
from tests.ui.conftest import RunningApp, start_app
from tests.ui.test_app import KEEP, call, form, form_of, value_of


@pytest.fixture(scope="module")
def fresh_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    yield from start_app(tmp_path_factory.mktemp("sdlocal-first-start"), bad_files=False)


@pytest.fixture()
def client(fresh_app: RunningApp) -> Iterator[Client]:
    """A new page session on a data dir with no saved UI state."""
    fresh_app.services.settings.save_ui_state({})
    yield Client(fresh_app.url, verbose=False)
    fresh_app.services.settings.save_ui_state({})


def test_first_start_applies_the_models_family_preset(client: Client, fresh_app: RunningApp) -> None:
    assert fresh_app.services.settings.load_ui_state() == {}
    opened = call(client, "/page_state")
    assert value_of(opened["Model"]) == fresh_app.model_name
    assert value_of(opened["Preset"]) == "SD 1.5"
    sd15 = fresh_app.services.presets.get("SD 1.5")
    shown = form_of(opened)
    assert {name: shown[name] for name in sd15.values()} == sd15.values()
    assert (shown["sampler"], shown["schedule"], shown["steps"]) == ("DPM++ 2M", "Karras", 25)
    assert shown["negative_prompt"] == sd15.negative_prompt != ""
    assert "512×512" in [value for _label, value in opened["Sizes for this model"]["choices"]]
    # The preset came with the model, not from the user: picking a model still applies its family's preset.
    picked = call(client, "/select_model", fresh_app.model_name, *form(steps=9))
    assert value_of(picked["Preset"]) == "SD 1.5" and form_of(picked)["steps"] == 25


def test_a_saved_form_wins_over_the_family_preset(client: Client, fresh_app: RunningApp) -> None:
    generated = call(client, "/generate", fresh_app.model_name, *form(steps=2, batch_size=1, seed=5))
    assert generated["Error"] == ""
    reopened = call(Client(fresh_app.url, verbose=False), "/page_state")
    assert value_of(reopened["Preset"]) == NO_PRESET
    shown = form_of(reopened)
    assert (shown["sampler"], shown["steps"], shown["negative_prompt"]) == ("Euler", 2, "blurry")
    assert reopened["Preset"] != KEEP


def test_token_merging_flag_is_the_forms_first_value(client: Client, fresh_app: RunningApp) -> None:
    settings = fresh_app.services.settings
    settings.token_merging_ratio = 0.3  # as `--token-merging-ratio 0.3` sets it
    try:
        opened = form_of(call(client, "/page_state"))
        assert opened["token_merging_ratio"] == 0.3 and opened["steps"] == 25  # over the SD 1.5 preset's 0
        # once a form is saved, it keeps its own value
        call(client, "/generate", fresh_app.model_name, *form(steps=2, batch_size=1, token_merging_ratio=0))
        assert form_of(call(Client(fresh_app.url, verbose=False), "/page_state"))["token_merging_ratio"] == 0
    finally:
        settings.token_merging_ratio = 0.0


def test_reuse_looks_models_up_off_the_event_loop(client: Client, fresh_app: RunningApp) -> None:
    """A "Model hash" may make find_model hash every model file (gigabytes): never on the server's event loop."""
    import asyncio
    import threading

    engine = fresh_app.services.engine
    calls: list[tuple[str, bool]] = []
    real = engine.find_model

    def recording(name: str):
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        calls.append((threading.current_thread().name, on_loop))
        return real(name)

    text = "a cat\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 64x64, Model hash: 0123abcd45, Model: gone"
    engine.find_model = recording  # type: ignore[method-assign]
    try:
        for endpoint in ("/send_to_generate", "/gallery_reuse"):
            assert form_of(call(client, endpoint, text))["seed"] == 42
    finally:
        del engine.find_model
    assert len(calls) >= 4 and not any(on_loop for _thread, on_loop in calls), calls
