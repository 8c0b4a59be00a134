"""``GET /sdapi/v1/embeddings`` and ``POST /sdapi/v1/refresh-embeddings`` in A1111's shape: ``loaded`` and
``skipped`` by trigger name, each with ``step``, ``sd_checkpoint``, ``sd_checkpoint_name``, ``shape`` and
``vectors`` (plus sdlocal's ``reason``). The test server's tiny models have 32-wide text encoders.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sdlocal.engine.networks.embeddings import NO_MODEL
from tests.api.conftest import Server, start_server
from tests.engine.networks import files

A1111_KEYS = {"step", "sd_checkpoint", "sd_checkpoint_name", "shape", "vectors"}


@pytest.fixture
def own(api: Server) -> Iterator[Path]:
    """The server's ``<data dir>/embeddings``, emptied (and rescanned) after each test."""
    folder = api.data_dir / "embeddings"
    yield folder
    for path in sorted(folder.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
    api.services.engine.embeddings(refresh=True)


def test_the_list_in_a1111s_shape(client: httpx.Client, own: Path) -> None:
    files.a1111_pt(own / "tiny.pt", files.vectors(3, 32), step=900, sd_checkpoint="abcdef12",
                   sd_checkpoint_name="tiny-a")
    files.emb_params(own / "sub" / "EasyNegative.safetensors", files.vectors(2, 768))
    files.garbage(own / "broken.safetensors")
    refreshed = client.post("/sdapi/v1/refresh-embeddings")
    assert refreshed.status_code == 200
    body = client.get("/sdapi/v1/embeddings").json()
    assert body == refreshed.json()
    assert body["loaded"] == {"tiny": {"step": 900, "sd_checkpoint": "abcdef12", "sd_checkpoint_name": "tiny-a",
                                       "shape": 32, "vectors": 3, "reason": ""}}
    easy, broken = body["skipped"]["EasyNegative"], body["skipped"]["broken"]
    assert A1111_KEYS <= set(easy) and (easy["shape"], easy["vectors"], easy["step"]) == (768, 2, None)
    assert easy["reason"] == "made for SD 1.x (768-wide vectors); the loaded model is a model with 32-wide vectors"
    assert (broken["shape"], broken["vectors"]) == (0, 0) and "not a safetensors file" in broken["reason"]


def test_refresh_finds_new_files_and_drops_deleted_ones(client: httpx.Client, own: Path) -> None:
    first = files.emb_params(own / "first.safetensors", files.vectors(1, 32))
    assert list(client.post("/sdapi/v1/refresh-embeddings").json()["loaded"]) == ["first"]
    first.unlink()
    files.emb_params(own / "second.safetensors", files.vectors(1, 32))
    assert list(client.get("/sdapi/v1/embeddings").json()["loaded"]) == ["first"]  # kept until a refresh
    assert list(client.post("/sdapi/v1/refresh-embeddings").json()["loaded"]) == ["second"]


def test_a_folder_that_cannot_be_listed_is_a_skipped_entry_not_an_error(client: httpx.Client, own: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    files.emb_params(own / "locked" / "inside.safetensors", files.vectors(1, 32))
    files.lock_folder(monkeypatch, "locked")
    response = client.post("/sdapi/v1/refresh-embeddings")
    assert response.status_code == 200
    (entry,) = response.json()["skipped"].values()
    assert "cannot be listed (PermissionError" in entry["reason"] and response.json()["loaded"] == {}


def test_the_webuiapi_client_reads_it(api: Server, own: Path, client: httpx.Client) -> None:
    import webuiapi

    files.single_tensor(own / "cat-toy.bin", files.vectors(1, 32))
    client.post("/sdapi/v1/refresh-embeddings")
    listed = webuiapi.WebUIApi(baseurl=f"{api.url}/sdapi/v1").get_embeddings()
    assert listed["loaded"]["cat-toy"]["vectors"] == 1 and listed["skipped"] == {}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The API alone behind --api-auth, with no model at all."""
    yield from start_server(tmp_path_factory.mktemp("sdlocal-embeddings-auth"), [], nowebui=True, api=True,
                            api_auth=[("alice", "s3cret")])


def test_the_routes_need_the_api_login_and_without_a_model_everything_is_skipped(guarded: Server) -> None:
    files.emb_params(guarded.data_dir / "embeddings" / "sd15.safetensors", files.vectors(1, 768))
    with guarded.client() as http:
        assert http.get("/sdapi/v1/embeddings").status_code == 401
        assert http.post("/sdapi/v1/refresh-embeddings").status_code == 401
        body = http.post("/sdapi/v1/refresh-embeddings", auth=("alice", "s3cret")).json()
    assert body["loaded"] == {} and body["skipped"]["sd15"]["reason"] == NO_MODEL
