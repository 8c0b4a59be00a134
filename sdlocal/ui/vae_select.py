"""The VAE picker: A1111's ``sd_vae`` quick setting, at the top of the Generate tab beside the model.

Like the model, it is one control for the page: its value goes into the txt2img and the img2img requests, is
kept in the UI state (the page opens with it), and "Reuse all parameters" and PNG Info's "Send to Generate" set
it from the infotext's ``VAE`` (an image without one was decoded by its checkpoint's VAE: "Automatic").
Nothing here imports torch: the list comes from the VAE files' headers (``Services.vaes``).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

AUTOMATIC = "Automatic"
NONE = "None"
FAMILY_SHORT = {"sd1": "SD 1.x/2.x", "sd2": "SD 1.x/2.x", "sdxl": "SDXL"}


def vae_choices(vaes: list[Any]) -> list[tuple[str, str]]:
    """Dropdown choices: Automatic, None, then the usable VAEs by name with the family they are made for."""
    choices = [("Automatic (named after the model, else its own)", AUTOMATIC), ("None (the model's own)", NONE)]
    for vae in vaes:
        if getattr(vae, "usable", False):
            family = FAMILY_SHORT.get(getattr(vae, "family", None) or "")
            choices.append((f"{vae.name} · {family}" if family else vae.name, vae.name))
    return choices


def vae_controls(ui: Any) -> None:
    """The dropdown and its refresh button (inside the caller's model row)."""
    ui.vae = gr.Dropdown(label="VAE", choices=vae_choices([]), value=AUTOMATIC, scale=3, min_width=200,
                         elem_id="sd-vae", interactive=True, allow_custom_value=True,
                         info="Files in models/VAE; Automatic takes model.vae.safetensors beside the model.")
    ui.vae_refresh = gr.Button("↻ VAEs", scale=0, min_width=90, elem_id="sd-vae-refresh")


def refresh_vaes(services: Any, current: str | None, scan: bool = True) -> Any:
    """The dropdown's update: the VAEs found (scanned again with ``scan``), keeping ``current`` when it is there."""
    choices = vae_choices(services.vaes(refresh=scan))
    values = [value for _label, value in choices]
    return gr.update(choices=choices, value=current if current in values else AUTOMATIC)


def request_vae(value: Any) -> str:
    """The request's ``vae`` for the dropdown's value (empty or missing: Automatic)."""
    return value.strip() if isinstance(value, str) and value.strip() else AUTOMATIC


def vae_from_infotext(services: Any, text: str) -> Any:
    """The dropdown's update for an A1111 parameters text: its ``VAE`` when that file is here, Automatic when the
    text names none; a VAE that is not here leaves the choice as it is, with a message."""
    from sdlocal.engine.infotext import parse_infotext

    if not text:
        return gr.update()
    wanted = parse_infotext(text).get("VAE", "").strip()
    if not wanted:
        return gr.update(value=AUTOMATIC)
    lowered = wanted.casefold()
    for vae in services.vaes():
        if getattr(vae, "usable", False) and lowered in (vae.name.casefold(), vae.path.name.casefold()):
            return gr.update(value=vae.name)
    gr.Info(f"The VAE {wanted!r} from these parameters is not here; keeping the current VAE.")
    return gr.update()


def page_vae(services: Any, ui_state: Any) -> Any:
    """What the dropdown shows when a page opens: the VAEs found and the saved choice."""
    return refresh_vaes(services, ui_state.load().get("vae"), scan=False)


def wire_vae(ui: Any, services: Any, ui_state: Any) -> None:
    """Refresh, and keep the choice in the UI state as soon as it is made."""
    ui.vae_refresh.click(lambda current: refresh_vaes(services, current), inputs=ui.vae, outputs=ui.vae,
                         api_name="refresh_vaes")

    def remember(value: str | None) -> None:
        ui_state.save({**ui_state.load(), "vae": request_vae(value)})

    ui.vae.input(remember, inputs=ui.vae, api_visibility="private")


def wire_reuse_vae(parts: Any, services: Any, vae: Any) -> None:
    """"Reuse all parameters" of a results panel sets the VAE too (beside the form, which its own event fills)."""
    from sdlocal.ui.form_events import selected_row

    def reuse(rows: Any, index: int) -> Any:
        row = selected_row(rows, index)
        return vae_from_infotext(services, row[1]) if row is not None else gr.update()

    parts.reuse_all.click(reuse, inputs=[parts.results, parts.selected], outputs=vae, api_visibility="private")
