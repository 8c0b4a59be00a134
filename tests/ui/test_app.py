"""Drive the real app with gradio_client: generate, files on disk, PNG Info round trip, presets, errors, interrupt."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client, handle_file

from sdlocal.outputs import read_image_parameters
from sdlocal.ui.common import FORM_FIELDS, LABELS
from tests.ui.conftest import RunningApp


@pytest.fixture(scope="module")
def client(running_app: RunningApp) -> Client:
    return Client(running_app.url, verbose=False)


def form(**overrides) -> list:
    values = {"prompt": "a tiny red fox", "negative_prompt": "blurry", "sampler": "Euler", "schedule": "Automatic",
              "steps": 4, "cfg_scale": 7, "width": 64, "height": 64, "seed": 1234, "batch_count": 1,
              "batch_size": 2, "clip_skip": 1, "token_merging_ratio": 0, "vae_tiling": False, "emphasis": "Original"}
    values.update(overrides)
    return [values[name] for name in FORM_FIELDS]


def saved_images(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "outputs" / "txt2img").rglob("*.png"))


KEEP = {"__type__": "update"}  # an update without a value: the page keeps what the control holds


def value_of(output: Any) -> Any:
    """A component's value from a client result: Gradio sends updates (choices and value) as a dict."""
    return output["value"] if isinstance(output, dict) and "value" in output else output


def call(client: Client, api_name: str, *args: Any) -> dict[str, Any]:
    """The endpoint's results by the name view_api gives each output: its component's label.

    Gradio leaves gr.State and layout outputs (Tabs, Rows) out of what a client receives, so positions shift
    whenever such an output is added; names do not. Each name must be unique within the endpoint.
    """
    return named(output_names(client, api_name), client.predict(*args, api_name=api_name))


def output_names(client: Client, api_name: str) -> list[str]:
    returns = client.view_api(return_format="dict", print_info=False)["named_endpoints"][api_name]["returns"]
    names = [item["label"] for item in returns]
    assert len(set(names)) == len(names), f"{api_name} returns two values under one name: {names}"
    return names


def named(names: list[str], result: Any) -> dict[str, Any]:
    values = result if len(names) > 1 else (result,)
    assert len(values) == len(names), (names, values)
    return dict(zip(names, values, strict=True))


def form_of(results: dict[str, Any]) -> dict[str, Any]:
    """The Generate form as an endpoint filled it (each control under its label), by FORM_FIELDS name."""
    return {name: value_of(results[LABELS[name]]) for name in FORM_FIELDS}


def raw_form(results: dict[str, Any]) -> dict[str, Any]:
    return {name: results[LABELS[name]] for name in FORM_FIELDS}


def test_page_state_lists_models_and_reports_the_bad_preset(client: Client, running_app: RunningApp) -> None:
    state = call(client, "/page_state")
    model = state["Model"]
    assert value_of(model) == running_app.model_name
    assert [value for _label, value in model["choices"]][0] == running_app.model_name
    problems = state["Preset problems"]
    assert problems["visible"] is True
    assert "broken.json" in problems["value"] and "width" in problems["value"] and "513" in problems["value"]
    labels = [label for label, _value in model["choices"]]
    assert any(label.startswith("⊘ not-a-model") for label in labels)  # the bad file is listed, marked
    refreshed = call(client, "/refresh_models", running_app.model_name)
    assert value_of(refreshed["Model"]) == running_app.model_name


def test_generate_saves_images_with_parameters(client: Client, running_app: RunningApp) -> None:
    before = set(saved_images(running_app.data_dir))
    out = call(client, "/generate", running_app.model_name, *form(seed=1234))
    assert out["Error"] == "", out["Error"]
    assert "Done: 2 images" in out["Progress"]
    assert len(out["Images"]) == 2
    new = sorted(set(saved_images(running_app.data_dir)) - before)
    assert [path.name.split("-", 1)[1] for path in new] == ["1234.png", "1235.png"]
    for path, seed in zip(new, (1234, 1235), strict=True):
        text = read_image_parameters(path)
        assert text.startswith("a tiny red fox\nNegative prompt: blurry\n")
        assert f"Seed: {seed}" in text and "Steps: 4" in text and "Size: 64x64" in text and "Sampler: Euler" in text
    info = out["Parameters"]
    assert info.startswith("a tiny red fox") and "Seed: 1234" in info
    # the last model and form values persist for the next start
    saved = running_app.services.settings.load_ui_state()
    assert saved["model"] == running_app.model_name and saved["form"]["prompt"] == "a tiny red fox"
    assert saved["last_seed"] == 1234


