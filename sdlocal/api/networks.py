"""``/sdapi/v1`` routes for the files that change what a model computes: textual-inversion embeddings (A1111's
``GET /embeddings`` and ``POST /refresh-embeddings``), LoRAs (``GET /loras`` and ``POST /refresh-loras``) and VAEs
(``GET /sd-vae``, ``POST /refresh-vae``).

Discovery never raises (a file or folder it cannot use is an entry with its reason), so no route answers 5xx for
anything in the embeddings, LoRA or VAE folders.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter

from sdlocal.api.models import EmbeddingsResponse, LoraRecord, SdVae


def embedding_record(embedding: Any) -> dict[str, Any]:
    """A1111's record: training notes, total width and vector count; ``reason`` is sdlocal's addition."""
    return {"step": embedding.step, "sd_checkpoint": embedding.sd_checkpoint,
            "sd_checkpoint_name": embedding.sd_checkpoint_name, "shape": embedding.shape,
            "vectors": embedding.vectors, "reason": embedding.reason}


def embeddings_body(engine: Any, refresh: bool = False) -> dict[str, Any]:
    loaded, skipped = engine.embeddings(refresh=refresh)
    return {"loaded": {name: embedding_record(e) for name, e in loaded.items()},
            "skipped": {name: embedding_record(e) for name, e in skipped.items()}}


def lora_record(lora: Any) -> dict[str, Any]:
    """A1111's record (name, alias, path, metadata) and what sdlocal read from the file's tensors."""
    return {"name": lora.name, "alias": lora.alias, "path": str(lora.path), "metadata": lora.metadata,
            "format": lora.format, "family": lora.family, "rank": lora.rank, "trigger_words": list(lora.trigger_words),
            "preview": str(lora.preview) if lora.preview is not None else None, "reason": lora.reason}


def loras_body(engine: Any, refresh: bool = False) -> list[dict[str, Any]]:
    return [lora_record(lora) for lora in engine.loras(refresh=refresh)]


def vaes_body(engine: Any, refresh: bool = False) -> list[dict[str, Any]]:
    """A1111's VAE list (``model_name``, ``filename``) with sdlocal's ``family`` and ``reason``; unusable ones too,
    so a client learns why a file it put there is not offered."""
    return [{"model_name": vae.name, "filename": str(vae.path), "family": vae.family, "reason": vae.reason}
            for vae in engine.vaes(refresh=refresh)]


def add_network_routes(router: APIRouter, engine: Any) -> None:
    """Add the embeddings, LoRA and VAE routes to the ``/sdapi/v1`` router (so they share its login)."""

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

    @router.get("/loras", response_model=list[LoraRecord],
                summary="LoRA and LyCORIS files in the LoRA folders, usable or not (then with the reason)")
    def loras() -> list[dict[str, Any]]:
        return loras_body(engine)  # a plain def: FastAPI runs it on a worker thread (the first call scans)

    @router.post("/refresh-loras", response_model=list[LoraRecord],
                 summary="Scan the LoRA folders again (only new and changed files are read); the new list")
    async def refresh_loras() -> list[dict[str, Any]]:
        return await anyio.to_thread.run_sync(loras_body, engine, True)
