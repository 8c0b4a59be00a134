"""The Generate tab's runtime controls (under Advanced): precision, attention, fast mode and the memory savers.

Each change goes through ``sdlocal.services.apply_runtime_options``, which reloads the model on the queue's
worker, so it never races a generation; the handlers here only check the choice and word the result.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from sdlocal.services import apply_runtime_options
from sdlocal.ui.common import error_text
from sdlocal.ui.generate_layout import LOW_MEMORY_MODES, low_memory_mode
from sdlocal.ui.model_list import load_status_text


def capabilities(services: Any) -> Any:
    """The engine's device report, or None when it cannot be read (shown as unknown, never an error page)."""
    caps = getattr(services, "capabilities", None)
    if callable(caps):
        caps = caps()
    if caps is None:
        try:
            caps = services.engine.capabilities()
        except Exception:  # noqa: BLE001
            return None
    return caps


def on_runtime(services: Any, precision: str, attention: str) -> tuple[Any, Any, str, str]:
    """Updates for (precision, attention, status, status line): a choice this machine cannot use reverts to auto.

    After a change both radios' notes and the status line say what the engine now uses (read again from the
    engine, which works it out anew after ``configure``), so a fallback such as xformers -> SDPA shows.
    """
    caps = capabilities(services)
    for kind, value, table in (("Precision", precision, getattr(caps, "precisions", {})),
                               ("Attention", attention, getattr(caps, "attentions", {}))):
        reason = (table or {}).get(value, "")
        if value != "auto" and reason:
            gr.Warning(f"{kind} {value} cannot be used here: {reason}")
            auto, keep = gr.update(value="auto"), gr.update()
            revert = (auto, keep) if kind == "Precision" else (keep, auto)
            return *revert, f"⚠ {kind} {value} cannot be used here: {reason}", load_status_text(services)
    try:
        message = apply_runtime_options(services, precision=precision, attention=attention)
    except Exception as exc:  # noqa: BLE001
        gr.Warning(error_text(exc))
        return gr.update(), gr.update(), f"⚠ {error_text(exc)}", load_status_text(services)
    caps = capabilities(services)
    return _choice_update("precision", caps), _choice_update("attention", caps), message, load_status_text(services)


def on_fast(services: Any, flag: bool) -> str:
    try:
        return apply_runtime_options(services, fast=bool(flag))
    except Exception as exc:  # noqa: BLE001
        gr.Warning(error_text(exc))
        return f"⚠ {error_text(exc)}"


def on_memory(services: Any, attention_slicing: bool, vae_slicing: bool, cpu_offload: bool,
              low_memory: str) -> tuple[str, str]:
    """(status, status line) after applying the memory savers; medvram and lowvram exclude each other."""
    if low_memory not in LOW_MEMORY_MODES:
        message = f"Low memory mode: {low_memory!r} is not allowed; use {', '.join(LOW_MEMORY_MODES)}."
        gr.Warning(message)
        return f"⚠ {message}", load_status_text(services)
    try:
        message = apply_runtime_options(services, attention_slicing=bool(attention_slicing),
                                        vae_slicing=bool(vae_slicing), cpu_offload=bool(cpu_offload),
                                        medvram=low_memory == "medvram", lowvram=low_memory == "lowvram")
    except Exception as exc:  # noqa: BLE001
        gr.Warning(error_text(exc))
        message = f"⚠ {error_text(exc)}"
    return message, load_status_text(services)


def wire(ui: Any, services: Any) -> None:
    """Attach the runtime controls' events (``set_runtime``, ``set_fast_mode`` and ``set_memory`` for scripts)."""
    def set_runtime(precision: str, attention: str) -> tuple[Any, Any, str, str]:
        return on_runtime(services, precision, attention)

    outputs = [ui.precision, ui.attention, ui.runtime_status, ui.load_status]
    ui.precision.input(set_runtime, inputs=[ui.precision, ui.attention], outputs=outputs, api_name="set_runtime")
    ui.attention.input(set_runtime, inputs=[ui.precision, ui.attention], outputs=outputs, api_visibility="private")
    ui.fast_mode.input(lambda flag: on_fast(services, flag), inputs=[ui.fast_mode], outputs=[ui.runtime_status],
                       api_name="set_fast_mode")

    def set_memory(attention_slicing: bool, vae_slicing: bool, cpu_offload: bool, low_memory: str) -> tuple[str, str]:
        return on_memory(services, attention_slicing, vae_slicing, cpu_offload, low_memory)

    memory = [ui.attention_slicing, ui.vae_slicing, ui.cpu_offload, ui.low_memory]
    for index, control in enumerate(memory):
        names = {"api_name": "set_memory"} if index == 0 else {"api_visibility": "private"}
        control.input(set_memory, inputs=memory, outputs=[ui.runtime_status, ui.load_status], **names)


def load_outputs(ui: Any) -> list[Any]:
    """The runtime controls a page load fills (see ``load_updates``)."""
    return [ui.precision, ui.attention, ui.attention_slicing, ui.vae_slicing, ui.cpu_offload, ui.low_memory]


def load_updates(services: Any, caps: Any) -> list[Any]:
    """Per page load: the precision and attention asked for, the choices this machine offers, and what is used now."""
    config = getattr(services.engine, "config", None)
    choices = [_choice_update(kind, caps, value=getattr(config, kind, "auto")) for kind in ("precision", "attention")]
    flags = [gr.update(value=bool(getattr(config, name, False)))
             for name in ("attention_slicing", "vae_slicing", "cpu_offload")]
    return [*choices, *flags, gr.update(value=low_memory_mode(config))]


def _choice_update(kind: str, caps: Any, **extra: Any) -> Any:
    """The radio's choices and its note: what is used now and why, and what cannot be used here."""
    table = getattr(caps, f"{kind}s", None) or {}
    chosen = getattr(caps, kind, None)
    if not table:
        return gr.update(**extra)
    usable = [name for name, reason in table.items() if not reason]
    reasons = "; ".join(f"{name}: {reason}" for name, reason in table.items() if reason)
    info = f"Now: {chosen}" + (f" ({caps.precision_reason})" if kind == "precision" and caps.precision_reason else "")
    if reasons:
        info += f". Unavailable here: {reasons}"
    choices = ["auto"] + [name for name in table if name != "auto"]
    return gr.update(choices=choices, info=info, interactive=len(usable) > 1, **extra)