def test_png_info_round_trips_into_the_form(client: Client, running_app: RunningApp) -> None:
    client.predict(running_app.model_name, *form(seed=777, steps=3, width=72, height=64, batch_size=1,
                                                 prompt="round trip", cfg_scale=5.5), api_name="/generate")
    path = next(p for p in saved_images(running_app.data_dir) if p.name.endswith("-777.png"))
    info = call(client, "/png_info", handle_file(str(path)))
    assert info["Message"] == ""
    assert info["Parameters"] == read_image_parameters(path)
    assert "<th>Seed</th><td>777</td>" in info["Parameters table"]
    sent = call(client, "/send_to_generate", info["Parameters"])
    filled = form_of(sent)
    assert value_of(sent["Model"]) == running_app.model_name
    assert filled["prompt"] == "round trip" and filled["negative_prompt"] == "blurry"
    assert filled["seed"] == 777 and filled["steps"] == 3 and filled["cfg_scale"] == 5.5
    assert (filled["width"], filled["height"]) == (72, 64) and filled["sampler"] == "Euler"


def img2img_settings(**overrides) -> list:
    from sdlocal.ui.img2img_request import SOURCE_DEFAULTS, SOURCE_FIELDS

    values = {**SOURCE_DEFAULTS, **overrides}
    return [values[name] for name in SOURCE_FIELDS]


def test_img2img_and_inpaint_upload_through_the_page_save_under_img2img(client: Client, running_app: RunningApp,
                                                                       tmp_path: Path) -> None:
    from PIL import Image

    photo, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    Image.new("RGB", (72, 64), (200, 60, 20)).save(photo)
    painted = Image.new("L", (72, 64), 0)
    painted.paste(255, (8, 8, 40, 40))
    painted.save(mask)
    no_editor = None
    out = call(client, "/img2img", running_app.model_name, "img2img", handle_file(str(photo)), no_editor, no_editor,
               None, None, *form(seed=5151, batch_size=1, width=72, height=64),
               *img2img_settings(denoising_strength=0.5))
    assert out["Error"] == "", out["Error"]
    assert "Done: 1 image" in out["Progress"] and "Denoising strength: 0.5" in out["Parameters"]
    out = call(client, "/img2img", running_app.model_name, "inpaint upload", None, no_editor, no_editor,
               handle_file(str(photo)), handle_file(str(mask)), *form(seed=5252, batch_size=1, width=72, height=64),
               *img2img_settings(mask_blur=2))
    assert out["Error"] == "", out["Error"]
    assert "Mask blur: 2" in out["Parameters"] and "Masked content: original" in out["Parameters"]
    saved = sorted((running_app.data_dir / "outputs" / "img2img").rglob("*.png"))
    assert [path.name.split("-", 1)[1] for path in saved] == ["5151.png", "5252.png"]
    assert all(path.parent.parent.name == "img2img" for path in saved)
    # a missing image is a message naming what to do, not an error page
    out = call(client, "/img2img", running_app.model_name, "inpaint upload", handle_file(str(photo)), no_editor,
               no_editor, handle_file(str(photo)), None, *form(), *img2img_settings())
    assert "both files" in out["Error"]


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


def test_presets_apply_and_user_presets_save(running_app: RunningApp) -> None:
    # A client of its own: whether the user chose a preset is per-session state (gr.State) on the server.
    client = Client(running_app.url, verbose=False)
    # picking a model applies its family's preset while the user has not chosen one
    picked = call(client, "/select_model", running_app.model_name, *form(steps=9))
    assert value_of(picked["Preset"]) == "SD 1.5" and form_of(picked)["steps"] == 25
    assert "512×512" in [value for _label, value in picked["Sizes for this model"]["choices"]]
    # choosing a preset applies it to the form, never touching the prompt
    applied = form_of(call(client, "/apply_preset", "SD 1.5", *form()))
    assert (applied["width"], applied["height"], applied["steps"]) == (512, 512, 25)
    assert applied["sampler"] == "DPM++ 2M" and applied["schedule"] == "Karras"
    assert applied["prompt"] == "a tiny red fox"
    # once the user chose a preset, picking a model leaves the preset and the form alone
    picked = call(client, "/select_model", running_app.model_name, *form(steps=9))
    assert picked["Preset"] == KEEP
    assert all(value == KEEP for value in raw_form(picked).values())
    # saving the current settings as a preset (for the model's family), and refusing a taken name
    saved = call(client, "/save_preset", "Tiny test preset", *form(steps=6))
    assert "Saved" in saved["Preset status"] and value_of(saved["Preset"]) == "Tiny test preset"
    assert "Tiny test preset" in [value for _label, value in saved["Preset"]["choices"]]
    path = running_app.services.settings.presets_dir / "Tiny-test-preset.json"
    stored = json.loads(path.read_text())
    assert stored["steps"] == 6 and stored["family"] == "sd1"
    refused = call(client, "/save_preset", "SD 1.5", *form())
    assert "already exists" in refused["Preset status"] and refused["Preset"] == KEEP


