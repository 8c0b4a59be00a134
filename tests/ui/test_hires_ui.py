"""The Generate tab's Hires fix section: the size line, the request part, the upscaler list, filling it back."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sdlocal.engine.request import HiresSpec
from sdlocal.engine.upscalers import LATENT_MODES
from sdlocal.ui.common import DEFAULTS, FORM_FIELDS, UiState
from sdlocal.ui.generate import run
from sdlocal.ui.hires import HIRES_DEFAULTS, HIRES_FIELDS, hires_spec, hires_updates, size_text
from sdlocal.ui.upscaler_list import hires_upscaler_names, upscaler_names


def section(**values: Any) -> list[Any]:
    named = {**HIRES_DEFAULTS, **values}
    return [named[name] for name in HIRES_FIELDS]


def test_size_line_follows_scale_resize_and_crop_as_the_engine_computes_it() -> None:
    assert size_text(512, 512, 2, 0, 0) == "512x512 -> 1024x1024"
    assert size_text(64.0, 64.0, 2.0, 0.0, 0.0) == "64x64 -> 128x128"  # Gradio's numbers arrive as floats
    assert size_text(512, 768, 2, 1024, 0) == "512x768 -> 1024x1536"  # one side set: the other follows
    assert size_text(512, 768, 2, 1024, 1024) == "512x768 -> 1024x1024 (upscaled to 1024x1536, then cropped)"


def test_size_line_says_which_control_is_out_of_range() -> None:
    assert size_text(512, 512, 20, 0, 0).startswith("⚠ Upscale by:")
    assert size_text(512, 512, 2, 30, 0).startswith("⚠ Resize width to:")
    assert "4096" in size_text(2048, 2048, 4, 0, 0)  # 8192 would be past the largest side


def test_request_part_only_when_ticked_with_whole_numbers() -> None:
    assert hires_spec(section()) is None
    spec = hires_spec(section(enabled=True, upscaler="Lanczos", steps=5.0, denoising_strength=0.45, scale=1.5,
                              resize_x=0.0, prompt="sharp"))
    assert spec == HiresSpec(scale=1.5, upscaler="Lanczos", steps=5, denoising_strength=0.45, prompt="sharp")
    assert isinstance(spec.steps, int) and isinstance(spec.resize_x, int)
    assert hires_spec([True]) == HiresSpec()  # a script sending fewer values gets A1111's UI defaults


def test_upscaler_list_is_latent_modes_then_builtins_then_usable_models() -> None:
    found = [SimpleNamespace(name="None", usable=True), SimpleNamespace(name="Lanczos", usable=True),
             SimpleNamespace(name="Nearest", usable=True), SimpleNamespace(name="4x-UltraSharp", usable=True),
             SimpleNamespace(name="broken", usable=False)]
    engine = SimpleNamespace(upscalers=lambda refresh=False: found)
    assert hires_upscaler_names(engine) == [*LATENT_MODES, "None", "Lanczos", "Nearest", "4x-UltraSharp"]
    assert upscaler_names(engine) == ["None", "Lanczos", "Nearest", "4x-UltraSharp"]  # the Extras tab's

    def failing(refresh: bool = False) -> list:
        raise OSError("models folder unreadable")

    assert hires_upscaler_names(SimpleNamespace(upscalers=failing)) == [*LATENT_MODES, "None", "Lanczos", "Nearest"]


def test_filling_from_an_image_ticks_the_section_and_defaults_what_the_text_leaves_out() -> None:
    filled = hires_updates({"resize_x": 1024, "resize_y": 768, "upscaler": "Latent (nearest)",
                            "denoising_strength": 0.4})
    values = {name: update["value"] for name, update in zip(HIRES_FIELDS, filled, strict=True)}
    assert values == {**HIRES_DEFAULTS, "enabled": True, "resize_x": 1024, "resize_y": 768,
                      "upscaler": "Latent (nearest)", "denoising_strength": 0.4}
    unticked = hires_updates({})
    assert unticked[0]["value"] is False and all("value" not in update for update in unticked[1:])


class CapturingQueue:
    """Takes the request the tab builds, then refuses it (so nothing runs)."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def submit(self, request: Any, save: bool = True, source: str = "ui") -> Any:
        self.requests.append(request)
        raise RuntimeError("not running jobs in this test")


class MemorySettings:
    def __init__(self) -> None:
        self.saved: dict[str, Any] = {}

    def load_ui_state(self) -> dict[str, Any]:
        return self.saved

    def save_ui_state(self, ui: dict[str, Any]) -> None:
        self.saved = ui


def test_generate_sends_hires_fix_and_the_saved_form_leaves_it_out() -> None:
    queue, settings = CapturingQueue(), MemorySettings()
    services = SimpleNamespace(queue=queue, styles=None)
    form = [{**DEFAULTS, "width": 64, "height": 64, "prompt": "a fox"}[name] for name in FORM_FIELDS]
    hires = section(enabled=True, upscaler="Latent (bicubic)", scale=2.0, steps=3.0)
    list(run(services, UiState(settings), "tiny", *form, [], "Automatic", *hires))
    request = queue.requests[0]
    assert request.hires == HiresSpec(upscaler="Latent (bicubic)", steps=3)
    assert request.hires.sizes(64, 64).final_width == 128
    assert set(settings.saved["form"]) == set(FORM_FIELDS)  # hires fix is not part of the saved form

    list(run(services, UiState(settings), "tiny", *form, [], "Automatic", *section()))
    list(run(services, UiState(settings), "tiny", *form))  # API clients sending only the form
    assert queue.requests[1].hires is None and queue.requests[2].hires is None


def test_an_images_hires_keys_tick_the_section_and_fill_it() -> None:
    from sdlocal.forms import fill_from_infotext
    from sdlocal.ui.hires import reuse_hires

    text = ("a fox\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, Denoising strength: 0.45, "
            "Hires resize: 1024x768, Hires upscaler: Latent (nearest), Hires prompt: sharp fox")
    accordion, *updates = reuse_hires(text)
    values = {name: update["value"] for name, update in zip(HIRES_FIELDS, updates, strict=True)}
    assert accordion["open"] is True
    assert values == {**HIRES_DEFAULTS, "enabled": True, "resize_x": 1024, "resize_y": 768, "prompt": "sharp fox",
                      "upscaler": "Latent (nearest)", "denoising_strength": 0.45}

    def unknown(name: str) -> None:
        raise LookupError(name)

    assert fill_from_infotext(SimpleNamespace(find_model=unknown), text).hires == {
        "resize_x": 1024, "resize_y": 768, "upscaler": "Latent (nearest)", "denoising_strength": 0.45,
        "prompt": "sharp fox"}
    _accordion, enabled, *rest = reuse_hires("a fox\nSteps: 20, Sampler: Euler, Seed: 1, Size: 512x512")
    assert enabled["value"] is False and all("value" not in update for update in rest)
