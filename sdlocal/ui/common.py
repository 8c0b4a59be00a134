"""Pieces every tab shares: the form's field order, turning errors into messages, and the saved UI state.

Nothing here imports torch or diffusers: the UI module tree must import in the time gradio itself takes.
"""

from __future__ import annotations

import html
import json
import os
import secrets
from pathlib import Path
from typing import Any

from sdlocal.engine.request import EngineError, GenerationRequest, RequestError

# The Generate tab's request controls, in the order every event function receives and returns them.
FORM_FIELDS: tuple[str, ...] = (
    "prompt",
    "negative_prompt",
    "sampler",
    "schedule",
    "steps",
    "cfg_scale",
    "width",
    "height",
    "seed",
    "batch_count",
    "batch_size",
    "clip_skip",
    "token_merging_ratio",
    "vae_tiling",
)
DEFAULTS: dict[str, Any] = {name: getattr(GenerationRequest(), name) for name in FORM_FIELDS}
LABELS: dict[str, str] = {
    "prompt": "Prompt",
    "negative_prompt": "Negative prompt",
    "model": "Model",
    "sampler": "Sampler",
    "schedule": "Schedule type",
    "steps": "Steps",
    "cfg_scale": "CFG scale",
    "width": "Width",
    "height": "Height",
    "seed": "Seed",
    "batch_count": "Batch count",
    "batch_size": "Batch size",
    "clip_skip": "Clip skip",
    "token_merging_ratio": "Token merging",
    "vae_tiling": "VAE tiling",
}


def error_text(error: BaseException) -> str:
    """One plain sentence a user can act on, naming the control (by its label) where the error names a field."""
    if isinstance(error, RequestError):
        label = LABELS.get(error.field, error.field)
        return f"{label}: {error.value!r} is not allowed; {error.allowed}."
    if isinstance(error, EngineError):
        return f"{error.message} {error.hint}".strip()
    name = type(error).__name__
    if name == "QueueFullError":
        return f"The queue is full: {error}. Wait for the running jobs to finish, then try again."
    return f"{name}: {error}"


def error_box(message: str) -> str:
    return f'<div class="sd-error" role="alert">⚠ {html.escape(message)}</div>'


def coerce_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Gradio numbers arrive as floats; whole-number fields are made ints so the request and presets stay tidy."""
    out = dict(values)
    for name in ("steps", "width", "height", "seed", "batch_count", "batch_size", "clip_skip"):
        value = out.get(name)
        if isinstance(value, float) and value.is_integer():
            out[name] = int(value)
    return out


class UiState:
    """The last model and form values, kept in the settings' state file under the ``"ui"`` key.

    The file may hold other owners' keys, so it is read, merged and written back atomically (temporary file in
    the same folder, then ``os.replace``); a damaged file is ignored rather than stopping the app.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        ui = data.get("ui") if isinstance(data, dict) else None
        return ui if isinstance(ui, dict) else {}

    def save(self, ui: dict[str, Any]) -> None:
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                data = {}
        except (OSError, ValueError):
            data = {}
        data["ui"] = ui
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.parent / f".{self.path.name}.{secrets.token_hex(4)}.tmp"
        try:
            with open(temp, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2, default=str)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except OSError:
            temp.unlink(missing_ok=True)
