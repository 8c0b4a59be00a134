"""The UI's pieces that need no server: import cost, the model list, progress, sharing text, dropped files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdlocal.engine.models import ModelEntry
from sdlocal.engine.request import EngineError, RequestError
from sdlocal.ui.common import error_text
from sdlocal.ui.model_list import UNSUPPORTED_PREFIX, model_choices
from sdlocal.ui.pnginfo import read_dropped
from sdlocal.ui.progress import progress_html
from sdlocal.ui.system import sharing_text

ROOT = Path(__file__).resolve().parents[2]


def test_ui_import_path_does_not_import_torch_or_diffusers() -> None:
    code = (
        "import sys, sdlocal.ui.app, sdlocal.outputs, sdlocal.presets, sdlocal.starter, sdlocal.engine.samplers\n"
        "import sdlocal.forms, sdlocal.services\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'xformers') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


@pytest.fixture()
def built_ui(tmp_path: Path):
    """The whole page built over real services on an empty data dir (no server, no model, no torch)."""
    from sdlocal.services import build_services
    from sdlocal.settings import Settings
    from sdlocal.ui.app import build_ui

    services = build_services(Settings(data_dir=tmp_path))
    try:
        yield services, build_ui(services)
    finally:
        services.close()


def _component(blocks, label: str):
    found = [block for block in blocks.blocks.values() if getattr(block, "label", None) == label]
    assert len(found) == 1, f"{len(found)} components labelled {label!r}"
    return found[0]


def _components(blocks, label: str) -> list:
    return [block for block in blocks.blocks.values() if getattr(block, "label", None) == label]


def test_sampler_and_schedule_choices_are_the_engines_own_lists(built_ui) -> None:
    from sdlocal.engine.samplers import sampler_names, schedule_names

    _services, blocks = built_ui
    samplers, schedules = _components(blocks, "Sampler"), _components(blocks, "Schedule type")
    assert len(samplers) == len(schedules) == 2  # the Generate and img2img tabs' (one builder, two places)
    for sampler, schedule in zip(samplers, schedules, strict=True):
        assert [value for _label, value in sampler.choices] == sampler_names()
        assert [value for _label, value in schedule.choices] == schedule_names()
    assert "PLMS" in sampler_names()  # one the UI's old copy of the list did not have


def test_img2img_tab_has_its_modes_and_every_image_tab_can_send_to_it(built_ui) -> None:
    import gradio as gr

    _services, blocks = built_ui
    by_id = {getattr(block, "elem_id", None): block for block in blocks.blocks.values()}
    tab_labels = [block.label for block in blocks.blocks.values() if isinstance(block, gr.Tab)]
    assert {"Generate", "img2img", "Sketch", "Inpaint", "Inpaint upload", "Gallery", "PNG Info"} <= set(tab_labels)
    assert isinstance(by_id["sd-i2i-inpaint"], gr.ImageEditor) and isinstance(by_id["sd-i2i-sketch"], gr.ImageEditor)
    editor, image = by_id["sd-i2i-inpaint"]._id, by_id["sd-i2i-image"]._id
    for source in ("sd-", "sd-i2i-", "sd-gallery-", "sd-pnginfo-"):
        for button, target in ((f"{source}send-img2img", image), (f"{source}send-inpaint", editor)):
            trigger = by_id[button]._id
            wired = [fn for fn in blocks.fns.values() if any(target_id == trigger for target_id, _ in fn.targets)]
            # the send, then the img2img Script section set up again from an X/Y/Z grid's parameters
            assert [fn.fn.__name__ for fn in wired] == ["send", "reuse"], button
            assert target in [block._id for block in wired[0].outputs], button
            assert by_id["sd-i2i-script"]._id in [block._id for block in wired[1].outputs], button
    img2img = next(fn for fn in blocks.fns.values() if fn.api_name == "img2img")
    inputs = {block._id for block in img2img.inputs}
    assert {editor, image, by_id["sd-i2i-denoising"]._id, by_id["sd-model"]._id} <= inputs
    defaults = {name: by_id[f"sd-i2i-{name}"].value for name in ("denoising", "mask-blur", "masked-content",
                                                                  "inpaint-area", "padding", "resize-mode")}
    assert defaults == {"denoising": 0.75, "mask-blur": 4, "masked-content": "original",
                        "inpaint-area": "Whole picture", "padding": 32, "resize-mode": "Just resize"}
    preset = by_id["sd-i2i-preset"]._id
    load = next(fn for fn in blocks.fns.values() if [block._id for block in fn.outputs] == [preset]
                and any(target == "load" for _, target in fn.targets))
    update = load.fn()  # one output: an update, not a list (which Gradio would show as "[object Object]")
    assert update["value"] == "(keep my settings)" and "SD 1.5" in update["choices"]


def _entry(name: str, family: str | None, supported: bool = True, reason: str = "", short_hash: str | None = None):
    return ModelEntry(name=name, path=Path(name), format="safetensors", family=family, inpainting=False,
                      supported=supported, reason=reason, size=1, mtime=0.0, short_hash=short_hash)


def test_model_choices_show_family_hash_and_unsupported_reason() -> None:
    choices = model_choices([
        _entry("flux/dev", None, supported=False, reason="Flux models are not supported"),
        _entry("sd15/base", "sd1", short_hash="6ce0161689"),
        _entry("xl", "sdxl"),
    ])
    assert choices[0] == ("sd15/base [6ce0161689] · SD 1.x", "sd15/base")
    assert choices[1] == ("xl · SDXL", "xl")
    label, value = choices[2]
    assert value == UNSUPPORTED_PREFIX + "flux/dev"
    assert label.startswith("⊘") and "Flux models are not supported" in label


def test_progress_html_shows_step_batch_and_eta() -> None:
    state = SimpleNamespace(text="Generating", step=5, total_steps=20, batch_index=1, batch_count=2,
                            eta_seconds=12.4, fraction=0.625)
    text = progress_html(state)
    assert "step 5/20" in text and "batch 2/2" in text and "ETA 12 s" in text and "width:62.5%" in text
    assert progress_html(None) == ""


def test_error_text_names_the_control() -> None:
    assert error_text(RequestError("cfg_scale", 99, "must be a number from 0 to 30")).startswith("CFG scale: 99")
    assert error_text(EngineError("Out of memory.", "Lower the size.")) == "Out of memory. Lower the size."


def test_sharing_text_covers_local_network_share_and_auth() -> None:
    assert "Local only" in sharing_text(SimpleNamespace(listen=False, share=False, port=7860))
    listening = sharing_text(SimpleNamespace(listen=True, share=False, port=7860))
    assert "network" in listening and "No login" in listening
    shared = sharing_text(SimpleNamespace(listen=False, share=True, auth="ann:secret,bob:pw", port=7860))
    assert "Shared" in shared and "ann, bob" in shared and "secret" not in shared


def test_dropped_files_give_clear_messages(tmp_path: Path) -> None:
    with_params = tmp_path / "a1111.png"
    info = PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512")
    Image.new("RGB", (8, 8)).save(with_params, pnginfo=info)
    text, message = read_dropped(str(with_params))
    assert text.startswith("a cat") and message == ""

    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert "no generation parameters" in read_dropped(str(plain))[1]

    notes = tmp_path / "notes.png"
    notes.write_text("this is not an image")
    assert "not an image" in read_dropped(str(notes))[1]

    # a header that claims 100,000 x 100,000 pixels: refused before any pixel is decoded
    bomb = tmp_path / "bomb.png"
    _write_bomb(bomb)
    assert "too large" in read_dropped(str(bomb))[1]


def _write_bomb(path: Path) -> None:
    """A valid PNG header for a 100,000 x 100,000 image with no pixel data (PIL refuses it at open)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


