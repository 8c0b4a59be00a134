"""The page's VAE picker (A1111's sd_vae quick setting on the Generate tab): listed from models/VAE, sent with
txt2img and img2img requests, kept in the UI state, and set back from an infotext's ``VAE``."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from gradio_client import Client, handle_file

from sdlocal.outputs import read_image_parameters
from tests.ui.conftest import RunningApp
from tests.ui.test_app import call, form, img2img_settings, value_of


@pytest.fixture(scope="module")
def client(running_app: RunningApp) -> Client:
    from tests.engine.vae_files import write_vae

    engine = running_app.services.engine
    loaded = engine._pipelines().get(engine.current_model, engine._runtime_now())
    write_vae(loaded.pipe.vae, running_app.data_dir / "models" / "VAE" / "half.safetensors")
    return Client(running_app.url, verbose=False)


def test_refresh_lists_the_vaes_after_automatic_and_none(client: Client) -> None:
    refreshed = call(client, "/refresh_vaes", "Automatic")["VAE"]
    assert [value for _label, value in refreshed["choices"]] == ["Automatic", "None", "half.safetensors"]
    assert value_of(refreshed) == "Automatic"


def test_txt2img_and_img2img_decode_with_the_chosen_vae(client: Client, running_app: RunningApp,
                                                        tmp_path: Path) -> None:
    from PIL import Image

    client.predict("Automatic", api_name="/refresh_vaes")
    out = call(client, "/generate", running_app.model_name, *form(seed=4321, batch_size=1), [], "half.safetensors")
    assert out["Error"] == "", out["Error"]
    assert "VAE: half.safetensors" in out["Parameters"] and "VAE hash: " in out["Parameters"]
    assert running_app.services.settings.load_ui_state()["vae"] == "half.safetensors"  # the next page opens with it
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), (200, 60, 20)).save(photo)
    out = call(client, "/img2img", running_app.model_name, "img2img", handle_file(str(photo)), None, None, None,
               None, *form(seed=99, batch_size=1), *img2img_settings(denoising_strength=0.5), [], "half.safetensors")
    assert out["Error"] == "", out["Error"]
    saved = sorted((running_app.data_dir / "outputs" / "img2img").rglob("*-99.png"))
    assert "VAE: half.safetensors" in read_image_parameters(saved[-1])
    out = call(client, "/generate", running_app.model_name, *form(seed=4321, batch_size=1), [], "None")
    assert "VAE" not in out["Parameters"]


def fake_services(*names: str) -> SimpleNamespace:
    vaes = [SimpleNamespace(name=name, path=Path("/vae") / name, usable=True, family=None) for name in names]
    return SimpleNamespace(vaes=lambda refresh=False: vaes)


def test_an_infotext_sets_the_vae_it_names_automatic_without_one_and_keeps_it_when_missing(monkeypatch) -> None:
    from sdlocal.ui import vae_select

    services = fake_services("sub/kl-f8-anime2.safetensors")
    line = "Steps: 2, Sampler: Euler, Seed: 1, Size: 64x64"
    assert vae_select.vae_from_infotext(services, f"cat\n{line}, VAE: kl-f8-anime2.safetensors")["value"] == \
        "sub/kl-f8-anime2.safetensors"
    assert vae_select.vae_from_infotext(services, f"cat\n{line}")["value"] == "Automatic"
    notes: list[str] = []
    monkeypatch.setattr(vae_select.gr, "Info", notes.append)
    assert "value" not in vae_select.vae_from_infotext(services, f"cat\n{line}, VAE: elsewhere.pt")
    assert "elsewhere.pt" in notes[0]


def test_the_choices_name_the_family_and_leave_unusable_files_out() -> None:
    from sdlocal.ui.vae_select import vae_choices

    vaes = [SimpleNamespace(name="sdxl_vae.safetensors", usable=True, family="sdxl"),
            SimpleNamespace(name="flux.safetensors", usable=False, family=None)]
    assert vae_choices(vaes)[2:] == [("sdxl_vae.safetensors · SDXL", "sdxl_vae.safetensors")]
