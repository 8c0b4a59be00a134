"""Drive the real app with gradio_client: generate, files on disk, PNG Info round trip, presets, errors, interrupt."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from sdlocal.outputs import read_image_parameters
from sdlocal.ui.common import FORM_FIELDS
from sdlocal.ui.generate import model_choices
from tests.ui.conftest import RunningApp


@pytest.fixture(scope="module")
def client(running_app: RunningApp) -> Client:
    return Client(running_app.url, verbose=False)


def form(**overrides) -> list:
    values = {"prompt": "a tiny red fox", "negative_prompt": "blurry", "sampler": "Euler", "schedule": "Automatic",
              "steps": 4, "cfg_scale": 7, "width": 64, "height": 64, "seed": 1234, "batch_count": 1,
              "batch_size": 2, "clip_skip": 1, "token_merging_ratio": 0, "vae_tiling": False}
    values.update(overrides)
    return [values[name] for name in FORM_FIELDS]


def saved_images(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "outputs" / "txt2img").rglob("*.png"))


def value_of(output):
    """A component's value from a client result: Gradio sends updates (choices and value) as a dict."""
    return output["value"] if isinstance(output, dict) and "value" in output else output


def test_page_state_lists_models_and_reports_the_bad_preset(client: Client, running_app: RunningApp) -> None:
    state = client.predict(api_name="/page_state")
    model_value, problems = state[0], state[3]
    assert value_of(model_value) == running_app.model_name
    assert [value for _label, value in model_value["choices"]][0] == running_app.model_name
    assert "broken.json" in problems and "width" in problems and "513" in problems
    labels = [label for label, _value in model_choices(running_app.services.engine.models())]
    assert any(label.startswith("⊘ not-a-model") for label in labels)  # the bad file is listed, marked
    refreshed = client.predict(running_app.model_name, api_name="/refresh_models")
    assert value_of(refreshed[0]) == running_app.model_name


def test_generate_saves_images_with_parameters(client: Client, running_app: RunningApp) -> None:
    before = set(saved_images(running_app.data_dir))
    progress, error, _preview, gallery, rows, _selected, info = client.predict(
        running_app.model_name, *form(seed=1234), api_name="/generate"
    )
    assert error == "", error
    assert "Done: 2 images" in progress
    assert len(gallery) == 2
    new = sorted(set(saved_images(running_app.data_dir)) - before)
    assert [path.name.split("-", 1)[1] for path in new] == ["1234.png", "1235.png"]
    for path, seed in zip(new, (1234, 1235), strict=True):
        text = read_image_parameters(path)
        assert text.startswith("a tiny red fox\nNegative prompt: blurry\n")
        assert f"Seed: {seed}" in text and "Steps: 4" in text and "Size: 64x64" in text and "Sampler: Euler" in text
    assert info.startswith("a tiny red fox") and "Seed: 1234" in info
    # the last model and form values persist for the next start
    saved = running_app.services.settings.load_ui_state()
    assert saved["model"] == running_app.model_name and saved["form"]["prompt"] == "a tiny red fox"
    assert saved["last_seed"] == 1234


def test_png_info_round_trips_into_the_form(client: Client, running_app: RunningApp) -> None:
    client.predict(running_app.model_name, *form(seed=777, steps=3, width=72, height=64, batch_size=1,
                                                 prompt="round trip", cfg_scale=5.5), api_name="/generate")
    path = next(p for p in saved_images(running_app.data_dir) if p.name.endswith("-777.png"))
    text, message, _table = client.predict(handle_file(str(path)), api_name="/png_info")
    assert message == ""
    assert text == read_image_parameters(path)
    _tabs, model, *values = client.predict(text, api_name="/send_to_generate")
    filled = dict(zip(FORM_FIELDS, values, strict=True))
    assert model == running_app.model_name
    assert filled["prompt"] == "round trip" and filled["negative_prompt"] == "blurry"
    assert filled["seed"] == 777 and filled["steps"] == 3 and filled["cfg_scale"] == 5.5
    assert (filled["width"], filled["height"]) == (72, 64) and filled["sampler"] == "Euler"


