"""Hostile input never breaks the API: every answer to a bad body is a 4xx with a valid (strict) JSON body.

Python's JSON reader accepts ``NaN`` and ``Infinity``, which strict JSON cannot carry, so a handler that echoes
the input must not write them back. The fuzz cases come from a seeded generator: the same cases every run.
"""

from __future__ import annotations

import base64
import io
import json
import random
from dataclasses import replace
from typing import Any

import httpx
import pytest
from PIL import Image

from sdlocal.api.models import ExtrasBatchImagesRequest, ExtrasSingleImageRequest, Img2ImgRequest, Txt2ImgRequest
from tests.api.conftest import Server

CASES_PER_ROUTE = 150

NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-400", "0", "-1", "3.5", "18446744073709551616",
           "9" * 400, "-" + "9" * 4000, "9" * 5000]
SCALARS = NUMBERS + ['"x"', '""', "null", "true", "false", '"\\u0000"', '"\\ud800"', '"' + "é" * 50 + '"',
                     '"' + "a" * 20000 + '"', '"NaN"', '"-1"', '"64"']
ROUTES = {
    "/sdapi/v1/txt2img": sorted(Txt2ImgRequest.model_fields) + ["unknown_field"],
    "/sdapi/v1/img2img": sorted(Img2ImgRequest.model_fields) + ["unknown_field"],
    "/sdapi/v1/options": ["sd_model_checkpoint", "sd_checkpoint_hash", "CLIP_stop_at_last_layers",
                          "token_merging_ratio", "emphasis", "sd_vae", "samples_save", "unknown_option"],
    "/sdapi/v1/png-info": ["image", "other"],
    "/sdapi/v1/extra-single-image": sorted(ExtrasSingleImageRequest.model_fields) + ["unknown_field"],
    "/sdapi/v1/extra-batch-images": sorted(ExtrasBatchImagesRequest.model_fields) + ["unknown_field"],
}
SAFE_TXT2IMG = {"prompt": "fuzz", "steps": 1, "width": 64, "height": 64, "send_images": False}
# The X/Y/Z plot's 18 arguments for a 1-cell plot over steps, and values a careless client might put anywhere
# (axis indices past the end, ranges that parse badly, quotes left open, the dropdowns' lists).
SCRIPT_CASES = 60
SAFE_XYZ_ARGS = [4, "1", [], 0, "", [], 0, "", [], True, False, False, False, False, False, False, 0, False]
SCRIPT_VALUES = ['"1-3"', '"1-10 (+0)"', '"1-10 [0]"', '"5-1 [2]"', '"1, 500"', '"\\"a, b"', '"1.5-2 (+0.25)"',
                 '"Euler, nope"', "43", "40", "-1", '"Nothing"', '"Sigma Churn"', '["Euler", 1]', '"fuzz, fizz"',
                 '"64x64, 8x8"', '"true"', '"maybe"', "2.5", "501"]
# fuzzed with broken images more often than not
IMAGE_FIELDS = ("image", "init_images", "mask", "latent_mask", "imageList")


def _png(size: tuple[int, int] = (64, 64)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 200)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


SAFE_IMG2IMG = {**SAFE_TXT2IMG, "init_images": [_png()]}
SAFE_EXTRAS = {"image": _png((16, 16)), "upscaler_1": "Lanczos", "upscaling_resize": 2}
SAFE_BATCH = {"imageList": [{"data": _png((16, 16)), "name": "a.png"}], "upscaler_1": "Lanczos"}


def strict_json(text: str) -> Any:
    """Parse as strict JSON: NaN and Infinity are errors here, as in browsers and most clients."""
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _images(rng: random.Random) -> list[str]:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    png = buffer.getvalue()
    raw = [png[: rng.randrange(8, len(png))], b"\x89PNG\r\n\x1a\n" + rng.randbytes(64), b"GIF89a" + rng.randbytes(40),
           rng.randbytes(rng.randrange(0, 200)), png[:33] + rng.randbytes(80)]
    texts = [base64.b64encode(item).decode() for item in raw]
    return [f'"{text}"' for text in texts] + ['"data:image/png;base64,' + texts[1] + '"', '"data:,"', '"%%%"']


