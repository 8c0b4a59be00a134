"""The PNG Info tab: read the A1111 parameters of any dropped image and send them to Generate or img2img.

The upload is a plain file (not ``gr.Image``) so that the original bytes, with their text chunks, reach the
reader: an image component would re-encode the picture and drop the parameters. Anything that is not a
readable image, or is large enough to be a decompression bomb, becomes a message.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr

from sdlocal.outputs import read_image_parameters
from sdlocal.ui.common import infotext_updates
from sdlocal.ui.components import send_buttons_row
from sdlocal.ui.generate_layout import GenerateTab
from sdlocal.ui.hires import wire_reuse_hires
from sdlocal.ui.script_run import wire_reuse_script
from sdlocal.ui.send import SendTarget
from sdlocal.ui.vae_select import vae_from_infotext


def read_dropped(path: str | None) -> tuple[str, str]:
    """(parameters text, message) for an uploaded file; never raises."""
    from PIL import Image, UnidentifiedImageError

    if not path:
        return "", ""
    name = Path(path).name
    try:
        text = read_image_parameters(path)
    except Image.DecompressionBombError:
        return "", f"⚠ {name} is too large to open safely (more than {Image.MAX_IMAGE_PIXELS * 2:,} pixels)."
    except UnidentifiedImageError:
        return "", f"⚠ {name} is not an image sdlocal can read. Drop a PNG (or JPEG/WebP) made by sdlocal or A1111."
    except (OSError, ValueError, SyntaxError) as exc:
        return "", f"⚠ {name} could not be read: {exc}"
    if not text:
        return "", (f"{name} has no generation parameters (no `parameters` text). It was not made by sdlocal or "
                    "AUTOMATIC1111, or a program removed its metadata.")
    return text, ""


def parameters_table(text: str) -> str:
    from sdlocal.engine.infotext import parse_infotext

    try:
        params = parse_infotext(text)
    except Exception:  # noqa: BLE001 - a text we cannot split is still shown raw
        return ""
    rows = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>" for key, value in params.items()
    )
    return f'<table class="sd-params">{rows}</table>' if rows else ""


def build_pnginfo_tab(services: Any, generate: GenerateTab, tabs: Any, send: SendTarget | None = None,
                      extras_send: Any = None) -> Any:
    with gr.Tab("PNG Info", id="pnginfo") as tab:
        with gr.Row(equal_height=False):
            with gr.Column(scale=2):
                upload = gr.File(label="Drop a PNG here", file_types=["image", ".png", ".jpg", ".jpeg", ".webp"],
                                 type="filepath", elem_id="sd-pnginfo-file")
                message = gr.Markdown("", label="Message")
            with gr.Column(scale=3):
                text = gr.Textbox(label="Parameters", lines=6, interactive=False, elem_id="sd-pnginfo-text",
                                  buttons=["copy"])
                table = gr.HTML("", label="Parameters table")
                to_generate = gr.Button("Send to Generate", variant="primary", elem_id="sd-pnginfo-send")
                with gr.Row():
                    to_img2img, to_inpaint = send_buttons_row("sd-pnginfo-")
                    to_extras = gr.Button("Send to extras", size="sm", elem_id="sd-pnginfo-send-extras")

    def on_upload(path: str | None):
        params, note = read_dropped(path)
        return params, note, parameters_table(params) if params else ""

    upload.change(on_upload, inputs=upload, outputs=[text, message, table], api_name="png_info")

    def on_send(params: str):
        if not params:
            gr.Warning("Drop an image with parameters first.")
            return [gr.update() for _ in range(len(generate.controls) + 2)]
        return [gr.Tabs(selected="generate"), *infotext_updates(services.engine, params)]

    to_generate.click(on_send, inputs=text, outputs=[tabs, generate.model, *generate.controls],
                      api_name="send_to_generate")
    if generate.vae is not None:  # the page's VAE too, from the text's "VAE"
        to_generate.click(lambda params: vae_from_infotext(services, params), inputs=text, outputs=generate.vae,
                          api_visibility="private")
    if generate.hires is not None:  # and the Hires fix section, from the text's Hires keys
        wire_reuse_hires(to_generate, [text], generate.hires, pick=lambda params: params)
    if generate.scripts is not None:  # and an X/Y/Z grid's axes, from its Script keys
        wire_reuse_script(to_generate, [text], generate.scripts, services, lambda params: params)
    if extras_send is not None:  # the dropped file itself, parameters and all
        extras_send.connect(to_extras, lambda path, params: (path, params), [upload, text])
    if send is not None:
        # the dropped file itself (the text is its parameters); an image without parameters is sent alone
        for button, target in ((to_img2img, "img2img"), (to_inpaint, "inpaint")):
            send.connect(button, lambda path, params: (path, params), [upload, text], target)
    return tab
