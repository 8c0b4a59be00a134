"""The System tab: the doctor's findings, device and precision (and why), versions, folders, sharing.

Everything is computed when the tab is opened or refreshed, not at start-up: the doctor may import torch.
"""

from __future__ import annotations

import html
import importlib
import platform
import sys
from importlib import metadata
from typing import Any

import gradio as gr

from sdlocal.ui.model_list import models_folders

PACKAGES = ("sdlocal", "torch", "diffusers", "transformers", "accelerate", "safetensors", "gradio", "xformers",
            "huggingface_hub", "pillow")


def versions() -> dict[str, str]:
    """Installed versions from package metadata (no imports: reading torch's version must not import torch)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def sharing_text(settings: Any) -> str:
    """How the app is reachable, from the launcher's flags: local only, on the network, or a public share link."""
    flags = getattr(settings, "flags", settings)
    listen = bool(_get(settings, flags, "listen", False))
    share = bool(_get(settings, flags, "share", False))
    host = _get(settings, flags, "host", None) or _get(settings, flags, "server_name", None)
    port = _get(settings, flags, "port", None) or _get(settings, flags, "server_port", None)
    auth = _get(settings, flags, "auth", None) or _get(settings, flags, "gradio_auth", None)
    auth_file = _get(settings, flags, "auth_file", None)
    where = host or ("0.0.0.0" if listen else "127.0.0.1")
    lines = []
    if share:
        lines.append("**Shared**: a public Gradio link is requested (it needs internet; the link is printed in the "
                     "console). Anyone with the link can use this machine's GPU.")
    if listen or where not in ("127.0.0.1", "localhost", "::1"):
        lines.append(f"**Listening on the network** at `{where}:{port or '?'}`: "
                     "other machines on the LAN can open it.")
    else:
        lines.append(f"**Local only**: `http://{where}:{port or '?'}` is reachable from this computer only.")
    if auth or auth_file:
        users = _auth_users(auth)
        shown = f" (users: {', '.join(users)})" if users else ""
        lines.append(f"Login required{shown}.")
    elif share or listen:
        lines.append("⚠ **No login**: anyone who can reach it can use it. Add `--gradio-auth user:password`.")
    return "\n\n".join(lines)


def sharing_banner(settings: Any) -> str:
    """A small badge for the header: how this page is reachable (details in the System tab)."""
    flags = getattr(settings, "flags", settings)
    share = bool(_get(settings, flags, "share", False))
    listen = bool(_get(settings, flags, "listen", False))
    auth = bool(_get(settings, flags, "auth", None) or _get(settings, flags, "auth_file", None))
    if share:
        text = "shared link"
    elif listen:
        text = "on the network"
    else:
        text = "local only"
    text += " · login" if auth else (" · no login" if share or listen else "")
    return f'<span class="sd-badge" title="See the System tab">{html.escape(text)}</span>'


def _get(settings: Any, flags: Any, name: str, default: Any) -> Any:
    for source in (flags, settings):
        if isinstance(source, dict) and name in source:
            return source[name]
        if source is not None and hasattr(source, name):
            return getattr(source, name)
    return default


def _auth_users(auth: Any) -> list[str]:
    if isinstance(auth, str):
        return [pair.split(":", 1)[0] for pair in auth.split(",") if pair.strip()]
    if isinstance(auth, (list, tuple)):
        users = []
        for pair in auth:
            if isinstance(pair, (list, tuple)) and pair:
                users.append(str(pair[0]))
            elif isinstance(pair, str):
                users.append(pair.split(":", 1)[0])
        return users
    return []


