"""What a generation form is filled with from an image's parameters text.

Every tab with a generation form (txt2img now, img2img next) needs the same answer, so it lives here as plain
values (no gradio): the tabs turn them into component updates. Importing this module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class InfotextFill:
    """What an A1111 parameters text sets: request fields, and the local model it names (when it is here)."""

    fields: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # the name of the local model the text names; None: keep the current one
    missing_model: str | None = None  # the model the text names when it is not here, for a message


def fill_from_infotext(engine: Any, text: str) -> InfotextFill:
    """The request fields and the model an A1111 parameters text names; fields it does not name are left out.

    The model is looked up by its hash first, then by name. A hash lookup may hash every model file that has
    no cached hash (gigabytes each): call this from a worker thread, never on an event loop.
    """
    from sdlocal.engine.infotext import infotext_to_request_fields, parse_infotext

    params = parse_infotext(text or "")
    values = infotext_to_request_fields(params)
    wanted = values.pop("model", None) or params.get("Model")
    fill = InfotextFill(fields=values)
    for key in (params.get("Model hash"), wanted):
        entry = _find(engine, key) if key else None
        if entry is not None and entry.supported:
            fill.model = entry.name
            return fill
    fill.missing_model = wanted or None
    return fill


def _find(engine: Any, name: str) -> Any:
    try:
        return engine.find_model(name)
    except Exception:  # noqa: BLE001 - unknown names are simply not found
        return None