def test_png_info_without_parameters_is_a_message(client: Client, tmp_path: Path) -> None:
    from PIL import Image

    plain = tmp_path / "plain.png"
    Image.new("RGB", (16, 16)).save(plain)
    text, message, _ = client.predict(handle_file(str(plain)), api_name="/png_info")
    assert text == "" and "no generation parameters" in message
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"definitely not a png")
    text, message, _ = client.predict(handle_file(str(junk)), api_name="/png_info")
    assert text == "" and "not an image" in message


def test_presets_apply_and_user_presets_save(client: Client, running_app: RunningApp) -> None:
    chose, *values = client.predict("SD 1.5", *form(), api_name="/apply_preset")
    applied = dict(zip(FORM_FIELDS, values, strict=True))
    assert chose is True
    assert (applied["width"], applied["height"], applied["steps"]) == (512, 512, 25)
    assert applied["sampler"] == "DPM++ 2M" and applied["schedule"] == "Karras"
    assert applied["prompt"] == "a tiny red fox"  # a preset never touches the prompt
    # picking a model applies its family's preset unless the user chose one
    _model, _sizes, preset, family, *values = client.predict(running_app.model_name, False, *form(),
                                                             api_name="/select_model")
    assert preset == "SD 1.5" and family == "sd1" and values[FORM_FIELDS.index("steps")] == 25
    _model, _sizes, preset, _family, *values = client.predict(running_app.model_name, True, *form(steps=9),
                                                              api_name="/select_model")
    assert values[FORM_FIELDS.index("steps")] == 9
    # saving the current settings as a preset, and refusing a taken name
    _preset, status = client.predict("Tiny test preset", "sd1", *form(steps=6), api_name="/save_preset")
    assert "Saved" in status
    saved = running_app.services.settings.presets_dir / "Tiny-test-preset.json"
    assert saved.is_file() and '"steps": 6' in saved.read_text()
    _preset, status = client.predict("SD 1.5", "sd1", *form(), api_name="/save_preset")
    assert "already exists" in status


def test_bad_values_are_shown_as_messages_naming_the_field(client: Client, running_app: RunningApp) -> None:
    progress, error, *_ = client.predict(running_app.model_name, *form(width=100), api_name="/generate")
    assert "Width" in error and "100" in error and "multiple of 8" in error


def test_interrupt_keeps_finished_images(client: Client, running_app: RunningApp) -> None:
    job = client.submit(running_app.model_name, *form(steps=150, batch_count=6, batch_size=1, seed=4242),
                        api_name="/generate")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = running_app.services.queue.progress()
        if state is not None and (getattr(state, "step", 0) or 0) > 0:
            break
        time.sleep(0.05)
    client.predict(api_name="/interrupt")
    progress, error, _preview, gallery, *_ = job.result(timeout=300)
    assert error == ""
    assert "Interrupted" in progress
    assert len(gallery) < 6


def test_gallery_lists_newest_first_and_reuses_parameters(client: Client, running_app: RunningApp) -> None:
    client.predict(running_app.model_name, *form(seed=9090, batch_size=1, prompt="newest"), api_name="/generate")
    _page, thumbs, rels, folder, label = client.predict(0, api_name="/gallery_page")
    assert rels[0].endswith("-9090.png") and str(running_app.data_dir / "outputs") in folder
    assert len(thumbs) == len(rels) and label.startswith("Page 1 of")
    chosen, _picked, params, _path, _confirm = client.predict(rels[0], api_name="/gallery_select")
    assert chosen == rels[0] and params.startswith("newest")
    _tabs, model, *values = client.predict(params, api_name="/gallery_reuse")
    assert values[FORM_FIELDS.index("seed")] == 9090 and model == running_app.model_name
    # delete (after the confirmation in the page) removes the file
    target = running_app.data_dir / "outputs" / rels[0]
    client.predict(rels[0], 0, api_name="/gallery_delete")
    assert not target.exists()
