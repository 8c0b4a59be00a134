"""Styles and the emphasis option through A1111's API: ``styles`` on txt2img and img2img, ``GET /prompt-styles``,
and ``emphasis`` in ``/options`` and ``override_settings``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdlocal.api.models import Txt2ImgRequest
from sdlocal.api.translate import to_generation_request
from sdlocal.engine.request import RequestError
from tests.api.conftest import MODEL_A, Server, start_server
from tests.api.test_img2img import png_b64


@pytest.fixture(scope="module")
def styled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One tiny model; styles in the data dir and in an A1111 root given with --models-dir."""
    base = tmp_path_factory.mktemp("sdlocal-styles")
    root = base / "a1111"
    root.mkdir()
    (root / "styles.csv").write_text('name,prompt,negative_prompt\n"Root style","from the root, {prompt}",\n',
                                     encoding="utf-8")
    data = base / "data"
    data.mkdir()
    (data / "styles.csv").write_text("name,prompt,negative_prompt\nCinematic,\"film still of {prompt}, bokeh\","
                                     "cartoon\nDetailed,highly detailed,lowres\n", encoding="utf-8")
    yield from start_server(data, [MODEL_A], nowebui=True, api=True, models_dirs=[root])


@pytest.fixture
def client(styled: Server) -> Iterator[httpx.Client]:
    with styled.client() as http:
        yield http


def small(**values: Any) -> dict[str, Any]:
    body = {"prompt": "a cat", "negative_prompt": "ugly", "steps": 2, "width": 64, "height": 64, "seed": 7,
            "sampler_name": "Euler"}
    body.update(values)
    return body


def test_prompt_styles_lists_every_style_in_a1111s_shape(client: httpx.Client) -> None:
    response = client.get("/sdapi/v1/prompt-styles")
    assert response.status_code == 200, response.text
    assert response.json() == [
        {"name": "Cinematic", "prompt": "film still of {prompt}, bokeh", "negative_prompt": "cartoon"},
        {"name": "Detailed", "prompt": "highly detailed", "negative_prompt": "lowres"},
        {"name": "Root style", "prompt": "from the root, {prompt}", "negative_prompt": ""},
    ]


def test_txt2img_applies_the_styles_in_order_and_the_png_holds_the_expanded_prompt(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/txt2img", json=small(styles=["Cinematic", "Detailed"]))
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    expanded = "film still of a cat, bokeh, highly detailed"
    assert info["all_prompts"] == [expanded] and info["all_negative_prompts"] == ["ugly, cartoon, lowres"]
    assert info["prompt"] == "a cat" and info["styles"] == ["Cinematic", "Detailed"]
    assert info["infotexts"][0].startswith(expanded + "\nNegative prompt: ugly, cartoon, lowres\n")
    assert not any("styles" in warning for warning in info["warnings"])


def test_img2img_applies_styles_too(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/img2img", json=small(init_images=[png_b64()], styles=["Root style"]))
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["all_prompts"] == ["from the root, a cat"] and info["styles"] == ["Root style"]


@pytest.mark.parametrize("route", ["/sdapi/v1/txt2img", "/sdapi/v1/img2img"])
def test_an_unknown_style_is_a_422_naming_the_field_and_the_style(client: httpx.Client, route: str) -> None:
    extra = {"init_images": [png_b64()]} if route.endswith("img2img") else {}
    response = client.post(route, json=small(styles=["Cinematic", "No such style"], **extra))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "styles" and "'No such style'" in body["detail"]
    assert "must name a known style" in body["detail"] and "Cinematic" in body["detail"]


def test_the_webuiapi_client_gets_and_uses_styles(styled: Server) -> None:
    import webuiapi

    client = webuiapi.WebUIApi(baseurl=f"{styled.url}/sdapi/v1", sampler="Euler", steps=2)
    names = [style["name"] for style in client.get_prompt_styles()]
    assert names == ["Cinematic", "Detailed", "Root style"]
    result = client.txt2img(prompt="a dog", styles=["Detailed"], width=64, height=64, seed=3)
    assert result.info["all_prompts"] == ["a dog, highly detailed"]


# ----- emphasis --------------------------------------------------------------------------------------------------

def test_emphasis_is_an_option_saved_to_the_settings_and_checked(client: httpx.Client, styled: Server) -> None:
    from sdlocal.settings import read_settings_file

    assert client.get("/sdapi/v1/options").json()["emphasis"] == "Original"
    try:
        response = client.post("/sdapi/v1/options", json={"emphasis": "no norm"})
        assert response.status_code == 200, response.text
        assert response.json()["applied"] == {"emphasis": "No norm"}
        assert client.get("/sdapi/v1/options").json()["emphasis"] == "No norm"
        assert read_settings_file(styled.services.settings.settings_file)["emphasis"] == "No norm"
        bad = client.post("/sdapi/v1/options", json={"emphasis": "Loud"})
        assert bad.status_code == 422 and bad.json()["field"] == "emphasis" and "Original" in bad.json()["detail"]
    finally:
        client.post("/sdapi/v1/options", json={"emphasis": "Original"})


def test_the_option_follows_the_setting_the_ui_saves(client: httpx.Client, styled: Server) -> None:
    from sdlocal.ui.styles_events import save_emphasis

    try:
        save_emphasis(styled.services.settings, "Ignore")  # the UI's Emphasis dropdown
        assert client.get("/sdapi/v1/options").json()["emphasis"] == "Ignore"
    finally:
        save_emphasis(styled.services.settings, "Original")


def test_a_bad_emphasis_override_names_override_settings(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/txt2img", json=small(override_settings={"emphasis": "Loud"}))
    assert response.status_code == 422 and response.json()["field"] == "override_settings.emphasis"


def test_the_emphasis_used_is_written_in_the_infotext_as_a1111_does(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/txt2img", json=small(prompt="(a cat:1.3)",
                                                           override_settings={"emphasis": "No norm"}))
    assert response.status_code == 200, response.text
    assert "Emphasis: No norm" in json.loads(response.json()["info"])["infotexts"][0]
    plain = json.loads(client.post("/sdapi/v1/txt2img", json=small()).json()["info"])["infotexts"][0]
    assert "Emphasis" not in plain  # Original, the default, is not written


def test_the_request_carries_the_emphasis_override_else_the_option(tmp_path: Path) -> None:
    from sdlocal.styles import StyleLibrary

    body = Txt2ImgRequest(prompt="a cat")
    assert to_generation_request(body, {"emphasis": "Ignore"}, {}).emphasis == "Ignore"
    assert to_generation_request(body, {"emphasis": "Ignore"}, {"emphasis": "No norm"}).emphasis == "No norm"
    assert to_generation_request(body, {}, {}).emphasis == "Original"
    with pytest.raises(RequestError) as caught:
        to_generation_request(Txt2ImgRequest(styles=["x"]), {}, {}, StyleLibrary(tmp_path))
    assert caught.value.field == "styles"