def doctor_markdown(settings: Any) -> str:
    """The doctor's findings as a list; a doctor that fails is itself reported, never an error page."""
    try:
        doctor = importlib.import_module("sdlocal.doctor")
    except ImportError as exc:
        return f"The doctor is not available: {exc}"
    run = None
    for name in ("run_checks", "diagnose", "check_all", "run"):
        run = getattr(doctor, name, None)
        if callable(run):
            break
    if run is None:
        return "The doctor has no checks to run."
    try:
        try:
            findings = run(settings)
        except TypeError:
            findings = run()
    except Exception as exc:  # noqa: BLE001
        return f"⚠ The doctor failed: {type(exc).__name__}: {exc}"
    icons = {"ok": "✔", "info": "ℹ", "warn": "⚠", "warning": "⚠", "error": "✖", "fail": "✖", "failure": "✖"}
    lines = []
    for finding in findings or []:
        level = str(getattr(finding, "level", getattr(finding, "status", "info"))).lower()
        title = getattr(finding, "title", None) or getattr(finding, "name", None) or getattr(finding, "check", "")
        message = getattr(finding, "message", None) or getattr(finding, "detail", None) or str(finding)
        fix = getattr(finding, "fix", "") or ""
        line = f"- {icons.get(level, '•')} **{title}**: {message}" if title else f"- {icons.get(level, '•')} {message}"
        if fix:
            line += f" — *fix:* {fix}"
        lines.append(line)
    return "\n".join(lines) or "No findings."


def system_markdown(services: Any) -> str:
    settings, engine = services.settings, services.engine
    lines = ["### Device"]
    try:
        caps = services.capabilities()  # the engine's, worked out again after each runtime change
        lines.append(f"- Device: **{caps.device}** ({caps.device_name})")
        lines.append(f"- Precision: **{caps.precision}** — {caps.precision_reason}")
        lines.append(f"- Attention: **{caps.attention}**" + _attention_note(engine, caps))
        for table, label in ((caps.precisions, "precision"), (caps.attentions, "attention")):
            for name, reason in table.items():
                lines.append(f"- {label} {name}: {'available' if not reason else 'unavailable — ' + reason}")
        for warning in caps.warnings:
            lines.append(f"- ⚠ {warning}")
    except Exception as exc:  # noqa: BLE001
        lines.append(f"- Could not read the device: {exc}")
    try:
        memory = engine.memory()
        if memory:
            lines.append("- Memory: " + ", ".join(f"{k} {v}" for k, v in memory.items()))
    except Exception:  # noqa: BLE001
        pass
    lines.append("\n### Folders")
    for label, attr in (("Data", "data_dir"), ("Outputs", "outputs_dir"), ("Presets (yours)", "presets_dir"),
                        ("Settings file", "state_file")):
        value = getattr(settings, attr, None)
        if value is not None:
            lines.append(f"- {label}: `{value}`")
    for folder in models_folders(services):
        lines.append(f"- Models: `{folder}`")
    lines.append("\n### Versions")
    lines.append(", ".join(f"{name} {version}" for name, version in versions().items()))
    lines.append(f"\n`{html.escape(sys.executable)}` on {platform.platform()}")
    return "\n".join(lines)


def _attention_note(engine: Any, caps: Any) -> str:
    """Why the attention in use is not the one asked for (xformers falls back to SDPA when it cannot run)."""
    asked = getattr(getattr(engine, "config", None), "attention", "auto")
    if asked in ("auto", caps.attention):
        return ""
    return f" — {asked} was asked but {(caps.attentions or {}).get(asked) or 'it could not be used'}"


def build_system_tab(services: Any) -> Any:
    with gr.Tab("System", id="system") as tab:
        sharing = gr.Markdown("", label="Sharing", elem_id="sd-sharing")
        info = gr.Markdown("", label="System", elem_id="sd-system")
        with gr.Accordion("Doctor", open=True):
            doctor_btn = gr.Button("Run the checks", size="sm", elem_id="sd-doctor")
            doctor = gr.Markdown("", label="Doctor", elem_id="sd-doctor-report")

    def refresh():
        return sharing_text(services.settings), system_markdown(services)

    tab.select(refresh, outputs=[sharing, info], api_name="system_info")
    doctor_btn.click(lambda: doctor_markdown(services.settings), outputs=doctor, api_name="doctor")
    return tab
