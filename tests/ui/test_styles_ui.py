"""The Styles box and the Emphasis setting on the Generate and img2img tabs: styles are applied when the job is
built (the engine gets the expanded prompt; the boxes keep what was typed), saved from the prompts, applied into
the boxes on request; Emphasis is a request field whose value is the saved setting."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from PIL import Image

from sdlocal.settings import Settings, resolve
from sdlocal.styles import StyleLibrary
from sdlocal.ui import generate, img2img
from sdlocal.ui.common import FORM_FIELDS, UiState
from sdlocal.ui.img2img_request import IMAGE_FIELDS, SOURCE_DEFAULTS, SOURCE_FIELDS
from sdlocal.ui.styles_events import apply_to_boxes, refresh_styles, save_emphasis, save_style
from tests.ui.test_img2img import FORM, _FakeQueue


def services_at(tmp_path: Path) -> SimpleNamespace:
    settings = Settings(data_dir=tmp_path)
    library = StyleLibrary(tmp_path)
    library.save("Night", "{prompt} at night", "sun")
    library.save("Oil", "oil painting", "photo")
    return SimpleNamespace(queue=_FakeQueue(), settings=settings, styles=library)


def form_values(**changes) -> list:
    values = {**FORM, "negative_prompt": "blurry", **changes}
    return [values[name] for name in FORM_FIELDS]


def test_generate_applies_the_picked_styles_in_order_and_saves_the_typed_prompt(tmp_path: Path) -> None:
    services = services_at(tmp_path)
    state = UiState(services.settings)
    list(generate.run(services, state, "tiny", *form_values(), ["Night", "Oil"]))
    (request, _save, _source), = services.queue.requests
    assert request.prompt == "a red barn at night, oil painting"
    assert request.negative_prompt == "blurry, sun, photo"
    assert state.load()["form"]["prompt"] == "a red barn"  # the box keeps what was typed


def test_an_unknown_style_is_a_message_naming_it_not_a_job(tmp_path: Path) -> None:
    services = services_at(tmp_path)
    outputs = list(generate.run(services, UiState(services.settings), "tiny", *form_values(), ["Gone"]))
    assert services.queue.requests == []
    message = outputs[0][1]
    assert "Styles: &#x27;Gone&#x27; is not allowed; must name a known style; known styles: Night, Oil" in message


def test_img2img_applies_styles_too(tmp_path: Path) -> None:
    services = services_at(tmp_path)
    image = Image.new("RGB", (64, 64))
    values = ["img2img", image, *[None] * (len(IMAGE_FIELDS) - 2), *form_values(),
              *[SOURCE_DEFAULTS[name] for name in SOURCE_FIELDS], ["Oil"]]
    list(img2img.run(services, "tiny", *values))
    (request, _save, _source), = services.queue.requests
    assert (request.mode, request.prompt, request.negative_prompt) == ("img2img", "a red barn, oil painting",
                                                                      "blurry, photo")


def test_the_request_carries_the_emphasis_picked(tmp_path: Path) -> None:
    services = services_at(tmp_path)
    list(generate.run(services, UiState(services.settings), "tiny", *form_values(emphasis="No norm"), []))
    assert services.queue.requests[0][0].emphasis == "No norm"


def test_apply_styles_to_prompt_fills_the_boxes_and_clears_the_pick(tmp_path: Path) -> None:
    services = services_at(tmp_path)
    prompt, negative, styles = apply_to_boxes(services, "a cat", "", ["Night"])
    assert (prompt, negative, styles["value"]) == ("a cat at night", "sun", [])


def test_saving_the_prompts_as_a_style_adds_it_to_the_list(tmp_path: Path) -> None:
    services = services_at(tmp_path)
    styles, status, name_box = save_style(services, "Foggy", "{prompt}, fog", "clear sky", ["Night", "Missing"])
    assert "Foggy" in styles["choices"] and styles["value"] == ["Night"] and name_box == ""
    assert "Saved style **Foggy**" in status
    assert StyleLibrary(tmp_path).apply("a pier", "", ["Foggy"]) == ("a pier, fog", "clear sky")
    _styles, refused, _ = save_style(services, " ", "x", "", [])
    assert refused.startswith("⚠ name:")


def test_refresh_reads_the_files_again(tmp_path: Path) -> None:
    services = services_at(tmp_path)
    (tmp_path / "styles.csv").write_text("name,prompt\nNew,new style\n", encoding="utf-8")
    update = refresh_styles(services, ["Night", "New"])
    assert update["choices"] == ["New"] and update["value"] == ["New"]


def test_the_emphasis_picked_is_saved_as_the_setting(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    save_emphasis(settings, "Ignore")
    assert settings.emphasis == "Ignore" and resolve({"data_dir": tmp_path}, env={}).emphasis == "Ignore"


# ----- token counters ------------------------------------------------------------------------------------------------

def _services(tmp_path: Path):
    from sdlocal.services import build_services

    return build_services(Settings(data_dir=tmp_path))


def test_the_token_counter_reads_as_a1111s_and_grows_by_chunks(tmp_path: Path) -> None:
    services = _services(tmp_path)
    try:
        assert services.token_count("", 20) == "0/75"
        assert services.token_count("a cat", 20) == "2/75"
        assert services.token_count("cat " * 80, 20) == "80/150"  # past 75 tokens: a second chunk
        assert services.token_count("(a cat:1.3)", 20) == "2/75"  # the weights are syntax, not tokens
        assert services.token_count("a cat <lora:pixel-art:0.8>", 20) == "2/75"  # the encoder never reads tags
    finally:
        services.close()


def test_an_embedding_counts_its_vectors_once_a_model_is_loaded(tmp_path: Path, monkeypatch) -> None:
    import sys
    from types import ModuleType

    services = _services(tmp_path)
    try:
        monkeypatch.setitem(sys.modules, "torch", sys.modules.get("torch") or ModuleType("torch"))
        engine = SimpleNamespace(current_model=None,
                                 embeddings=lambda: ({"easyneg": SimpleNamespace(vectors=8)}, {}))
        services.engine = engine
        plain = services.token_count("easyneg, a cat", 20)  # no model yet: the trigger's own tokens
        engine.current_model = object()
        assert services.token_count("easyneg, a cat", 20) == "11/75"  # 8 vectors + ", a cat"
        assert plain != "11/75"
    finally:
        services.close()


def test_the_counter_shows_nothing_rather_than_an_error() -> None:
    from sdlocal.ui.styles_events import token_counter_text

    def broken(text, steps):
        raise OSError("tokenizer missing")

    assert token_counter_text(SimpleNamespace(token_count=broken), "a cat", 20) == ""
    assert ">2/75<" in token_counter_text(SimpleNamespace(token_count=lambda text, steps: "2/75"), "a cat", 20)


def test_reusing_parameters_with_an_emphasis_sets_the_dropdown() -> None:
    from sdlocal.ui.common import infotext_updates

    engine = SimpleNamespace(find_model=lambda name: None)
    text = "a cat\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Emphasis: No norm"
    updates = infotext_updates(engine, text)
    assert updates[1 + FORM_FIELDS.index("emphasis")]["value"] == "No norm"
    without = infotext_updates(engine, "a cat\nSteps: 4, Seed: 1")
    assert "value" not in without[1 + FORM_FIELDS.index("emphasis")]  # not named: the dropdown stays