def test_bad_values_are_shown_as_messages_naming_the_field(client: Client, running_app: RunningApp) -> None:
    before = set(saved_images(running_app.data_dir))
    out = call(client, "/generate", running_app.model_name, *form(width=100))
    assert "Width" in out["Error"] and "100" in out["Error"] and "multiple of 8" in out["Error"]
    assert 'role="alert"' in out["Error"] and out["Progress"] == ""
    out = call(client, "/generate", running_app.model_name, *form(seed=-5))
    assert LABELS["seed"] in out["Error"] and "-5" in out["Error"]
    out = call(client, "/generate", "no-such-model", *form())
    assert "no-such-model" in out["Error"] and running_app.model_name in out["Error"]  # names the known models
    assert set(saved_images(running_app.data_dir)) == before


def test_interrupt_keeps_finished_images(client: Client, running_app: RunningApp) -> None:
    names = output_names(client, "/generate")
    job = client.submit(running_app.model_name, *form(steps=50, batch_count=6, batch_size=1, seed=4242),
                        api_name="/generate")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = running_app.services.queue.progress()
        if state is not None and (getattr(state, "batch_index", 0) or 0) >= 1:  # the first image is done
            break
        time.sleep(0.05)
    client.predict(api_name="/interrupt")
    out = named(names, job.result(timeout=300))
    assert out["Error"] == ""
    assert "Interrupted" in out["Progress"]
    assert 1 <= len(out["Images"]) < 6
    kept = [path for path in saved_images(running_app.data_dir) if int(path.stem.split("-", 1)[1]) in range(4242, 4248)]
    assert len(kept) == len(out["Images"])  # the finished images are saved, with the seeds they had


def test_gallery_lists_newest_first_and_reuses_parameters(client: Client, running_app: RunningApp) -> None:
    client.predict(running_app.model_name, *form(seed=9090, batch_size=1, prompt="newest"), api_name="/generate")
    listed = call(client, "/gallery_page", 0)
    rels = listed["Paths"]
    assert listed["Page number"] == 0 and rels[0].endswith("-9090.png")
    assert str(running_app.data_dir / "outputs") in listed["Folder"]
    assert len(listed["Saved images"]) == len(rels) and listed["Page"].startswith("Page 1 of")
    chosen = call(client, "/gallery_select", rels[0])
    assert chosen["Chosen path"] == rels[0] and chosen["Parameters"].startswith("newest")
    assert chosen["Selected"] and Path(chosen["Selected"]).suffix == ".png"
    reused = call(client, "/gallery_reuse", chosen["Parameters"])
    values = form_of(reused)
    assert values["seed"] == 9090 and values["prompt"] == "newest"
    assert value_of(reused["Model"]) == running_app.model_name
    # delete (after the confirmation in the page) removes the file and the page no longer lists it
    target = running_app.data_dir / "outputs" / rels[0]
    after = call(client, "/gallery_delete", rels[0], 0)
    assert not target.exists()
    assert rels[0] not in after["Paths"] and after["Chosen path"] == ""


def test_fast_mode_toggle_reaches_the_engine(client: Client, running_app: RunningApp) -> None:
    engine = running_app.services.engine
    assert engine.config.fast is False
    try:
        message = client.predict(True, api_name="/set_fast_mode")
        assert "Fast mode **on**" in message and engine.config.fast is True
        # A generation still works with fast mode on (on the CPU: channels-last).
        results = call(client, "/generate", running_app.model_name, *form(batch_size=1, steps=2))
        assert results["Error"] == "" and "Done: 1 image" in results["Progress"]
    finally:
        assert "Fast mode **off**" in client.predict(False, api_name="/set_fast_mode")
    assert engine.config.fast is False


