"""The model picker's text: dropdown choices, the "no models yet" panel, and the loading status line.

Plain functions over the engine (duck-typed, so tests can pass small fakes); no gradio components here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdlocal.presets import FAMILY_LABELS

UNSUPPORTED_PREFIX = "!unsupported:"


def model_choices(entries: list[Any]) -> list[tuple[str, str]]:
    """Dropdown choices: supported models with family and short hash; unsupported files marked, with their reason."""
    supported = [e for e in entries if e.supported]
    unsupported = [e for e in entries if not e.supported]
    choices = [(model_label(e), e.name) for e in supported]
    choices += [(f"⊘ {e.name} (unsupported: {e.reason})", UNSUPPORTED_PREFIX + e.name) for e in unsupported]
    return choices


def model_label(entry: Any) -> str:
    family = FAMILY_LABELS.get(entry.family or "", entry.family or "?")
    extra = " inpainting" if getattr(entry, "inpainting", False) else ""
    hash_part = f" [{entry.short_hash}]" if getattr(entry, "short_hash", None) else ""
    return f"{entry.name}{hash_part} · {family}{extra}"


def models_folders(services: Any) -> list[str]:
    """The folders discovery scans, for the empty-state panel."""
    engine = services.engine
    for attr in ("scan_roots", "model_folders", "models_folders"):
        method = getattr(engine, attr, None)
        if callable(method):
            try:
                return [str(p) for p in method()]
            except Exception:  # noqa: BLE001 - a listing for display only
                break
    config = getattr(engine, "config", None)
    folders: list[str] = []
    if config is not None:
        folders.append(str(config.own_models_dir / "Stable-diffusion"))
        folders += [str(p) for p in getattr(config, "models_dirs", [])]
    return folders


def starter_dir(services: Any) -> Path:
    """Where the starter download goes: sdlocal's own checkpoint folder."""
    config = getattr(services.engine, "config", None)
    if config is not None:
        return config.own_models_dir / "Stable-diffusion"
    return services.settings.data_dir / "models" / "Stable-diffusion"


def empty_state_markdown(services: Any) -> str:
    folders = "\n".join(f"- `{folder}`" for folder in models_folders(services)) or "- (none configured)"
    return (
        "### No models yet\n"
        "sdlocal needs a Stable Diffusion checkpoint (SD 1.x, SD 2.x or SDXL) as a `.safetensors` or `.ckpt` file, "
        "or a diffusers folder. Put one into any of these folders, then press **↻ Refresh**:\n"
        f"{folders}\n\n"
        "An existing AUTOMATIC1111, Forge or ComfyUI install can be used in place: start sdlocal with "
        "`--models-dir <its folder>`. Or download the standard starter model below (about 4.3 GB, checked "
        "against its published sha256)."
    )


def load_status_text(services: Any) -> str:
    """One line for the loading banner: what the background load is doing, or which model is ready."""
    status = getattr(services, "load_status", None)
    if callable(status):
        status = status()
    engine = services.engine
    current = getattr(engine, "current_model", None)
    if current is not None:
        family = FAMILY_LABELS.get(current.family or "", current.family)
        return f"✔ Ready: **{current.name}** ({family}){runtime_text(services)}"
    if status:
        return f"{status}"
    try:
        if not any(entry.supported for entry in engine.models()):
            return "⚠ No model to load yet: add one (see below), then press ↻ Refresh."
    except Exception:  # noqa: BLE001 - the banner must never fail
        pass
    return "Loading the model in the background… the page works meanwhile."


def runtime_text(services: Any) -> str:
    """" on cpu, fp32, sdpa": how the model runs now, read from the engine (it changes with the runtime options)."""
    try:
        caps = services.capabilities() if callable(getattr(services, "capabilities", None)) else None
        caps = caps or services.engine.capabilities()
        return f" on {caps.device}, {caps.precision}, {caps.attention}"
    except Exception:  # noqa: BLE001 - the banner must never fail
        return ""


def current_model_name(engine: Any, names: list[str]) -> str | None:
    """The loaded model, else the first of ``names``: what the picker shows when nothing else is asked."""
    current = getattr(engine, "current_model", None)
    if current is not None:
        return current.name
    return names[0] if names else None


def find_entry(engine: Any, name: str) -> Any:
    """The engine's entry for ``name``, or None when there is none (the caller says so)."""
    try:
        return engine.find_model(name)
    except Exception:  # noqa: BLE001 - unknown names are simply not found
        return None
