"""Hires fix and Extras through the real app with gradio_client: the page's requests reach the engine and the
queue, the images come back at the sizes asked for, saved with A1111's texts."""

from __future__ import annotations

from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdlocal.outputs import read_image_info, read_image_parameters
from sdlocal.ui.hires import HIRES_DEFAULTS, HIRES_FIELDS
from tests.ui.conftest import RunningApp
from tests.ui.test_app import call, form


@pytest.fixture(scope="module")
def client(running_app: RunningApp) -> Client:
    return Client(running_app.url, verbose=False)


def hires(**values) -> list:
    named = {**HIRES_DEFAULTS, **values}
    return [named[name] for name in HIRES_FIELDS]


def test_hires_fix_from_the_page_makes_the_final_size_and_writes_its_keys(client: Client,
                                                                         running_app: RunningApp) -> None:
    out = call(client, "/generate", running_app.model_name, *form(seed=4545, batch_size=1, steps=3), [],
               "Automatic", *hires(enabled=True, upscaler="Latent", steps=2, denoising_strength=0.5))
    assert out["Error"] == "", out["Error"]
    path = next(p for p in (running_app.data_dir / "outputs" / "txt2img").rglob("*-4545.png"))
    assert Image.open(path).size == (128, 128)
    text = read_image_parameters(path)
    assert "Hires upscale: 2" in text and "Hires upscaler: Latent" in text and "Hires steps: 2" in text
    assert "Denoising strength: 0.5" in text and "Size: 64x64" in text
    # PNG Info sends it back: the Hires fix section is ticked and filled (the Generate tab's private event),
    # checked here on the reader the section uses
    from sdlocal.forms import hires_from_infotext

    assert hires_from_infotext(text) == {"scale": 2.0, "steps": 2, "denoising_strength": 0.5, "upscaler": "Latent"}


def test_extras_from_the_page_upscales_and_saves_under_extras_images(client: Client, running_app: RunningApp,
                                                                     tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    info = PngInfo()
    info.add_text("parameters", "a red roof\nSteps: 4, Sampler: Euler, Seed: 5, Size: 40x32")
    Image.new("RGB", (40, 32), (200, 30, 30)).save(photo, pnginfo=info)
    folder = running_app.data_dir / "outputs" / "extras-images"
    before = set(folder.rglob("*.png"))
    # gr.State inputs (which source and resize tab are open) are not sent by a client: Single Image, Scale by
    out = call(client, "/extras", handle_file(str(photo)), None, "", "", 3, 512, 512, True, "Lanczos", "None", 0)
    assert out["Error"] == "", out["Error"]
    assert "Done: 1 image" in out["Progress"] and "Postprocess upscale by: 3" in out["Postprocessing"]
    [saved] = sorted(set(folder.rglob("*.png")) - before)
    assert Image.open(saved).size == (120, 96)
    text, chunks = read_image_info(saved)
    assert text.startswith("a red roof") and "Postprocess upscaler: Lanczos" in chunks["postprocessing"]
    refused = call(client, "/extras", handle_file(str(photo)), None, "", "", 3, 512, 512, True, "4x-Nowhere",
                   "None", 0)
    assert "Upscaler 1" in refused["Error"] and "4x-Nowhere" in refused["Error"]


def test_an_upscaler_file_dropped_in_is_offered_and_runs_from_the_page(client: Client, running_app: RunningApp,
                                                                       tmp_path: Path) -> None:
    from sdlocal.ui.extras import upscaler_updates
    from sdlocal.ui.hires import upscaler_update
    from tests.engine.upscalers.files import new_layout, save, tiny_rrdb

    save(new_layout(tiny_rrdb()), running_app.data_dir / "models" / "ESRGAN" / "4x-TinyTest.safetensors")
    (running_app.data_dir / "models" / "ESRGAN" / "notes.pth").write_bytes(b"not a model")
    hires_list = upscaler_update(running_app.services.engine)["choices"]
    extras_list = upscaler_updates(running_app.services.engine)[0]["choices"]
    names = [choice[0] if isinstance(choice, tuple) else choice for choice in extras_list]
    assert names[:3] == ["None", "Lanczos", "Nearest"] and "4x-TinyTest" in names and "notes" not in names
    assert "Latent (bicubic antialiased)" in [c[0] if isinstance(c, tuple) else c for c in hires_list]
    photo = tmp_path / "small.png"
    Image.new("RGB", (24, 16), (20, 160, 60)).save(photo)
    out = call(client, "/extras", handle_file(str(photo)), None, "", "", 4, 512, 512, True, "4x-TinyTest", "None",
               0)
    assert out["Error"] == "", out["Error"]
    assert "Postprocess upscaler: 4x-TinyTest" in out["Postprocessing"]
