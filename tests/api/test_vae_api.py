"""The VAE through A1111's API: ``GET /sdapi/v1/sd-vae`` and ``POST /sdapi/v1/refresh-vae`` list the VAE folders
(``model_name``, ``filename``, plus sdlocal's ``family`` and ``reason``), ``sd_vae`` is an option of ``/options``
(saved to ``api-options.json``) and an ``override_settings`` key for one request, and an unknown name is a 422
naming ``sd_vae``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import MODEL_A, Server, decode_png, start_server
from tests.engine.vae_files import SIXTEEN_CHANNELS, write_tensors, write_vae


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The API over one tiny model, with ``half.safetensors`` (its own VAE, decoder scaled) in models/VAE."""
    for server in start_server(tmp_path_factory.mktemp("sdlocal-vae-api"), [MODEL_A], nowebui=True, api=True):
        folder = server.data_dir / "models" / "VAE"
        loaded = server.services.engine._pipelines().get(server.services.engine.current_model,
                                                         server.services.engine._runtime_now())
        write_vae(loaded.pipe.vae, folder / "half.safetensors", scale=0.5)
        write_tensors(folder / "flux-ae.safetensors", SIXTEEN_CHANNELS)
        server.services.engine.vaes(refresh=True)
        yield server


@pytest.fixture
def client(api: Server) -> Iterator[httpx.Client]:
    with api.client() as http:
        yield http


def small(**extra) -> dict:
    return {"prompt": "a cube", "steps": 2, "width": 64, "height": 64, "seed": 3, "sampler_name": "Euler", **extra}


def txt2img(client: httpx.Client, **extra) -> tuple[dict, bytes]:
    response = client.post("/sdapi/v1/txt2img", json=small(**extra))
    assert response.status_code == 200, response.text
    body = response.json()
    return json.loads(body["info"]), decode_png(body["images"][0]).tobytes()


def test_sd_vae_lists_the_vae_folders_in_a1111s_shape_with_the_reason(client: httpx.Client, api: Server) -> None:
    listed = client.get("/sdapi/v1/sd-vae").json()
    assert client.post("/sdapi/v1/refresh-vae").json() == listed
    by_name = {item["model_name"]: item for item in listed}
    half = by_name["half.safetensors"]
    assert half == {"model_name": "half.safetensors", "reason": "", "family": None,
                    "filename": str(api.data_dir / "models" / "VAE" / "half.safetensors")}
    flux = by_name["flux-ae.safetensors"]
    assert flux["reason"] == "made for a 16-channel model (SD3/Flux); this model is SD 1.x/SDXL"


def test_refresh_finds_a_new_file(client: httpx.Client, api: Server) -> None:
    new = write_tensors(api.data_dir / "models" / "VAE" / "later.safetensors", SIXTEEN_CHANNELS)
    try:
        assert "later.safetensors" not in {v["model_name"] for v in client.get("/sdapi/v1/sd-vae").json()}
        assert "later.safetensors" in {v["model_name"] for v in client.post("/sdapi/v1/refresh-vae").json()}
    finally:
        new.unlink()
        client.post("/sdapi/v1/refresh-vae")


def test_override_settings_sd_vae_is_used_for_one_request(client: httpx.Client, api: Server) -> None:
    own_info, own = txt2img(client)
    info, swapped = txt2img(client, override_settings={"sd_vae": "half.safetensors"})
    digest = hashlib.sha256((api.data_dir / "models" / "VAE" / "half.safetensors").read_bytes()).hexdigest()[:10]
    assert swapped != own
    assert (info["sd_vae_name"], info["sd_vae_hash"]) == ("half.safetensors", digest)
    assert f"VAE hash: {digest}, VAE: half.safetensors" in info["infotexts"][0]
    assert own_info["sd_vae_name"] is None and "VAE" not in own_info["infotexts"][0]
    assert client.get("/sdapi/v1/options").json()["sd_vae"] == "Automatic"  # one request only
    assert txt2img(client)[1] == own


def test_the_sd_vae_option_round_trips_and_is_saved(client: httpx.Client, api: Server) -> None:
    from sdlocal.api.options import ApiOptions

    try:
        response = client.post("/sdapi/v1/options", json={"sd_vae": "HALF"})
        assert response.status_code == 200, response.text
        assert response.json()["applied"] == {"sd_vae": "half.safetensors"}
        assert client.get("/sdapi/v1/options").json()["sd_vae"] == "half.safetensors"
        assert json.loads((api.data_dir / "api-options.json").read_text())["sd_vae"] == "half.safetensors"
        assert ApiOptions(api.services).values["sd_vae"] == "half.safetensors"  # what the next start reads
        assert txt2img(client)[0]["sd_vae_name"] == "half.safetensors"
    finally:
        client.post("/sdapi/v1/options", json={"sd_vae": "Automatic"})
    assert client.get("/sdapi/v1/options").json()["sd_vae"] == "Automatic"


def test_an_unknown_vae_is_a_422_naming_sd_vae_and_the_closest(client: httpx.Client) -> None:
    bad = client.post("/sdapi/v1/options", json={"sd_vae": "hlaf.safetensors"})
    assert bad.status_code == 422 and bad.json()["field"] == "sd_vae"
    assert "half.safetensors" in bad.json()["detail"]
    bad = client.post("/sdapi/v1/txt2img", json=small(override_settings={"sd_vae": "nope"}))
    assert bad.status_code == 422 and bad.json()["field"] == "override_settings.sd_vae"


def test_an_unusable_vae_is_a_422_with_its_reason(client: httpx.Client) -> None:
    bad = client.post("/sdapi/v1/txt2img", json=small(override_settings={"sd_vae": "flux-ae.safetensors"}))
    assert bad.status_code == 422 and "16-channel" in bad.json()["detail"]


def test_img2img_uses_the_chosen_vae(client: httpx.Client, tmp_path: Path) -> None:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 80, 40)).save(buffer, format="PNG")
    source = base64.b64encode(buffer.getvalue()).decode()

    def img2img(vae: str) -> tuple[dict, bytes]:
        response = client.post("/sdapi/v1/img2img", json=small(init_images=[source], denoising_strength=0.6,
                                                               override_settings={"sd_vae": vae}))
        assert response.status_code == 200, response.text
        return json.loads(response.json()["info"]), decode_png(response.json()["images"][0]).tobytes()

    own = img2img("None")
    info, swapped = img2img("half.safetensors")
    assert swapped != own and info["sd_vae_name"] == "half.safetensors"
