"""A1111's ``/sdapi/v1/options``: the options sdlocal honours, what it reports read-only, and where they are kept.

Only options that change what sdlocal does are accepted; every other key a client sends (``samples_save``,
an extension's option...) is named back as ignored, with the reason, and logged: echoing it
would tell the client something happened that did not. What is honoured is saved, as A1111 saves its options:

- ``token_merging_ratio`` and ``emphasis`` are sdlocal settings: saved to ``settings.json``
  (``Settings.save_settings``).
- ``CLIP_stop_at_last_layers``, ``inpainting_mask_weight`` and ``sd_vae`` have no sdlocal setting (clip skip,
  the conditional mask weight and the VAE are per-request fields of the engine): they are saved to
  ``api-options.json`` in the data folder and read back at the next start. ``sd_vae`` is "Automatic", "None" or
  a name ``GET /sdapi/v1/sd-vae`` lists; an unknown name is refused (422 naming ``sd_vae``).
- ``sd_model_checkpoint`` loads that model (through the queue) and becomes the model loaded at the next start.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from sdlocal.engine.request import GenerationRequest, RequestError

log = logging.getLogger(__name__)

OPTIONS_FILE = "api-options.json"
WRITABLE = ("CLIP_stop_at_last_layers", "token_merging_ratio", "inpainting_mask_weight", "emphasis", "sd_vae")
_SETTINGS_KEYS = ("token_merging_ratio", "emphasis")  # options that are sdlocal settings (settings.json)
_FILE_KEYS = ("CLIP_stop_at_last_layers", "inpainting_mask_weight", "sd_vae")  # what api-options.json keeps
MODEL = "sd_model_checkpoint"
_ENGINE_NAMES = {"clip_skip": "CLIP_stop_at_last_layers", "token_merging_ratio": "token_merging_ratio",
                 "emphasis": "emphasis", "vae": "sd_vae"}


class ApiOptions:
    """The honoured options (in memory, saved on change) and the read-only facts ``GET /options`` reports."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self.lock = threading.Lock()
        self.values: dict[str, Any] = {"CLIP_stop_at_last_layers": 1, "inpainting_mask_weight": 1.0,
                                       "sd_vae": "Automatic",
                                       "token_merging_ratio": float(services.settings.token_merging_ratio),
                                       "emphasis": str(getattr(services.settings, "emphasis", "Original"))}
        self.values.update(self._load_file())

    @property
    def path(self) -> Path:
        return Path(self.services.settings.data_dir) / OPTIONS_FILE

    def _load_file(self) -> dict[str, Any]:
        """``api-options.json`` from an earlier run; a damaged file or value is logged and left out."""
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.path, exc)
            return {}
        kept = {key: saved[key] for key in _FILE_KEYS if isinstance(saved, dict) and key in saved}
        checked: dict[str, Any] = {}
        for key, value in kept.items():  # one by one: a VAE deleted since does not drop the clip skip
            try:
                checked.update(self.check({key: value}))
            except RequestError as exc:
                log.warning("ignoring %s in %s: %s", key, self.path, exc)
        return checked

    def read_only(self) -> dict[str, Any]:
        """Facts about this server in A1111's option names; a POST may repeat them but cannot change them."""
        settings, current = self.services.settings, self.services.engine.current_model
        return {
            "sd_checkpoint_hash": current.short_hash if current is not None else None,
            "outdir_txt2img_samples": str(self.services.store.root / "txt2img"),
            "samples_format": "png",
            "sd_checkpoints_limit": int(settings.max_loaded_models),
            "sdlocal_precision": settings.precision,
            "sdlocal_attention": settings.attention,
        }

    def snapshot(self) -> dict[str, Any]:
        current = self.services.engine.current_model
        with self.lock:
            values = dict(self.values)
        values[MODEL] = current.title if current is not None else None
        # the setting itself: the UI's Emphasis dropdown saves it too, and the API must follow that
        values["emphasis"] = getattr(self.services.settings, "emphasis", values.get("emphasis", "Original"))
        return {**values, **self.read_only()}

    def split(self, body: dict[str, Any]) -> tuple[dict[str, Any], Any, dict[str, str]]:
        """``body`` as (writable changes, the wanted model or None, {ignored key: why})."""
        changes: dict[str, Any] = {}
        ignored: dict[str, str] = {}
        facts = self.read_only()
        for key, value in body.items():
            if key == MODEL:
                continue
            if key in WRITABLE:
                changes[key] = value
            elif key in facts:
                if value != facts[key]:
                    ignored[key] = "read-only: it describes this server and cannot be set through the API"
            else:
                ignored[key] = "not an option sdlocal has"
        return changes, body.get(MODEL) or None, ignored

    def check(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Validate the writable options with the engine's own limits; RequestError names the option."""
        checked = dict(changes)
        probe = GenerationRequest(prompt="", width=64, height=64)
        if "CLIP_stop_at_last_layers" in checked:
            probe.clip_skip = checked["CLIP_stop_at_last_layers"]
        if "token_merging_ratio" in checked:
            probe.token_merging_ratio = checked["token_merging_ratio"]
        if "emphasis" in checked:
            probe.emphasis = checked["emphasis"]
        if "sd_vae" in checked:
            probe.vae = checked["sd_vae"]
        try:
            probe.validate()
            if probe.vae not in ("Automatic", "None"):
                from sdlocal.engine.vae import find_named

                probe.vae = find_named(self.services.engine.vae_library(), probe.vae).name
        except RequestError as exc:
            raise RequestError(_ENGINE_NAMES.get(exc.field, exc.field), exc.value, exc.allowed) from None
        if "CLIP_stop_at_last_layers" in checked:
            checked["CLIP_stop_at_last_layers"] = probe.clip_skip
        if "token_merging_ratio" in checked:
            checked["token_merging_ratio"] = probe.token_merging_ratio
        if "emphasis" in checked:
            checked["emphasis"] = probe.emphasis
        if "sd_vae" in checked:
            checked["sd_vae"] = probe.vae
        if "inpainting_mask_weight" in checked:
            checked["inpainting_mask_weight"] = _mask_weight(checked["inpainting_mask_weight"])
        return checked

    def apply(self, changes: dict[str, Any]) -> list[str]:
        """Use checked ``changes`` from now on and save them; returns warnings (a save that failed)."""
        with self.lock:
            self.values.update(changes)
            kept = {key: self.values[key] for key in _FILE_KEYS}
        warnings: list[str] = []
        settings = self.services.settings
        try:
            for key in _SETTINGS_KEYS:
                if key in changes:
                    settings.save_settings({key: changes[key]})
                    setattr(settings, key, changes[key])
            if any(key in changes for key in _FILE_KEYS):
                from sdlocal.settings import atomic_write_json

                atomic_write_json(self.path, kept)
        except (OSError, ValueError) as exc:
            log.warning("could not save the API options: %s", exc)
            warnings.append(f"The options apply to this run but could not be saved: {exc}")
        return warnings

    def remember_model(self, name: str) -> list[str]:
        """Make ``name`` the model loaded at the next start (the start-up load reads the UI state's model)."""
        settings = self.services.settings
        try:
            state = dict(settings.load_ui_state())
            state["model"] = name
            settings.save_ui_state(state)
        except (OSError, ValueError) as exc:
            log.warning("could not save the model choice: %s", exc)
            return [f"The model is loaded but the choice could not be saved for the next start: {exc}"]
        return []


def _mask_weight(value: Any) -> float:
    """The conditional mask weight with the engine's own check (a number from 0 to 1)."""
    from sdlocal.engine.request import MaskSpec

    try:
        return MaskSpec.validate_weight(value)
    except RequestError as exc:
        raise RequestError("inpainting_mask_weight", exc.value, exc.allowed) from None


def log_ignored(where: str, ignored: dict[str, str]) -> None:
    if ignored:
        log.info("%s ignored %s", where, ", ".join(f"{key} ({why})" for key, why in sorted(ignored.items())))
