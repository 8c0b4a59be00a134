"""A1111's Extras API through the running test server: single and batch upscales, their PNG chunks, html_info,
the upscaler lists, and bad values refused with 422 naming the field."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdlocal.engine.engine import Engine
from sdlocal.engine.request import RequestError
from tests.api.conftest import Server, decode_png

SOURCE_PARAMETERS = "a red fox\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 48x32"


def _png(size: tuple[int, int] = (48, 32), colour: tuple[int, int, int] = (200, 80, 40),
         parameters: str | None = SOURCE_PARAMETERS) -> str:
    meta = PngInfo()
    if parameters:
        meta.add_text("parameters", parameters)
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG", pnginfo=meta)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(autouse=True)
def builtin_upscalers(api: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Until the upscaler library is on this branch: the contract's three builtins on the test server's engine
    (the routes and the queue are what these tests are about). With the library merged, this does nothing."""
    if hasattr(Engine, "upscaler_set"):
        return
    from types import SimpleNamespace

    names = ("None", "Lanczos", "Nearest")
    entries = [SimpleNamespace(name=name, kind="builtin", path=None, scale=4, architecture="", usable=True,
                               reason="") for name in names]

    def find(name: str, field: str = "upscaler_1") -> Any:
        found = [entry for entry in entries if entry.name.lower() == name.strip().lower()]
        if not found:
            raise RequestError(field, name, f"must be one of: {', '.join(names)}")
        return found[0]

    def upscale(image: Any, name: str, width: int, height: int, control: Any = None, on_progress: Any = None) -> Any:
        method = Image.Resampling.NEAREST if name == "Nearest" else Image.Resampling.LANCZOS
        return image.resize((width, height), method)

    engine = api.services.engine
    monkeypatch.setattr(engine, "upscaler_set", lambda: SimpleNamespace(find=find, entries=lambda: entries),
                        raising=False)
    monkeypatch.setattr(engine, "upscalers", lambda refresh=False: entries, raising=False)
    monkeypatch.setattr(engine, "upscale", upscale, raising=False)


def test_single_image_scale_by_keeps_the_source_parameters_and_adds_postprocessing(client: httpx.Client,
                                                                                  api: Server) -> None:
    before = api.services.store.count()
    response = client.post("/sdapi/v1/extra-single-image", json={
        "image": "data:image/png;base64," + _png(), "upscaling_resize": 2, "upscaler_1": "Lanczos"})
    assert response.status_code == 200, response.text
    body = response.json()
    image = decode_png(body["image"])
    assert image.size == (96, 64)
    assert image.info["parameters"] == SOURCE_PARAMETERS
    assert image.info["postprocessing"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    assert body["html_info"] == "<p>Postprocess upscale by: 2, Postprocess upscaler: Lanczos</p>"
    assert body["warnings"] == []
    assert api.services.store.count() == before  # A1111's API does not save Extras images


def test_scale_to_with_crop_gives_exactly_the_box(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/extra-single-image", json={
        "image": _png((40, 20)), "resize_mode": 1, "upscaling_resize_w": 64, "upscaling_resize_h": 64,
        "upscaling_crop": True, "upscaler_1": "Nearest"})
    assert response.status_code == 200, response.text
    image = decode_png(response.json()["image"])
    assert image.size == (64, 64)
    assert "Postprocess crop to: 64x64" in image.info["postprocessing"]


def test_upscaler_1_none_returns_the_picture_unchanged(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/extra-single-image", json={"image": _png(parameters=None)})
    assert response.status_code == 200, response.text
    image = decode_png(response.json()["image"])
    assert image.size == (48, 32) and "postprocessing" not in image.info
    assert response.json()["html_info"] == "<p></p>"


def test_face_restoration_is_named_in_warnings_never_silently(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/extra-single-image", json={
        "image": _png(), "upscaler_1": "Lanczos", "gfpgan_visibility": 0.5, "codeformer_visibility": 0,
        "upscale_first": True})
    assert response.status_code == 200, response.text
    warnings = response.json()["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("gfpgan_visibility")


def test_batch_upscales_every_image_with_upscaler_2_blended(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/extra-batch-images", json={
        "imageList": [{"data": _png((16, 16), (255, 0, 0)), "name": "a.png"},
                      {"data": _png((24, 16), (0, 0, 255), parameters=None), "name": "b.png"}],
        "upscaling_resize": 3, "upscaler_1": "Lanczos", "upscaler_2": "Nearest",
        "extras_upscaler_2_visibility": 0.5})
    assert response.status_code == 200, response.text
    body = response.json()
    images = [decode_png(data) for data in body["images"]]
    assert [image.size for image in images] == [(48, 48), (72, 48)]
    assert images[0].info["parameters"] == SOURCE_PARAMETERS and "parameters" not in images[1].info
    assert images[1].info["postprocessing"].endswith("Postprocess upscaler: Lanczos, Postprocess upscaler 2: Nearest")
    assert body["html_info"].startswith("<p>Postprocess upscale by: 3")


def test_the_upscaler_lists_are_a1111s_shapes(client: httpx.Client) -> None:
    upscalers = client.get("/sdapi/v1/upscalers").json()
    assert [entry["name"] for entry in upscalers[:3]] == ["None", "Lanczos", "Nearest"]
    assert set(upscalers[0]) >= {"name", "model_name", "model_path", "model_url", "scale"}
    modes = client.get("/sdapi/v1/latent-upscale-modes").json()
    assert [mode["name"] for mode in modes] == ["Latent", "Latent (antialiased)", "Latent (bicubic)",
                                                "Latent (bicubic antialiased)", "Latent (nearest)",
                                                "Latent (nearest-exact)"]


@pytest.mark.parametrize(("route", "fields", "field"), [
    ("/sdapi/v1/extra-single-image", {"upscaling_resize": 0, "upscaler_1": "Lanczos"}, "upscaling_resize"),
    ("/sdapi/v1/extra-single-image", {"upscaling_resize": 20, "upscaler_1": "Lanczos"}, "upscaling_resize"),
    ("/sdapi/v1/extra-single-image", {"upscaler_1": "4x-NoSuchModel"}, "upscaler_1"),
    ("/sdapi/v1/extra-single-image", {"upscaler_1": "Lanczos", "upscaler_2": "Latent"}, "upscaler_2"),
    ("/sdapi/v1/extra-single-image", {"resize_mode": 5}, "resize_mode"),
    ("/sdapi/v1/extra-single-image", {"resize_mode": 1, "upscaling_resize_w": 9000}, "upscaling_resize_w"),
    ("/sdapi/v1/extra-single-image", {"extras_upscaler_2_visibility": 2}, "extras_upscaler_2_visibility"),
    ("/sdapi/v1/extra-single-image", {"image": "not base64!"}, "image"),
    ("/sdapi/v1/extra-single-image", {"image": ""}, "image"),
    ("/sdapi/v1/extra-batch-images", {"imageList": []}, "imageList"),
    ("/sdapi/v1/extra-batch-images", {"imageList": [{"data": "%%%", "name": "x"}]}, "imageList"),
])
def test_bad_values_are_422_naming_the_field(client: httpx.Client, route: str, fields: dict[str, Any],
                                             field: str) -> None:
    body: dict[str, Any] = {"image": _png()} if route.endswith("single-image") else \
        {"imageList": [{"data": _png(), "name": "a.png"}]}
    response = client.post(route, json={**body, **fields})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(field), response.json()
    if fields.get("upscaler_1") == "4x-NoSuchModel":
        assert "Lanczos" in response.json()["detail"]  # the known names are listed
