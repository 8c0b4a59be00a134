"""``sdlocal generate``'s img2img and inpainting flags: A1111's controls, read into the request's ``source``.

The flags build the same ``ImageSource`` the UI and ``/sdapi/v1/img2img`` build (images decoded by
``decode_image``, validated by the request), and a refused value names the flag that set it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sdlocal.engine.request import INPAINT_AREAS, MASKED_CONTENT, RESIZE_MODES, RequestError

# The img2img flags: option key -> (where it goes: the source or its mask, the request field it sets).
SOURCE_KEYS = {"denoising_strength": ("source", "denoising_strength"), "resize_mode": ("source", "resize_mode"),
               "mask_blur": ("mask", "blur"), "mask_invert": ("mask", "invert"), "inpaint_area": ("mask", "area"),
               "inpaint_padding": ("mask", "padding"), "masked_content": ("mask", "content"),
               "conditional_mask_weight": ("mask", "conditional_weight")}
# A RequestError's field (the API's name) -> the flag that sets it, so the message names what to change.
FIELD_FLAGS = {"init_images": "--init-image", "mask": "--mask", "denoising_strength": "--denoising-strength",
               "resize_mode": "--resize-mode", "mask_blur_x": "--mask-blur", "mask_blur_y": "--mask-blur",
               "inpainting_mask_invert": "--mask-invert", "inpaint_area": "--inpaint-area",
               "inpaint_full_res_padding": "--inpaint-padding", "inpainting_fill": "--masked-content",
               "conditional_mask_weight": "--conditional-mask-weight", "styles": "--style"}


def add_img2img_flags(parser: argparse.ArgumentParser) -> None:
    """The flags; left unset (None) unless typed, so the request's own defaults (A1111's UI defaults) apply."""
    img = parser.add_argument_group("img2img and inpainting (A1111's controls; defaults as its UI)")
    img.add_argument("--init-image", type=Path, action="append", metavar="PATH",
                     help="start from this image (img2img); repeat it to give a batch several init images")
    img.add_argument("--mask", type=Path, metavar="PATH", help="inpaint: white (or opaque) = repaint; its image's size")
    img.add_argument("--denoising-strength", type=float, metavar="S", help="0-1: how much changes (default 0.75)")
    img.add_argument("--resize-mode", choices=RESIZE_MODES, help="fitting the image to --width/--height")
    img.add_argument("--mask-blur", type=int, metavar="PX", help="mask blur in pixels (default 4)")
    img.add_argument("--mask-invert", action="store_true", default=None, help="repaint what the mask leaves black")
    img.add_argument("--inpaint-area", choices=INPAINT_AREAS, help="the whole picture, or only the masked part")
    img.add_argument("--inpaint-padding", type=int, metavar="PX", help="pixels around the mask for 'Only masked'")
    img.add_argument("--masked-content", choices=MASKED_CONTENT, help="what the masked area starts from")
    img.add_argument("--conditional-mask-weight", type=float, metavar="W", help="9-channel inpainting models, 0-1")


def image_source(options: dict[str, Any]) -> dict[str, Any] | None:
    """The request's ``source`` from the img2img flags (None for txt2img), with the images read and decoded.

    A flag that needs an image it was not given (``--mask-blur`` without ``--mask``) is an error rather than
    ignored: the user meant something by it.
    """
    given = {key: options[key] for key in SOURCE_KEYS if options.get(key) is not None}
    paths = options.get("init_image") or []
    if not paths:
        stray = [key for key in ("mask", *given) if options.get(key) is not None]
        if stray:
            value = options[stray[0]]
            raise RequestError(f"--{stray[0].replace('_', '-')}", str(value) if isinstance(value, Path) else value,
                               "needs --init-image PATH, the image to start from")
        return None
    source: dict[str, Any] = {"images": [_read_image(path, "init_images") for path in paths]}
    mask: dict[str, Any] = {}
    for key, value in given.items():
        place, name = SOURCE_KEYS[key]
        if place == "source":
            source[name] = value
        elif name == "blur":
            mask["blur_x"] = mask["blur_y"] = value
        else:
            mask[name] = value
    if options.get("mask") is not None:
        source["mask"] = {"image": _read_image(options["mask"], "mask"), **mask}
    elif mask:
        key = next(key for key in given if SOURCE_KEYS[key][0] == "mask")
        raise RequestError(f"--{key.replace('_', '-')}", given[key], "needs --mask PATH (white = repaint)")
    return source


def _read_image(path: Path, field_name: str) -> Any:
    from sdlocal.engine.images import decode_image

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise RequestError(field_name, str(path), f"cannot be read ({exc.strerror or exc}); give an image file") \
            from None
    return decode_image(data, field_name)


def flag_message(exc: RequestError) -> str:
    """The error with the flag that sets its field, when a flag does (``init_images`` is ``--init-image``)."""
    flag = FIELD_FLAGS.get(exc.field)
    return f"{exc} (set with {flag})" if flag else str(exc)
