"""``GET /sdapi/v1/loras`` and ``POST /sdapi/v1/refresh-loras`` in A1111's shape: a list of ``name``, ``alias``,
``path`` and ``metadata`` (the kohya notes, JSON values parsed), plus sdlocal's ``format``, ``family``, ``rank``,
``trigger_words``, ``preview`` and ``reason``. Nothing in the LoRA folders makes either route answer 5xx.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Server, start_server
from tests.engine.networks import files
from tests.engine.networks import lora_files as lf

A1111_KEYS = ["name", "alias", "path", "metadata"]
SDLOCAL_KEYS = ["format", "family", "rank", "trigger_words", "preview", "reason"]


@pytest.fixture
def own(api: Server) -> Iterator[Path]:
    """The server's ``<data dir>/models/Lora``, emptied (and rescanned) after each test."""
    folder = api.data_dir / "models" / "Lora"
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    for path in sorted(folder.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
    api.services.engine.loras(refresh=True)


def strict_json(response: httpx.Response) -> Any:
    """The body as strict JSON (NaN and Infinity refused, as browsers and most clients do)."""
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(response.text, parse_constant=refuse)


def test_the_list_in_a1111s_shape(client: httpx.Client, own: Path) -> None:
    tags = {"10_pixel": {"pixel art": 12, "1girl": 3}}
    lf.save(own / "pixel.safetensors", lf.lora(lf.UNET_K, rank=16, width=768), lf.lora(lf.TE_Q, width=768),
            metadata={"ss_output_name": "PixelArt", "ss_network_dim": "16", "ss_tag_frequency": json.dumps(tags)})
    (own / "pixel.preview.png").write_bytes(b"image")
    lf.save(own / "styles" / "xl-hada.safetensors", lf.loha(lf.SGM_K, rank=8, width=2048))
    files.garbage(own / "broken.safetensors")
    refreshed = client.post("/sdapi/v1/refresh-loras")
    assert refreshed.status_code == 200
    body = client.get("/sdapi/v1/loras").json()
    assert body == refreshed.json()
    assert [list(record)[:4] for record in body] == [A1111_KEYS] * 3
    broken, pixel, hada = body
    assert pixel == {"name": "pixel", "alias": "PixelArt", "path": str(own / "pixel.safetensors"),
                     "metadata": {"ss_output_name": "PixelArt", "ss_network_dim": "16", "ss_tag_frequency": tags},
                     "format": "lora", "family": "sd1", "rank": 16, "trigger_words": ["pixel art", "1girl"],
                     "preview": str(own / "pixel.preview.png"), "reason": ""}
    assert (hada["name"], hada["alias"], hada["format"], hada["family"], hada["rank"], hada["preview"]) == (
        "styles/xl-hada", "xl-hada", "loha", "sdxl", 8, None)
    assert (broken["name"], broken["format"], broken["family"], broken["rank"], broken["metadata"]) == (
        "broken", "", None, None, {})
    assert "not a safetensors file" in broken["reason"]


def test_refresh_finds_new_files_and_drops_deleted_ones(client: httpx.Client, own: Path) -> None:
    first = lf.small(own / "first.safetensors")
    assert [r["name"] for r in client.post("/sdapi/v1/refresh-loras").json()] == ["first"]
    first.unlink()
    lf.small(own / "second.safetensors")
    assert [r["name"] for r in client.get("/sdapi/v1/loras").json()] == ["first"]  # kept until a refresh
    assert [r["name"] for r in client.post("/sdapi/v1/refresh-loras").json()] == ["second"]


def test_no_folder_content_gives_a_server_error(client: httpx.Client, own: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    files.header_only(own / "nan.safetensors", json.dumps({
        "__metadata__": {"ss_output_name": "nan", "ss_bucket_info": "[NaN, Infinity]", "ss_epoch": 3},
        "m.lora_down.weight": {"dtype": "F16", "shape": [4, 32], "data_offsets": [0, 0]},
        "m.lora_up.weight": {"dtype": "F16", "shape": [32, 4], "data_offsets": [0, 0]}}).encode())
    files.header_only(own / "odd.safetensors", b'{"__metadata__": "not a dict", "x": {"shape": "?"}}')
    (own / "empty.pt").write_bytes(b"")
    files.checkpoint(own / "model.safetensors")
    lf.small(own / "locked" / "inside.safetensors")
    files.lock_folder(monkeypatch, "locked")
    response = client.post("/sdapi/v1/refresh-loras")
    assert response.status_code == 200
    by_name = {record["name"]: record for record in strict_json(response)}
    assert by_name["nan"]["metadata"] == {"ss_output_name": "nan", "ss_bucket_info": "[NaN, Infinity]",
                                          "ss_epoch": "3"} and by_name["nan"]["reason"] == ""
    assert "damaged" in by_name["odd"]["reason"] and "empty" in by_name["empty"]["reason"]
    assert "put it in models/Stable-diffusion" in by_name["model"]["reason"]
    assert "cannot be listed (PermissionError" in by_name[str(own / "locked")]["reason"]


def test_the_webuiapi_client_reads_it(api: Server, own: Path, client: httpx.Client) -> None:
    import webuiapi

    lf.small(own / "detail.safetensors", metadata={"ss_output_name": "add_detail"})
    client.post("/sdapi/v1/refresh-loras")
    listed = webuiapi.WebUIApi(baseurl=f"{api.url}/sdapi/v1").get_loras()
    assert [(r["name"], r["alias"], r["path"]) for r in listed] == [("detail", "add_detail",
                                                                     str(own / "detail.safetensors"))]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The API alone behind --api-auth, with no model at all."""
    yield from start_server(tmp_path_factory.mktemp("sdlocal-loras-auth"), [], nowebui=True, api=True,
                            api_auth=[("alice", "s3cret")])


def test_the_routes_need_the_api_login_and_work_without_a_model(guarded: Server) -> None:
    lf.small(guarded.data_dir / "models" / "Lora" / "sd15.safetensors")
    with guarded.client() as http:
        assert http.get("/sdapi/v1/loras").status_code == 401
        assert http.post("/sdapi/v1/refresh-loras").status_code == 401
        body = http.post("/sdapi/v1/refresh-loras", auth=("alice", "s3cret")).json()
    assert [(r["name"], r["format"], r["reason"]) for r in body] == [("sd15", "lora", "")]
