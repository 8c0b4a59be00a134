"""The source-image stage of img2img and inpainting: decoding, resizing, masks, crops, fills and compositing.

Pure Pillow and NumPy (no torch), so each step is tested on its own with hand-made images. A1111's semantics,
which sdlocal follows so that its users' habits, API clients and PNGs carry over:

- **Decoding.** Images come as files or base64 (with or without a ``data:image/...;base64,`` prefix). URLs are
  refused: the server fetches nothing. A file that is not an image, a decompression bomb and an image over
  ``MAX_SOURCE_SIDE`` a side are refused with an error naming the field.
- **Resize modes** (init image -> output size): 0 "Just resize" stretches; 1 "Crop and resize" scales to cover
  and crops the centre; 2 "Resize and fill" scales to fit and fills the bands by stretching the edge pixels;
  3 "Just resize (latent upscale)" encodes the image at its own size (rounded down to a multiple of 8) and
  resizes the latents.
- **Masks.** White repaints; an RGBA mask uses its alpha; ``invert`` repaints the rest. The mask is blurred
  with a Gaussian of sigma ``blur_x`` / ``blur_y`` pixels, and the blurred mask is what the original is
  composited back with: pixels farther than ``blur_reach`` from the mask keep the original's exact values.
- **Inpaint area.** "Whole picture" repaints at the output size. "Only masked" takes the mask's bounding box
  plus ``padding`` pixels, widens it to the output's aspect ratio (inside the image), generates that crop at
  the output size and pastes it back; the result has the init image's size.
- **Masked content.** "fill": the masked area is first filled with the colours around it; "original": left as
  it is; "latent noise": its latents are replaced with seeded noise; "latent nothing": with zeros. The first
  two change the pixels here, the last two the latents (in ``generate``).
- A mask with nothing white in it (after invert) makes the run plain img2img.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sdlocal.engine.request import (
    INPAINT_AREAS,
    MASKED_CONTENT,
    MAX_SOURCE_SIDE,
    RESIZE_MODES,
    RequestError,
)

MAX_IMAGE_BYTES = 50 * 1024 * 1024
_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)
_URL = re.compile(r"^\s*(https?|ftp|file)://", re.IGNORECASE)


def decode_image(data: Any, field: str) -> Any:
    """A PIL image from bytes, a base64 text (data URL or raw) or an already-open PIL image.

    The result is fully loaded (not lazily tied to a buffer) and in RGB, RGBA or L mode.
    """
    from PIL import Image

    if isinstance(data, Image.Image):
        image = data
    else:
        raw = _raw_bytes(data, field)
        try:
            with Image.open(io.BytesIO(raw)) as opened:
                width, height = opened.size
                if width > MAX_SOURCE_SIDE or height > MAX_SOURCE_SIDE:
                    raise RequestError(field, f"{width}x{height}",
                                       f"is too large; each side must be at most {MAX_SOURCE_SIDE}")
                opened.load()
                image = opened.copy()
        except RequestError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise RequestError(field, "<image>", f"is too large; each side must be at most {MAX_SOURCE_SIDE}") from None
        except (OSError, ValueError, SyntaxError, EOFError):
            raise RequestError(field, "<data>", "is not an image sdlocal can read; send a PNG, JPEG or WebP") from None
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    width, height = image.size
    if width < 1 or height < 1:
        raise RequestError(field, f"{width}x{height}", "is empty; give an image with pixels")
    if width > MAX_SOURCE_SIDE or height > MAX_SOURCE_SIDE:
        raise RequestError(field, f"{width}x{height}", f"is too large; each side must be at most {MAX_SOURCE_SIDE}")
    return image


def _raw_bytes(data: Any, field: str) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    elif isinstance(data, str):
        text = data.strip()
        if _URL.match(text):
            raise RequestError(field, text[:80], "is a URL; the server fetches nothing: send the image as base64")
        text = _DATA_URL.sub("", text, count=1)
        if len(text) > MAX_IMAGE_BYTES * 4 // 3 + 4:
            raise RequestError(field, f"<{len(text)} characters>", f"is over {MAX_IMAGE_BYTES // 2**20} MB")
        try:
            raw = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(field, text[:40] + ("..." if len(text) > 40 else ""),
                               "is not valid base64; send the image file's bytes as base64") from None
    else:
        raise RequestError(field, type(data).__name__, "must be an image as base64 text")
    if not raw:
        raise RequestError(field, "", "is empty; send an image")
    if len(raw) > MAX_IMAGE_BYTES:
        raise RequestError(field, f"<{len(raw)} bytes>", f"is over {MAX_IMAGE_BYTES // 2**20} MB")
    return raw


# ----------------------------------------------------------------------------------------------- resizing
def resize_image(image: Any, mode: str, width: int, height: int) -> Any:
    """``image`` at ``width`` x ``height`` by one of A1111's resize modes (the latent one resizes like mode 0)."""
    from PIL import Image

    lanczos = Image.Resampling.LANCZOS
    if image.size == (width, height):
        return image.copy()
    if mode == "Crop and resize":
        scale = max(width / image.width, height / image.height)
        scaled = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), lanczos)
        left, top = (scaled.width - width) // 2, (scaled.height - height) // 2
        return scaled.crop((left, top, left + width, top + height))
    if mode == "Resize and fill":
        return _resize_and_fill(image, width, height)
    return image.resize((width, height), lanczos)


