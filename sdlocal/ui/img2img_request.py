"""The img2img tab's request: init image and mask from its image components, output size, and the source fields.

Plain Pillow, no gradio events, so each rule is tested on its own:

- **Modes** (the sub-tabs): "img2img" starts from an uploaded image; "sketch" from the image with the colour
  strokes painted on it (the editor's composite); "inpaint" from the uploaded image, and the strokes painted on
  it are the mask (white where painted, whatever the brush colour); "inpaint upload" takes image and mask as two
  files (the mask is white where to repaint, or its alpha when it has one, as the engine reads it).
- **Size** follows the image, as in A1111: "Resize to" uses the width and height, which the tab sets to the
  image's size when one is loaded; "Resize by" scales the image's size. Both are rounded to the nearest multiple
  of 8 within the request's limits.
- The inpaint controls map to ``MaskSpec`` fields one to one (mask blur is the same in x and y).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdlocal.engine.request import (
    INPAINT_AREAS,
    MASKED_CONTENT,
    MAX_SIDE,
    MIN_SIDE,
    RESIZE_MODES,
    GenerationRequest,
    ImageSource,
    MaskSpec,
)
from sdlocal.ui.common import FormError

__all__ = ["FormError", "build_request", "editor_mask", "fit_size", "scaled_size", "source_images"]

MODES = ("img2img", "sketch", "inpaint", "inpaint upload")
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
SIZE_MODES = ("Resize to", "Resize by")
# The tab's own controls, in the order its events receive them (after the shared FORM_FIELDS).
SOURCE_FIELDS: tuple[str, ...] = (
    "resize_mode",
    "size_mode",
    "scale",
    "denoising_strength",
    "mask_blur",
    "mask_mode",
    "masked_content",
    "inpaint_area",
    "padding",
    "conditional_weight",
)
# A1111's UI defaults (its API's differ: see FACTS): masked content "original", whole picture, 32 px padding.
SOURCE_DEFAULTS: dict[str, Any] = {
    "resize_mode": RESIZE_MODES[0],
    "size_mode": SIZE_MODES[0],
    "scale": 1.0,
    "denoising_strength": 0.75,
    "mask_blur": 4,
    "mask_mode": MASK_MODES[0],
    "masked_content": MASKED_CONTENT[1],
    "inpaint_area": INPAINT_AREAS[0],
    "padding": 32,
    "conditional_weight": 1.0,
}
# The image components, in the order the tab's events receive them (before FORM_FIELDS).
IMAGE_FIELDS: tuple[str, ...] = ("mode", "init_image", "sketch", "inpaint", "inpaint_image", "inpaint_mask")


@dataclass
class SourceImages:
    """What the sub-tab in use gives: the init image (RGB) and, for inpainting, the mask (L, white = repaint)."""

    image: Any
    mask: Any = None


def round_to_8(value: float) -> int:
    """The nearest multiple of 8 within the request's side limits (A1111's sliders step by 8 too)."""
    return max(MIN_SIDE, min(MAX_SIDE, int(float(value) / 8 + 0.5) * 8))


def fit_size(width: float, height: float) -> tuple[int, int]:
    """An image's size as an output size: each side rounded to a multiple of 8."""
    return round_to_8(width), round_to_8(height)


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """"Resize by": the image's size times ``scale``, rounded to multiples of 8."""
    return fit_size(size[0] * float(scale), size[1] * float(scale))


