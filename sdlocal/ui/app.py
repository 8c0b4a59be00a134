"""The Gradio Blocks app: ``build_ui(services)`` and the options to mount or launch it with.

The page must be up before any model: this module tree imports gradio, PIL and sdlocal's light modules only,
never torch or diffusers (``tests/ui/test_import_cost.py`` checks it). The first model loads in the
background (``services.start_background_load()``); a timer shows its status until it is ready.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from sdlocal.ui.common import UiState
from sdlocal.ui.extras import build_extras_tab
from sdlocal.ui.gallery import build_gallery_tab
from sdlocal.ui.generate import build_generate_tab
from sdlocal.ui.img2img import build_img2img_tab
from sdlocal.ui.model_list import load_status_text
from sdlocal.ui.pnginfo import build_pnginfo_tab
from sdlocal.ui.send import result_pick
from sdlocal.ui.styles_events import link_emphasis, page_load
from sdlocal.ui.system import build_system_tab, sharing_banner
from sdlocal.ui.theme import THEMES_BY_URL, ThemeRedirect

CSS = """
.gradio-container { max-width: 1500px !important; }
#sd-header { display: flex; align-items: baseline; gap: 1rem; margin-bottom: -0.5rem; }
#sd-header h1 { font-size: 1.35rem; margin: 0; }
#sd-header .sd-sub { opacity: 0.7; font-size: 0.9rem; }
#sd-load-status p { margin: 0; font-size: 0.92rem; }
.sd-generate-button { min-height: 3.2rem; font-size: 1.1rem; }
.sd-cpu { background: #fff4e5; color: #8a4b00; border: 1px solid #f0b25a; border-radius: 8px; padding: 0.6rem 0.9rem;
          font-weight: 600; }
.sd-error { background: #fdecea; color: #8c1d18; border: 1px solid #f1a7a1; border-radius: 8px;
            padding: 0.6rem 0.9rem; }
.sd-badge { font-size: 0.85rem; opacity: 0.8; }
.sd-warning { background: #fff8e1; border-radius: 8px; padding: 0.4rem 0.8rem; }
.sd-empty { border: 2px dashed var(--border-color-primary); border-radius: 12px; padding: 1rem; }
.sd-progress { position: relative; height: 2rem; border-radius: 8px; background: var(--background-fill-secondary);
               overflow: hidden; border: 1px solid var(--border-color-primary); }
.sd-progress-bar { position: absolute; inset: 0 auto 0 0; background: var(--color-accent-soft, #c7d2fe);
                   transition: width 0.2s linear; }
.sd-progress-text { position: relative; line-height: 2rem; padding: 0 0.75rem; font-size: 0.9rem; }
.sd-done { background: var(--background-fill-primary); }
.sd-sizes .wrap { gap: 0.3rem !important; }
.sd-tokens { text-align: right; font-size: 0.8rem; opacity: 0.75; margin: -0.9rem 0.4rem -0.5rem 0 !important; }
.sd-lora-cards .caption-label { white-space: normal !important; max-width: calc(100% - 8px) !important;
                                max-height: 55%; font-size: 0.75rem !important; }
table.sd-params th { text-align: left; padding-right: 1rem; white-space: nowrap; }
"""


def ui_theme() -> gr.themes.Theme:
    return gr.themes.Soft(primary_hue="indigo", neutral_hue="slate")


def mount_options(services: Any) -> dict[str, Any]:
    """Keyword arguments for ``gr.mount_gradio_app`` / ``Blocks.launch``: theme, CSS, and the outputs folder.

    Gradio 6 takes theme and CSS at mount/launch time, and serves only files under ``allowed_paths``: the
    outputs folder must be there for the result and gallery images (saved files with their parameters).
    """
    root = Path(services.store.root)
    root.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {"theme": ui_theme(), "css": CSS, "allowed_paths": [str(root)]}
    theme = getattr(services.settings, "theme", "system")
    if theme in THEMES_BY_URL:  # --theme dark/light; "system" is what Gradio's page does by itself
        options["app_kwargs"] = {"middleware": [Middleware(ThemeRedirect, theme=theme)]}
    return options


def build_ui(services: Any) -> gr.Blocks:
    """The whole page over ``services`` (engine, queue, store, presets, settings)."""
    ui_state = UiState(services.settings)
    with gr.Blocks(title="sdlocal", analytics_enabled=False) as blocks:
        with gr.Row(elem_id="sd-header"):
            gr.HTML('<h1>sdlocal</h1><span class="sd-sub">local Stable Diffusion</span>')
            sharing = gr.HTML("", label="Sharing", elem_id="sd-share-badge")
        with gr.Tabs(selected="generate") as tabs:
            generate = build_generate_tab(services, ui_state)
            img2img = build_img2img_tab(services, generate.model, tabs, vae=generate.vae)
            extras = build_extras_tab(services, tabs)
            build_gallery_tab(services, generate, tabs, send=img2img.send, extras_send=extras.send)
            build_pnginfo_tab(services, generate, tabs, send=img2img.send, extras_send=extras.send)
            build_system_tab(services)
        for button, target in ((generate.send_img2img, "img2img"), (generate.send_inpaint, "inpaint")):
            img2img.send.connect(button, result_pick, [generate.results, generate.selected], target)
        for parts in (generate, img2img):
            extras.send.connect(parts.send_extras, result_pick, [parts.results, parts.selected])

        on_load, load_outputs = generate.load
        status_fn, status_md = generate.status
        timer = gr.Timer(1.0, active=True)

        def tick():
            text = status_fn()
            ready = text.startswith("✔")
            return text, gr.Timer(active=not ready)

        blocks.load(on_load, outputs=load_outputs, api_name="page_state")
        blocks.load(img2img.load[0], outputs=img2img.load[1], api_visibility="private")
        blocks.load(generate.vae_load[0], outputs=generate.vae_load[1], api_visibility="private")
        blocks.load(generate.hires_load[0], outputs=generate.hires_load[1], api_visibility="private")
        blocks.load(extras.load[0], outputs=extras.load[1], api_visibility="private")
        link_emphasis(generate, img2img)

        def styles_and_emphasis() -> list[Any]:
            styles, emphasis = page_load(services)
            return [styles, styles, emphasis]

        blocks.load(styles_and_emphasis, outputs=[generate.styles, img2img.styles, img2img.fields["emphasis"]],
                    api_visibility="private")
        blocks.load(tick, outputs=[status_md, timer], api_visibility="private")
        blocks.load(lambda: sharing_banner(services.settings), outputs=sharing, api_visibility="private")
        timer.tick(tick, outputs=[status_md, timer], api_visibility="private")

        def load_status() -> str:
            """The model loading status line, for scripts and tests waiting for the first model."""
            return load_status_text(services)

        gr.api(load_status, api_name="load_status")
    return blocks