def test_runtime_report_says_when_xformers_falls_back_to_sdpa() -> None:
    from sdlocal.services import runtime_report

    broken = "xformers is installed but does not work here: no kernel for this GPU"
    before = SimpleNamespace(warnings=[])
    after = SimpleNamespace(device="cuda", precision="fp16", precision_reason="fp16 on the GPU", attention="sdpa",
                            attentions={"sdpa": "", "xformers": broken},
                            warnings=[f"attention xformers was asked but {broken}"])
    text = runtime_report({"precision": "auto", "attention": "xformers"}, before, after, reloaded=True)
    assert "attention **sdpa** on **cuda**" in text and f"(xformers was asked but {broken})" in text
    assert text.count(broken) == 2  # the choice's reason and the new warning
    assert "the model was reloaded" in text
    unchanged = runtime_report({"attention": "xformers"}, after, after, reloaded=False)
    assert unchanged.count(broken) == 1 and "applies when a model loads" in unchanged


def test_start_form_first_start_saved_form_and_flags(tmp_path: Path) -> None:
    from sdlocal.forms import start_form
    from sdlocal.presets import PresetStore

    presets = PresetStore(user_dir=tmp_path)
    flags = SimpleNamespace(token_merging_ratio=0.0, preset=None)
    first = start_form(None, flags, presets, "sdxl")
    assert first.preset == presets.for_family("sdxl").name and first.values["width"] == 1024 and not first.chose
    assert start_form(None, flags, presets, None).values == {}  # no model yet: the request defaults
    # --token-merging-ratio is the first start's value, over the preset's 0; a saved form keeps its own
    flags.token_merging_ratio = 0.4
    assert start_form(None, flags, presets, "sd1").values["token_merging_ratio"] == 0.4
    saved = start_form({"steps": 3, "token_merging_ratio": 0.0}, flags, presets, "sd1")
    assert saved.values == {"steps": 3, "token_merging_ratio": 0.0} and saved.preset is None
    # --preset wins over the saved form; a bad one is reported, not applied
    flags.preset = "SD 1.5"
    chosen = start_form({"steps": 3}, flags, presets, "sdxl")
    assert (chosen.preset, chosen.chose, chosen.values["steps"]) == ("SD 1.5", True, 25)
    flags.preset = "No such preset"
    bad = start_form({"steps": 3}, flags, presets, "sd1")
    assert bad.values == {"steps": 3} and "No such preset" in bad.preset_problem and bad.preset is None