def _value(rng: random.Random, depth: int = 0) -> str:
    """One JSON value as text (so NaN/Infinity literals can be written), often nested junk."""
    roll = rng.random()
    if depth > 3 or roll < 0.55:
        return rng.choice(SCALARS)
    if roll < 0.75:
        return "[" + ",".join(_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))) + "]"
    if roll < 0.8:
        return "[" * 300 + "]" * 300
    keys = rng.sample(["a", "sd_model_checkpoint", "CLIP_stop_at_last_layers", "token_merging_ratio", ""], 2)
    return "{" + ",".join(f"{json.dumps(key)}:{_value(rng, depth + 1)}" for key in keys) + "}"


def fuzz_bodies(route: str, rng: random.Random) -> list[bytes]:
    """``CASES_PER_ROUTE`` raw bodies: mostly objects with hostile fields, plus non-objects and broken bytes."""
    fields = ROUTES[route]
    base = {"txt2img": SAFE_TXT2IMG, "img2img": SAFE_IMG2IMG, "extra-single-image": SAFE_EXTRAS,
            "extra-batch-images": SAFE_BATCH}.get(route.rsplit("/", 1)[-1], {})
    images = _images(rng)
    bodies: list[bytes] = [b"", b"{", b"[]", b"null", b"NaN", b'{"prompt": "\xff\xfe"}', b"\xff" * 10,
                           b'"' + b"a" * 1000 + b'"', b"{" * 5000 + b"}" * 5000]
    while len(bodies) < CASES_PER_ROUTE:
        roll = rng.random()
        if roll < 0.1:
            bodies.append(_value(rng).encode())
            continue
        values = {key: json.dumps(value) for key, value in base.items()}
        for key in rng.sample(fields, rng.randrange(1, min(5, len(fields)) + 1)):
            value = rng.choice(images) if key in IMAGE_FIELDS and rng.random() < 0.6 else _value(rng)
            if key == "init_images" and value in images:
                value = f"[{value}]"
            elif key == "imageList" and value in images:
                value = f'[{{"data": {value}, "name": "f.png"}}]'
            values[key] = value
        text = "{" + ",".join(f"{json.dumps(key)}:{value}" for key, value in values.items()) + "}"
        if roll < 0.15:
            text = text[: rng.randrange(0, len(text))]
        bodies.append(text.encode())
    return bodies


