"""The upscaler names the Hires fix section and the Extras tab offer, from the engine's scan of upscaler models.

Both lists are filled as a page opens (a scan may read model files), on a worker thread; a scan that fails
leaves the built-in upscalers, with a log line, so the tab still works with Lanczos and Nearest.
"""

from __future__ import annotations

import logging
from typing import Any

from sdlocal.engine.upscalers import BUILTIN_UPSCALERS, LATENT_MODES


def upscaler_names(engine: Any) -> list[str]:
    """None, Lanczos, Nearest, then every usable upscaler model, in the engine's order.

    A model that cannot be used (an unknown architecture...) is left out here; the API's list shows it with
    the reason. The folders are scanned again (each file is read once per version), so a file dropped in
    shows after a page reload.
    """
    names = list(BUILTIN_UPSCALERS)
    try:
        entries = list(engine.upscalers(refresh=True))
    except Exception as exc:  # noqa: BLE001 - the built-in upscalers work without the scan
        logging.getLogger(__name__).warning("could not list the upscaler models: %s", exc)
        entries = []
    for entry in entries:
        if getattr(entry, "usable", True) and entry.name not in names:
            names.append(entry.name)
    return names


def hires_upscaler_names(engine: Any) -> list[str]:
    """Hires fix's list in A1111's order: the latent modes first, then ``upscaler_names``."""
    return [*LATENT_MODES, *upscaler_names(engine)]