@pytest.mark.parametrize("theme", ["dark", "light", "system"])
def test_theme_flag_reaches_the_served_page(tmp_path: Path, theme: str) -> None:
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from sdlocal.services import build_services
    from sdlocal.settings import Settings
    from sdlocal.ui.app import build_ui, mount_options

    services = build_services(Settings(data_dir=tmp_path, theme=theme))
    try:
        app = gr.mount_gradio_app(FastAPI(), build_ui(services), path="/", **mount_options(services))
        http = TestClient(app, follow_redirects=False)
        page, with_query, own, config = (http.get(url) for url in ("/", "/?view=api", "/?__theme=light", "/config"))
    finally:
        services.close()
    assert own.status_code == 200 and config.status_code == 200  # a chosen __theme and Gradio's own routes
    if theme == "system":  # Gradio's page follows the system's colour scheme by itself
        assert page.status_code == 200 and with_query.status_code == 200
    else:
        assert page.status_code == 307 and page.headers["location"] == f"?__theme={theme}"
        assert with_query.headers["location"] == f"?view=api&__theme={theme}"


def test_cpu_banner_refreshes_after_each_generation(built_ui) -> None:
    """The Generate button and the prompt's Enter each chain a banner update, which shows the newest timing."""
    from sdlocal.jobs import RunTiming

    services, blocks = built_ui
    banner = _component(blocks, "CPU warning")
    generate = next(fn for fn in blocks.fns.values() if fn.api_name == "generate")
    refreshes = [fn for fn in blocks.fns.values() if [block._id for block in fn.outputs] == [banner._id]]
    triggers = {fn.trigger_after for fn in refreshes}
    assert generate._id in triggers and len(triggers) == 2
    services.engine = SimpleNamespace(current_model=SimpleNamespace(name="m", family="sd1"))
    services.queue._recent_runs.append(RunTiming(model_name="m", seconds=10, steps=5, width=512, height=512,
                                                 images=1))
    services.capabilities = lambda: SimpleNamespace(device="cpu", warnings=[])
    update = refreshes[0].fn()
    assert "about 40 s per 512x512 image at 20 steps here" in update["value"] and update["visible"] is True
