""""Send to img2img" and "Send to inpaint": how a tab hands an image (and its parameters) to the img2img tab.

No tab imports another: the img2img tab builds a ``SendTarget`` (the components a send fills and the function
that fills them), the app hands it to the tabs with images (Generate, Gallery, PNG Info), and each of them
connects its buttons with a ``pick`` function that says which image and which parameters text are meant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

TARGETS = ("img2img", "inpaint")
# pick(*inputs) -> (image file path or None, parameters text or "")
Pick = Callable[..., tuple[str | None, str]]


@dataclass
class SendTarget:
    """The img2img tab's side of a send: ``fill(path, target, text)`` returns updates for ``outputs``."""

    outputs: list[Any]
    fill: Callable[[str | None, str, str], list[Any]]
    # also(button, text_of, inputs): more the send fills from the parameters text (the Script section)
    also: Callable[[Any, Callable[..., str], list[Any]], None] | None = None

    def connect(self, button: Any, pick: Pick, inputs: list[Any], target: str) -> None:
        """Clicking ``button`` sends what ``pick`` picks from ``inputs`` to the img2img tab's ``target`` sub-tab."""
        if target not in TARGETS:
            raise ValueError(f"target: {target!r} is not one of {', '.join(TARGETS)}")

        def send(*values: Any) -> list[Any]:
            path, text = pick(*values)
            return self.fill(path, target, text or "")

        button.click(send, inputs=inputs, outputs=self.outputs, api_visibility="private")
        if self.also is not None:
            self.also(button, lambda *values: pick(*values)[1] or "", inputs)

    def keep(self) -> list[Any]:
        """Updates that change nothing (a send with no image)."""
        return [gr.update() for _ in self.outputs]


def result_pick(rows: list, index: int) -> tuple[str | None, str]:
    """The selected image of a tab's results (rows of (seed, infotext, path)) and its parameters."""
    if not rows:
        return None, ""
    seed, text, path = rows[min(max(int(index or 0), 0), len(rows) - 1)]
    return (path or None), text