def test_runtime_change_shows_the_engines_new_choice(client: Client, running_app: RunningApp) -> None:
    engine = running_app.services.engine
    first = engine.capabilities().precision  # what "auto" picks on this CPU
    target = "fp32" if first == "bf16" else "bf16"
    assert f"Precision: **{first}**" in call(client, "/system_info")["System"]
    try:
        changed = call(client, "/set_runtime", target, "auto")
        assert f"Using precision **{target}** ({target} as asked" in changed["Runtime status"]
        assert "the model was reloaded" in changed["Runtime status"]
        assert changed["Model status"].startswith("✔ Ready") and f"on cpu, {target}, sdpa" in changed["Model status"]
        assert changed["Precision"]["info"].startswith(f"Now: {target}")
        # The System tab and a newly opened page read the engine again: the new precision, not the first one.
        system = call(client, "/system_info")["System"]
        assert f"Precision: **{target}** — {target} as asked" in system
        opened = call(client, "/page_state")
        assert value_of(opened["Precision"]) == target and opened["Precision"]["info"].startswith(f"Now: {target}")
        assert client.predict(api_name="/load_status").endswith(f"on cpu, {target}, sdpa")
    finally:
        restored = call(client, "/set_runtime", "auto", "auto")
    assert f"Using precision **{first}**" in restored["Runtime status"] and engine.config.precision == "auto"


MEMORY = ("Attention slicing", "VAE slicing", "CPU offload (NVIDIA)", "Low memory mode")


def test_memory_controls_reach_the_engine(client: Client, running_app: RunningApp) -> None:
    engine = running_app.services.engine
    opened = call(client, "/page_state")
    assert [value_of(opened[label]) for label in MEMORY] == [False, False, False, "off"]  # the settings' defaults
    try:
        changed = call(client, "/set_memory", True, True, False, "medvram")
        assert ("Attention slicing **on**, VAE slicing **on**, CPU offload **off**, low memory mode **medvram**; "
                "the model was reloaded.") in changed["Runtime status"]
        config = engine.config
        assert (config.attention_slicing, config.vae_slicing, config.cpu_offload) == (True, True, False)
        assert (config.medvram, config.lowvram) == (True, False)
        assert changed["Model status"].startswith("✔ Ready")
        # a page opened now shows what the engine runs with
        assert [value_of(call(client, "/page_state")[label]) for label in MEMORY] == [True, True, False, "medvram"]
        results = call(client, "/generate", running_app.model_name, *form(batch_size=2, steps=2))
        assert results["Error"] == "" and "Done: 2 images" in results["Progress"]
        # lowvram replaces medvram; CPU offload on a machine without an NVIDIA GPU is refused with a warning
        offload = call(client, "/set_memory", False, False, True, "lowvram")
        assert (engine.config.medvram, engine.config.lowvram, engine.config.cpu_offload) == (False, True, True)
        assert "⚠" in offload["Runtime status"] and "offload" in offload["Runtime status"]
    finally:
        restored = call(client, "/set_memory", False, False, False, "off")
    assert "low memory mode **off**" in restored["Runtime status"]
    config = engine.config
    assert not (config.attention_slicing or config.vae_slicing or config.cpu_offload or config.medvram
                or config.lowvram)


def test_cpu_banner_gives_the_measured_time_after_an_image(client: Client, running_app: RunningApp) -> None:
    """Before any image the banner says the first one will tell; after one it gives the time it measured."""
    running_app.services.queue._recent_runs.clear()  # other tests of this module generate too
    before = value_of(call(client, "/page_state")["CPU warning"])
    assert "the first image will tell how long one takes here" in before and " s per 512x512" not in before
    assert "try the preset &#x27;SD 1.5 LCM (few steps)&#x27; (6 steps)" in before
    client.predict(running_app.model_name, *form(seed=4242, steps=2, batch_size=1), api_name="/generate")
    after = value_of(call(client, "/page_state")["CPU warning"])
    assert " per 512x512 image at 20 steps here (measured from your last image)" in after
    assert "first image will tell" not in after


def test_generate_with_styles_writes_the_expanded_prompt_into_the_png(client: Client, running_app: RunningApp) -> None:
    running_app.services.styles.save("App night", "{prompt} at night", "daylight")
    out = call(client, "/generate", running_app.model_name, *form(seed=5151, batch_size=1, prompt="a harbour"),
               ["App night"])
    assert out["Error"] == "", out["Error"]
    path = next(p for p in saved_images(running_app.data_dir) if p.name.endswith("-5151.png"))
    assert read_image_parameters(path).startswith("a harbour at night\nNegative prompt: blurry, daylight\n")
    assert running_app.services.settings.load_ui_state()["form"]["prompt"] == "a harbour"
