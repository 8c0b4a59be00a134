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
from typing import Any

from sdlocal.engine.request import MAX_SOURCE_SIDE, RequestError

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
