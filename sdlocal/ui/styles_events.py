"""The events of the Styles box, the token counters and the Emphasis setting, shared by Generate and img2img.

Styles are applied when a job is built (``styled_form``, through ``sdlocal.styles.apply_styles``, the one
function the API and the CLI use too), so the engine and the PNG get the expanded prompt. The Emphasis
dropdown is a request field (``FORM_FIELDS``) whose value is also saved as the ``emphasis`` setting, so the API's
``emphasis`` option and the next start follow it. Every handler turns errors into messages, never an error page.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import gradio as gr

from sdlocal.engine.request import RequestError
from sdlocal.styles import apply_styles
from sdlocal.ui.common import error_text
from sdlocal.ui.components import FormParts

log = logging.getLogger(__name__)


def style_names(services: Any) -> list[str]:
    library = getattr(services, "styles", None)
    return library.names() if library is not None else []


def styled_form(services: Any, form: dict[str, Any], selected: list[str] | None) -> dict[str, Any]:
    """The form with the selected styles applied to its prompts (a copy: the boxes keep what the user typed)."""
    prompt, negative = apply_styles(form.get("prompt", ""), form.get("negative_prompt", ""), selected or [],
                                    getattr(services, "styles", None))
    return {**form, "prompt": prompt, "negative_prompt": negative}


def refresh_styles(services: Any, selected: list[str] | None) -> Any:
    """The Styles list read again from the files, keeping the picked names that are still there."""
    library = getattr(services, "styles", None)
    names = [style.name for style in library.refresh()] if library is not None else []
    return gr.update(choices=names, value=[name for name in selected or [] if name in names])


def apply_to_boxes(services: Any, prompt: str, negative: str, selected: list[str] | None) -> list[Any]:
    """"Apply styles to prompt": the expanded texts into the boxes and no style picked (as in A1111)."""
    try:
        form = styled_form(services, {"prompt": prompt or "", "negative_prompt": negative or ""}, selected)
    except RequestError as exc:
        gr.Warning(error_text(exc))
        return [gr.update(), gr.update(), gr.update()]
    return [form["prompt"], form["negative_prompt"], gr.update(value=[])]


def save_style(services: Any, name: str, prompt: str, negative: str, selected: list[str] | None) -> list[Any]:
    """Save the prompts as a style: (Styles list update, status message, name box)."""
    library = getattr(services, "styles", None)
    if library is None:
        return [gr.update(), "⚠ Styles are not available here.", gr.update()]
    try:
        style = library.save(name, prompt or "", negative or "")
    except RequestError as exc:
        return [gr.update(), f"⚠ {error_text(exc)}", gr.update()]
    except OSError as exc:
        return [gr.update(), f"⚠ The style could not be saved in {library.path}: {exc}", gr.update()]
    names = library.names()
    return [gr.update(choices=names, value=[n for n in selected or [] if n in names]),
            f"Saved style **{style.name}** in `{library.path}`.", ""]


def token_counter_text(services: Any, text: str, steps: Any) -> str:
    """The counter's HTML ("23/75"); empty when it cannot be counted (the counter never shows an error)."""
    try:
        counted = services.token_count(text or "", int(steps or 20))
    except Exception as exc:  # noqa: BLE001 - a missing tokenizer must not break typing
        log.debug("token count failed: %s", exc)
        return ""
    return f'<span title="tokens used / limit of the 75-token chunks used">{html.escape(counted)}</span>'


def wire_token_counters(ui: FormParts, services: Any) -> None:
    """Count each prompt box as it changes (typing, a send, a reuse), for the longest prompt-editing step."""
    steps = ui.fields["steps"]
    for box, counter in ((ui.fields["prompt"], ui.prompt_tokens), (ui.fields["negative_prompt"], ui.negative_tokens)):
        box.change(lambda text, n: token_counter_text(services, text, n), inputs=[box, steps], outputs=counter,
                   trigger_mode="always_last", show_progress="hidden", concurrency_limit=None,
                   api_visibility="private")


def save_emphasis(settings: Any, mode: str) -> None:
    """The Emphasis dropdown's value as the ``emphasis`` setting (best effort: a read-only data dir is logged)."""
    try:
        settings.save_settings({"emphasis": mode})
        settings.emphasis = mode
    except (OSError, ValueError) as exc:
        log.warning("could not save the emphasis setting: %s", exc)
        gr.Warning(f"Emphasis {mode!r} is used, but it could not be saved for the next start: {exc}")


def wire_styles(ui: FormParts, services: Any) -> None:
    """Refresh, apply and save; the Styles list itself is read by the tab's run handler."""
    prompt, negative = ui.fields["prompt"], ui.fields["negative_prompt"]
    ui.styles_refresh.click(lambda selected: refresh_styles(services, selected), inputs=ui.styles,
                            outputs=ui.styles, api_visibility="private")
    ui.styles_apply.click(lambda p, n, selected: apply_to_boxes(services, p, n, selected),
                          inputs=[prompt, negative, ui.styles], outputs=[prompt, negative, ui.styles],
                          api_visibility="private")
    ui.save_style.click(lambda name, p, n, selected: save_style(services, name, p, n, selected),
                        inputs=[ui.style_name, prompt, negative, ui.styles],
                        outputs=[ui.styles, ui.style_status, ui.style_name], api_visibility="private")
    wire_token_counters(ui, services)
    ui.fields["emphasis"].input(lambda mode: save_emphasis(services.settings, mode), inputs=ui.fields["emphasis"],
                                api_visibility="private")


def link_emphasis(first: FormParts, second: FormParts) -> None:
    """One Emphasis for the page: picking it on one tab shows it on the other (it is one setting)."""
    for source, other in ((first, second), (second, first)):
        source.fields["emphasis"].input(lambda mode: mode, inputs=source.fields["emphasis"],
                                        outputs=other.fields["emphasis"], api_visibility="private")


def page_load(services: Any) -> list[Any]:
    """What the styles and emphasis controls show as a page opens, for (styles, emphasis) of one tab."""
    mode = getattr(services.settings, "emphasis", "Original")
    return [gr.update(choices=style_names(services)), gr.update(value=mode)]