def flatten(image: Any) -> Any:
    """An RGB copy; transparent pixels become white, as a sketch's canvas shows them."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")


def editor_mask(value: dict[str, Any] | None) -> Any:
    """The mask painted in an image editor: L, the background's size, 255 wherever any layer has paint.

    The editor hands its value as {"background", "layers", "composite"}; each layer is transparent except its
    strokes, so a stroke's alpha marks it whatever its colour. None when there is no background image.
    """
    from PIL import Image, ImageChops

    background = (value or {}).get("background")
    if background is None:
        return None
    mask = Image.new("L", background.size, 0)
    for layer in (value or {}).get("layers") or []:
        if layer is None:
            continue
        alpha = layer.getchannel("A") if "A" in layer.getbands() else Image.new("L", layer.size, 0)
        if alpha.size != background.size:  # a layer of another size (an edited canvas) is fitted to the image
            alpha = alpha.resize(background.size, Image.NEAREST)
        mask = ImageChops.lighter(mask, alpha.point(lambda v: 255 if v > 0 else 0))
    return mask


def source_images(mode: str, values: dict[str, Any]) -> SourceImages:
    """The init image and mask for ``mode`` from the image components' values (see ``IMAGE_FIELDS``)."""
    if mode == "img2img":
        image = values.get("init_image")
        if image is None:
            raise FormError("Drop an image on the img2img tab first (or send one from Generate, Gallery or PNG Info).")
        return SourceImages(flatten(image))
    if mode == "sketch":
        editor = values.get("sketch") or {}
        image = editor.get("composite") or editor.get("background")
        if image is None:
            raise FormError("Drop an image on the Sketch tab first, then paint on it.")
        return SourceImages(flatten(image))
    if mode == "inpaint":
        editor = values.get("inpaint") or {}
        if editor.get("background") is None:
            raise FormError("Drop an image on the Inpaint tab first, then paint the part to repaint.")
        return SourceImages(flatten(editor["background"]), editor_mask(editor))
    if mode == "inpaint upload":
        image, mask = values.get("inpaint_image"), values.get("inpaint_mask")
        if image is None or mask is None:
            raise FormError("Inpaint upload needs both files: the image and its mask (white = repaint).")
        return SourceImages(flatten(image), open_mask(mask))
    raise FormError(f"Unknown img2img mode {mode!r}; use one of {', '.join(MODES)}.")


def open_mask(mask: Any) -> Any:
    """A mask file (a path from the upload) decoded as the API decodes one: same limits, same field name."""
    from sdlocal.engine.images import decode_image

    if isinstance(mask, str):
        with open(mask, "rb") as handle:
            return decode_image(handle.read(), "mask")
    return decode_image(mask, "mask")


def output_size(images: SourceImages, form: dict[str, Any], settings: dict[str, Any]) -> tuple[int, int]:
    """(width, height): the form's with "Resize to", the image's times the factor with "Resize by"."""
    if settings.get("size_mode") == "Resize by":
        return scaled_size(images.image.size, settings.get("scale") or 1.0)
    return form["width"], form["height"]


def build_request(model: str, form: dict[str, Any], settings: dict[str, Any],
                  images: SourceImages) -> GenerationRequest:
    """The validated img2img (or, with a mask, inpainting) request; a bad value raises ``RequestError``."""
    settings = {**SOURCE_DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    mask = None
    if images.mask is not None:
        blur = settings["mask_blur"]
        blur = int(blur) if isinstance(blur, float) and blur.is_integer() else blur
        padding = settings["padding"]
        padding = int(padding) if isinstance(padding, float) and padding.is_integer() else padding
        mask = MaskSpec(image=images.mask, blur_x=blur, blur_y=blur, invert=settings["mask_mode"] == MASK_MODES[1],
                        area=settings["inpaint_area"], padding=padding, content=settings["masked_content"],
                        conditional_weight=settings["conditional_weight"])
    source = ImageSource(images=[images.image], denoising_strength=settings["denoising_strength"],
                         resize_mode=settings["resize_mode"], mask=mask)
    width, height = output_size(images, form, settings)
    return GenerationRequest.build(model=model, **{**form, "width": width, "height": height}, source=source)


def source_updates(fields: dict[str, Any]) -> dict[str, Any]:
    """The tab's control values for ``infotext_to_source_fields`` output (MaskSpec/ImageSource names)."""
    out: dict[str, Any] = {}
    if "denoising_strength" in fields:
        out["denoising_strength"] = fields["denoising_strength"]
    blur = fields.get("mask_blur_x", fields.get("mask_blur_y"))
    if blur is not None:
        out["mask_blur"] = blur
    for name, control in (("inpaint_area", "inpaint_area"), ("padding", "padding"), ("content", "masked_content"),
                          ("conditional_weight", "conditional_weight")):
        if name in fields:
            out[control] = fields[name]
    if "invert" in fields:
        out["mask_mode"] = MASK_MODES[1] if fields["invert"] else MASK_MODES[0]
    return out
