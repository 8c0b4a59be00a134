"""``/sdapi/v1`` routes for the files that change what a model computes: textual-inversion embeddings (A1111's
``GET /embeddings`` and ``POST /refresh-embeddings``) and VAEs (``GET /sd-vae``, ``POST /refresh-vae``).

Discovery never raises (a file or folder it cannot use is a skipped entry with its reason), so neither route
answers 5xx for anything in the embeddings folders.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter

from sdlocal.api.models import EmbeddingsResponse, SdVae


def embedding_record(embedding: Any) -> dict[str, Any]:
    """A1111's record: training notes, total width and vector count; ``reason`` is sdlocal's addition."""
    return {"step": embedding.step, "sd_checkpoint": embedding.sd_checkpoint,
            "sd_checkpoint_name": embedding.sd_checkpoint_name, "shape": embedding.shape,
            "vectors": embedding.vectors, "reason": embedding.reason}


def embeddings_body(engine: Any, refresh: bool = False) -> dict[str, Any]:
    loaded, skipped = engine.embeddings(refresh=refresh)
    return {"loaded": {name: embedding_record(e) for name, e in loaded.items()},
            "skipped": {name: embedding_record(e) for name, e in skipped.items()}}


def vaes_body(engine: Any, refresh: bool = False) -> list[dict[str, Any]]:
    """A1111's VAE list (``model_name``, ``filename``) with sdlocal's ``family`` and ``reason``; unusable ones too,
    so a client learns why a file it put there is not offered."""
    return [{"model_name": vae.name, "filename": str(vae.path), "family": vae.family, "reason": vae.reason}
            for vae in engine.vaes(refresh=refresh)]


def add_network_routes(router: APIRouter, engine: Any) -> None:
    """Add the embeddings and VAE routes to the ``/sdapi/v1`` router (so they share its login)."""

    @router.get("/sd-vae", response_model=list[SdVae],
                summary="VAEs found in the VAE folders: the names sd_vae takes; unusable ones with the reason")
    def sd_vae() -> list[dict[str, Any]]:
        return vaes_body(engine)

    @router.post("/refresh-vae", response_model=list[SdVae],
                 summary="Scan the VAE folders again (only new and changed files are read); the new list")
    async def refresh_vae() -> list[dict[str, Any]]:
        return await anyio.to_thread.run_sync(vaes_body, engine, True)

    @router.get("/embeddings", response_model=EmbeddingsResponse,
                summary="Textual-inversion embeddings: the ones the current model uses, and the skipped ones with why")
    def embeddings() -> dict[str, Any]:
        return embeddings_body(engine)  # a plain def: FastAPI runs it on a worker thread (the first call scans)

    @router.post("/refresh-embeddings", response_model=EmbeddingsResponse,
                 summary="Scan the embeddings folders again (only new and changed files are read); the new list")
    async def refresh_embeddings() -> dict[str, Any]:
        return await anyio.to_thread.run_sync(embeddings_body, engine, True)