def _resize_and_fill(image: Any, width: int, height: int) -> Any:
    """Fit inside, centre, and fill the two empty bands by stretching the image's edge rows or columns."""
    from PIL import Image

    lanczos = Image.Resampling.LANCZOS
    scale = min(width / image.width, height / image.height)
    fit_w, fit_h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    fitted = image.resize((fit_w, fit_h), lanczos)
    canvas = Image.new(image.mode, (width, height))
    left, top = (width - fit_w) // 2, (height - fit_h) // 2
    canvas.paste(fitted, (left, top))
    bottom, right = height - top - fit_h, width - left - fit_w
    bands = [
        (top, (0, 0, fit_w, 1), (fit_w, top), (left, 0)),
        (bottom, (0, fit_h - 1, fit_w, fit_h), (fit_w, bottom), (left, top + fit_h)),
        (left, (0, 0, 1, fit_h), (left, fit_h), (0, top)),
        (right, (fit_w - 1, 0, fit_w, fit_h), (right, fit_h), (left + fit_w, top)),
    ]
    for extent, edge, size, where in bands:
        if extent > 0:
            canvas.paste(fitted.crop(edge).resize(size), where)
    return canvas


# ----------------------------------------------------------------------------------------------- masks
def mask_to_l(mask: Any, invert: bool = False) -> Any:
    """The mask as 8-bit grey, white = repaint: an RGBA mask's alpha, anything else its luminance."""
    from PIL import ImageOps

    grey = mask.getchannel("A") if mask.mode in ("RGBA", "LA") else mask.convert("L")
    return ImageOps.invert(grey) if invert else grey


def blur_mask(mask: Any, blur_x: int, blur_y: int) -> Any:
    """A Gaussian blur with sigma ``blur_x`` across and ``blur_y`` down (either may be 0)."""
    from PIL import ImageFilter

    if blur_x <= 0 and blur_y <= 0:
        return mask.copy()
    return mask.filter(ImageFilter.GaussianBlur((max(blur_x, 0), max(blur_y, 0))))


def blur_reach(blur_x: int, blur_y: int) -> tuple[int, int]:
    """How far (x, y pixels) the blur carries a mask's edge: beyond it the mask is exactly 0.

    Measured on a half-white image rather than derived, so it is exact for Pillow's blur (an extended box
    filter whose reach is about three sigma); a mask's pixels farther than this from every white pixel keep the
    original's values exactly.
    """
    return _reach(blur_x, "x"), _reach(blur_y, "y")


@lru_cache(maxsize=64)
def _reach(sigma: int, axis: str) -> int:
    import numpy as np
    from PIL import Image

    if sigma <= 0:
        return 0
    side = 8 * sigma + 16
    edge = Image.new("L", (2 * side, 1) if axis == "x" else (1, 2 * side), 0)
    edge.paste(255, (0, 0, side, 1) if axis == "x" else (0, 0, 1, side))
    blurred = blur_mask(edge, sigma if axis == "x" else 0, sigma if axis == "y" else 0)
    values = np.asarray(blurred).reshape(-1)[side:]
    lit = np.nonzero(values)[0]
    return int(lit[-1]) + 1 if lit.size else 0


def crop_region(mask: Any, padding: int) -> tuple[int, int, int, int] | None:
    """The box around the mask's non-zero pixels, grown by ``padding`` and kept inside the image."""
    box = mask.getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return max(0, x1 - padding), max(0, y1 - padding), min(mask.width, x2 + padding), min(mask.height, y2 + padding)