@pytest.fixture
def quick_generation(api: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request that passes validation runs 1 step at 64x64, whatever it asked for (the fuzz tests the HTTP
    layer, not the sampler); validation at submit still sees the request as sent."""
    engine = api.services.engine
    real = engine.generate

    def quick(request: Any, on_progress: Any = None, control: Any = None) -> Any:
        small = replace(request, steps=1, width=64, height=64, batch_size=1, batch_count=1)
        return real(small, on_progress=on_progress, control=control)

    monkeypatch.setattr(engine, "generate", quick)


def script_bodies(route: str, rng: random.Random) -> list[bytes]:
    """``SCRIPT_CASES`` bodies running the X/Y/Z plot (a 1-cell plot over steps), 1-4 of its 18 positional
    arguments replaced by junk, by values of the wrong kind for the axis, or by too many arguments."""
    base = SAFE_IMG2IMG if route.endswith("img2img") else SAFE_TXT2IMG
    bodies = []
    for _ in range(SCRIPT_CASES):
        args = [json.dumps(value) for value in SAFE_XYZ_ARGS]
        for position in rng.sample(range(len(args)), rng.randrange(1, 5)):
            args[position] = _value(rng) if rng.random() < 0.6 else rng.choice(SCRIPT_VALUES)
        if rng.random() < 0.05:
            args.append("true")
        fields = [f"{json.dumps(key)}:{json.dumps(value)}" for key, value in base.items()]
        text = "{" + ",".join([*fields, '"script_name":"x/y/z plot"', f'"script_args":[{",".join(args)}]']) + "}"
        bodies.append(text.encode())
    return bodies


def check_answers(http: httpx.Client, route: str, bodies: list[bytes], rng: random.Random) -> None:
    """Every body answered with strict JSON, never a 5xx, a 4xx with a ``detail``; the server still healthy."""
    failures: list[str] = []
    for body in bodies:
        content_type = "text/plain" if rng.random() < 0.05 else "application/json"
        response = http.post(route, content=body, headers={"Content-Type": content_type})
        try:
            parsed = strict_json(response.text)
            assert response.headers["content-type"].startswith("application/json")
            assert response.status_code < 500
            if response.status_code >= 400:
                assert isinstance(parsed, dict) and parsed.get("detail"), parsed
        except (AssertionError, ValueError) as exc:
            failures.append(f"{response.status_code} for {body[:120]!r}: {exc}; {response.text[:200]}")
    assert not failures, f"{len(failures)} bad answers, first: " + "\n".join(failures[:5])
    assert http.get("/health").status_code == 200


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_hostile_bodies_get_4xx_with_strict_json_and_the_server_goes_on(route: str, api: Server,
                                                                        quick_generation: None) -> None:
    rng = random.Random(f"sdlocal-fuzz-{route}")
    with api.client(timeout=60) as http:
        check_answers(http, route, fuzz_bodies(route, rng), rng)
    with api.client() as http:  # real generation again, after the fuzz
        after = http.post("/sdapi/v1/txt2img", json={**SAFE_TXT2IMG, "send_images": True, "steps": 2})
        assert after.status_code == 200 and len(after.json()["images"]) == 1


@pytest.mark.parametrize("route", ["/sdapi/v1/img2img", "/sdapi/v1/txt2img"])
def test_hostile_script_args_get_4xx_with_strict_json(route: str, api: Server, quick_generation: None) -> None:
    rng = random.Random(f"sdlocal-fuzz-script-{route}")
    bodies = script_bodies(route, rng)
    with api.client(timeout=120) as http:
        check_answers(http, route, bodies, rng)
        for listing in ("/sdapi/v1/scripts", "/sdapi/v1/script-info"):
            assert http.get(listing).status_code == 200
        base = SAFE_IMG2IMG if route.endswith("img2img") else SAFE_TXT2IMG
        plain = http.post(route, json={**base, "send_images": True, "script_name": "x/y/z plot",
                                       "script_args": SAFE_XYZ_ARGS})
        assert plain.status_code == 200 and len(plain.json()["images"]) == 1  # the 1-cell plot: its grid


@pytest.mark.parametrize(("route", "text", "field"), [
    ("/sdapi/v1/txt2img", '{"cfg_scale": NaN, "steps": 1}', "cfg_scale"),
    ("/sdapi/v1/txt2img", '{"width": -Infinity}', "width"),
    ("/sdapi/v1/txt2img", '{"seed": -Infinity}', "seed"),
    ("/sdapi/v1/txt2img", '{"denoising_strength": Infinity}', "denoising_strength"),
    ("/sdapi/v1/txt2img", '{"override_settings": {"token_merging_ratio": NaN}}',
     "override_settings.token_merging_ratio"),
    ("/sdapi/v1/txt2img", '{"override_settings": {"CLIP_stop_at_last_layers": 1e999}}',
     "override_settings.CLIP_stop_at_last_layers"),
    ("/sdapi/v1/txt2img", '{"script_args": [[NaN]]}', "script_args"),
    ("/sdapi/v1/txt2img", '{"override_settings": {"token_merging_ratio": ' + "9" * 400 + "}}",
     "override_settings.token_merging_ratio"),
    ("/sdapi/v1/img2img", '{"denoising_strength": NaN, "init_images": []}', "denoising_strength"),
    ("/sdapi/v1/img2img", '{"mask_blur": Infinity}', "mask_blur"),
    ("/sdapi/v1/img2img", '{"s_churn": -Infinity}', "s_churn"),
    ("/sdapi/v1/img2img", '{"override_settings": {"inpainting_mask_weight": NaN}}',
     "override_settings.inpainting_mask_weight"),
    ("/sdapi/v1/options", '{"CLIP_stop_at_last_layers": Infinity}', "CLIP_stop_at_last_layers"),
    ("/sdapi/v1/options", '{"token_merging_ratio": NaN}', "token_merging_ratio"),
    ("/sdapi/v1/options", '{"emphasis": NaN}', "emphasis"),
    ("/sdapi/v1/txt2img", '{"override_settings": {"emphasis": -Infinity}}', "override_settings.emphasis"),
    ("/sdapi/v1/txt2img", '{"styles": ["x", NaN]}', "styles.1"),
    ("/sdapi/v1/extra-single-image", '{"upscaling_resize": NaN}', "upscaling_resize"),
    ("/sdapi/v1/extra-batch-images", '{"extras_upscaler_2_visibility": Infinity}', "extras_upscaler_2_visibility"),
])
def test_non_finite_numbers_are_422_naming_the_field(client: httpx.Client, route: str, text: str,
                                                     field: str) -> None:
    response = client.post(route, content=text, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    body = strict_json(response.text)
    assert body["field"] == field and body["detail"].startswith(field)
