"""The result cache through the real API: a seeded request answered again from memory, the same PNG bytes, no job;
anything that changes pixels is a different entry; random seeds and saving rules as the module says."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import MODEL_A, MODEL_B, Server, start_server


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("sdlocal-cache"), [MODEL_A, MODEL_B], nowebui=True, api=True,
                            api_cache_mb=16)


def small(**extra: Any) -> dict[str, Any]:
    return {"prompt": "a red cube", "steps": 2, "width": 64, "height": 64, "seed": 1234, **extra}


def post(server: Server, body: dict[str, Any], route: str = "txt2img") -> tuple[list[str], dict[str, Any]]:
    with server.client() as client:
        response = client.post(f"/sdapi/v1/{route}", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    return data["images"], json.loads(data["info"])


def generated(server: Server) -> int:
    return server.services.queue.images_generated


def metric(server: Server, name: str, **labels: str) -> float:
    with server.client() as client:
        text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"{name} {labels} not in /metrics")


def test_a_repeated_seeded_request_is_answered_from_the_cache_with_the_same_bytes(cached: Server) -> None:
    body = small(prompt="cache: the first")
    hits = metric(cached, "sdlocal_result_cache_requests_total", result="hit")
    images, info = post(cached, body)
    made = generated(cached)
    assert info["cache"] == "miss"
    again, info_again = post(cached, dict(body))
    assert again == images  # the same base64 PNG bytes
    assert info_again["cache"] == "hit"
    assert info_again["all_seeds"] == info["all_seeds"] == [1234]
    assert generated(cached) == made  # nothing reached the queue
    assert metric(cached, "sdlocal_result_cache_requests_total", result="hit") == hits + 1
    assert metric(cached, "sdlocal_result_cache_entries") >= 1


def test_every_field_that_changes_pixels_is_its_own_entry(cached: Server) -> None:
    base = small(prompt="cache: fields")
    post(cached, base)
    for change in ({"seed": 1235}, {"steps": 3}, {"cfg_scale": 5.0}, {"prompt": "cache: other"},
                   {"negative_prompt": "blue"}, {"width": 128}, {"sampler_name": "DDIM"},
                   {"override_settings": {"sd_model_checkpoint": MODEL_B}}, {"batch_size": 2}):
        made = generated(cached)
        _, info = post(cached, {**base, **change})
        assert info["cache"] == "miss", change
        assert generated(cached) > made, change


def test_fields_that_do_not_change_pixels_share_the_entry(cached: Server) -> None:
    base = small(prompt="cache: same pixels")
    images, _ = post(cached, base)
    again, info = post(cached, {**base, "override_settings": {"not_an_option": 1}})
    assert info["cache"] == "hit" and again == images
    assert any("not_an_option" in note for note in info["warnings"])  # this body's own notes


def test_a_random_seed_is_never_cached(cached: Server) -> None:
    body = small(prompt="cache: random", seed=-1)
    made = generated(cached)
    _, first = post(cached, body)
    _, second = post(cached, body)
    assert "cache" not in first and "cache" not in second
    assert generated(cached) == made + 2


def test_img2img_is_keyed_by_the_init_images_pixels(cached: Server) -> None:
    def png(colour: tuple[int, int, int]) -> str:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    body = small(prompt="cache: img2img", init_images=[png((200, 10, 10))], denoising_strength=0.5)
    images, first = post(cached, body, "img2img")
    again, second = post(cached, body, "img2img")
    assert (first["cache"], second["cache"]) == ("miss", "hit") and again == images
    _, other = post(cached, {**body, "init_images": [png((10, 200, 10))]}, "img2img")
    assert other["cache"] == "miss"


def test_a_request_that_asks_to_save_runs_when_the_cached_one_was_not_saved(cached: Server) -> None:
    body = small(prompt="cache: saving")
    post(cached, body)  # save_images defaults to false, as in A1111
    made = generated(cached)
    _, info = post(cached, {**body, "save_images": True})
    assert info["cache"] == "miss" and generated(cached) == made + 1
    _, info = post(cached, {**body, "save_images": True})
    assert info["cache"] == "hit" and generated(cached) == made + 1


def test_keeping_overrides_as_options_is_never_served_from_the_cache(cached: Server) -> None:
    body = small(prompt="cache: keep", override_settings={"CLIP_stop_at_last_layers": 1},
                 override_settings_restore_afterwards=False)
    made = generated(cached)
    post(cached, body)
    _, info = post(cached, body)
    assert "cache" not in info and generated(cached) == made + 2