def expand_to_aspect(box: tuple[int, int, int, int], width: int, height: int,
                     image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Widen or heighten ``box`` around its centre to the output's aspect ratio, shifted to stay in the image."""
    x1, y1, x2, y2 = box
    image_w, image_h = image_size
    box_w, box_h = x2 - x1, y2 - y1
    if box_w / box_h > width / height:
        want = min(image_h, round(box_w * height / width))
        y1, y2 = _grow(y1, y2, want, image_h)
    else:
        want = min(image_w, round(box_h * width / height))
        x1, x2 = _grow(x1, x2, want, image_w)
    return x1, y1, x2, y2


def _grow(low: int, high: int, want: int, limit: int) -> tuple[int, int]:
    extra = max(0, want - (high - low))
    low -= extra // 2
    high += extra - extra // 2
    if high > limit:
        low, high = low - (high - limit), limit
    if low < 0:
        low, high = 0, min(limit, high - low)
    return low, high


# ----------------------------------------------------------------------------------------------- content
def fill_masked(image: Any, mask: Any) -> Any:
    """A1111's "fill": the masked area painted with the colours around it, coarse to fine.

    Each level averages the unmasked pixels over a smaller neighbourhood (a premultiplied down- and up-scale,
    which is a cheap wide blur) and overwrites the masked pixels it reaches, so the nearest colours win.
    """
    import numpy as np
    from PIL import Image

    rgb = image.convert("RGB")
    keep = (np.asarray(mask, dtype=np.float32) < 128).astype(np.float32)
    if keep.min() == 1.0 or keep.max() == 0.0:
        return rgb.copy()
    pixels = np.asarray(rgb, dtype=np.float32)
    result = pixels.copy()
    masked = keep == 0.0
    width, height = rgb.size
    for divisor in (64, 16, 4, 1):
        small = (max(1, width // divisor), max(1, height // divisor))
        weight = _rescale(keep, small, (width, height))
        colour = np.stack([_rescale(pixels[..., c] * keep, small, (width, height)) for c in range(3)], axis=-1)
        reached = masked & (weight > 1e-3)
        result[reached] = colour[reached] / weight[reached, None]
    return Image.fromarray(np.clip(np.rint(result), 0, 255).astype(np.uint8), "RGB")


def _rescale(values: Any, small: tuple[int, int], full: tuple[int, int]) -> Any:
    import numpy as np
    from PIL import Image

    plane = Image.fromarray(values.astype(np.float32), "F")
    return np.asarray(plane.resize(small, Image.Resampling.BOX).resize(full, Image.Resampling.BILINEAR))


def composite(generated: Any, original: Any, mask: Any) -> Any:
    """``generated`` where the (blurred) mask is white, ``original`` where it is black, blended between.

    Integer arithmetic, so a pixel where the mask is 0 is the original's exactly.
    """
    import numpy as np
    from PIL import Image

    alpha = np.asarray(mask.convert("L"), dtype=np.uint32)[..., None]
    new = np.asarray(generated.convert("RGB"), dtype=np.uint32)
    old = np.asarray(original.convert("RGB"), dtype=np.uint32)
    mixed = (new * alpha + old * (255 - alpha) + 127) // 255
    return Image.fromarray(mixed.astype(np.uint8), "RGB")


# ----------------------------------------------------------------------------------------------- plans
@dataclass
class PreparedImage:
    """One init image made ready for the pipeline, and what is needed to put the result back.

    ``pixels`` is what the VAE encodes (output size, or the image's own size rounded to 8 for the latent
    resize); ``mask`` what the pipeline repaints (output size, blurred) or None for img2img; ``base`` and
    ``base_mask`` the picture and blurred mask the result is composited onto; ``box`` the "Only masked" crop.
    """

    pixels: Any
    mask: Any = None
    base: Any = None
    base_mask: Any = None
    box: tuple[int, int, int, int] | None = None
    latent_resize: bool = False


def effective_mask(spec: Any) -> Any:
    """The mask as grey (inverted if asked), or None when nothing in it is to be repainted."""
    if spec is None:
        return None
    grey = mask_to_l(spec.image, spec.invert)
    return grey if grey.getbbox() is not None else None


def prepare(image: Any, source: Any, width: int, height: int) -> PreparedImage:
    """Resize, crop, blur and fill one init image as ``source`` says (see the module docstring)."""
    rgb = image.convert("RGB")
    grey = effective_mask(source.mask)
    latent = source.resize_mode == RESIZE_MODES[3]
    if grey is None:
        if latent:
            return PreparedImage(pixels=rgb.resize((max(8, rgb.width // 8 * 8), max(8, rgb.height // 8 * 8))),
                                 latent_resize=True)
        return PreparedImage(pixels=resize_image(rgb, source.resize_mode, width, height))
    spec = source.mask
    blurred = blur_mask(grey, spec.blur_x, spec.blur_y)
    if spec.area == INPAINT_AREAS[1]:
        box = crop_region(blurred, spec.padding) or (0, 0, rgb.width, rgb.height)
        box = expand_to_aspect(box, width, height, rgb.size)
        pixels = resize_image(rgb.crop(box), RESIZE_MODES[2], width, height)
        mask = resize_image(blurred.crop(box), RESIZE_MODES[2], width, height)
        base, base_mask = rgb, blurred
    else:
        mode = RESIZE_MODES[0] if latent else source.resize_mode
        pixels = resize_image(rgb, mode, width, height)
        mask = resize_image(blurred, mode, width, height)
        base, base_mask, box = pixels, mask, None
    if spec.content == MASKED_CONTENT[0]:
        pixels = fill_masked(pixels, mask)
    return PreparedImage(pixels=pixels, mask=mask, base=base, base_mask=base_mask, box=box)


def finish(prepared: PreparedImage, generated: Any) -> Any:
    """The generated picture put back: pasted into its crop, then the original composited outside the mask."""
    from PIL import Image

    if prepared.mask is None:
        return generated
    if prepared.box is None:
        return composite(generated, prepared.base, prepared.base_mask)
    x1, y1, x2, y2 = prepared.box
    pasted = prepared.base.copy()
    pasted.paste(generated.convert("RGB").resize((x2 - x1, y2 - y1), Image.Resampling.LANCZOS), (x1, y1))
    return composite(pasted, prepared.base, prepared.base_mask)
