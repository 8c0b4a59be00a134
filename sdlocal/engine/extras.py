"""The Extras tab's work: upscale finished pictures with one or two upscalers, as A1111's Extras does.

A1111's rules (its "Upscale" postprocessing step, v1.10), kept so that API clients and the texts written into
the PNGs are the same:

* "Scale by" a factor (1 to 8): the output is ``int(side x factor)`` rounded down to a multiple of 8.
* "Scale to" a width and height: the factor is the larger of ``W / w`` and ``H / h`` (the picture keeps its
  aspect ratio and covers the box); with "crop" the cover is then centre-cropped to exactly ``W x H``; without,
  the covering picture is the result (A1111 does not squash it to the box).
* Upscaler 1 "None" leaves the picture as it is (nothing runs, nothing is written). Upscaler 2 runs on the
  *source* too, only when it is not "None" and its visibility is above 0, and the two results are blended:
  ``Image.blend(up1, up2, visibility)``.
* The Postprocessing text lists what ran: "Postprocess upscale by: 2" or "Postprocess upscale to: WxH",
  "Postprocess crop to: WxH", "Postprocess upscaler: NAME", "Postprocess upscaler 2: NAME".

The upscaling itself is the caller's (``Engine.postprocess`` passes ``Engine.upscale``), so these rules are
tested alone with Pillow resamplers, and the engine owns devices, models and the run lock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sdlocal.engine.infotext import quote
from sdlocal.engine.request import MAX_SOURCE_SIDE, RequestError, RunControl

RESIZE_MODES = ("Scale by", "Scale to")  # A1111's tabs; the API sends their index (0 / 1)
MIN_SCALE, MAX_SCALE = 1.0, 8.0  # A1111's "Resize" slider and its API's bounds
MAX_EXTRAS_SIDE = MAX_SOURCE_SIDE  # an output side past this is refused (the largest picture sdlocal takes in)
MAX_EXTRAS_IMAGES = 100  # one batch; more is a folder job for the CLI, not one request
MAX_UPSCALER_NAME = 1000

# upscale(image, upscaler name, width, height, control, on_progress(done, total)) -> the picture at that size.
Upscale = Callable[..., Any]


@dataclass
class ExtrasImage:
    """One source picture; ``parameters`` is its own A1111 text (kept unchanged in the saved PNG)."""

    image: Any
    name: str = ""
    parameters: str | None = None


@dataclass
class ExtrasRequest:
    """What to do to ``images``, in A1111's Extras terms; field names in errors are the API's."""

    images: list[ExtrasImage]
    resize_mode: str = "Scale by"  # "Scale by" | "Scale to" (API 0 / 1)
    scale: float = 2.0  # upscaling_resize
    width: int = 512  # upscaling_resize_w
    height: int = 512  # upscaling_resize_h
    crop: bool = True  # upscaling_crop
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    upscaler_2_visibility: float = 0.0  # extras_upscaler_2_visibility

    def validate(self) -> ExtrasRequest:
        """Check every field once (types, ranges, output sizes); the upscaler names are checked by the engine."""
        if not isinstance(self.images, list) or not self.images:
            raise RequestError("image", "<none>", "give at least one image")
        if len(self.images) > MAX_EXTRAS_IMAGES:
            raise RequestError("imageList", f"<{len(self.images)} images>", f"must hold at most {MAX_EXTRAS_IMAGES}")
        self.resize_mode = _resize_mode(self.resize_mode)
        self.scale = _number("upscaling_resize", self.scale, MIN_SCALE, MAX_SCALE)
        self.width = _whole("upscaling_resize_w", self.width, 1, MAX_EXTRAS_SIDE)
        self.height = _whole("upscaling_resize_h", self.height, 1, MAX_EXTRAS_SIDE)
        if not isinstance(self.crop, bool):
            raise RequestError("upscaling_crop", self.crop, "must be true or false")
        self.upscaler_1 = _name("upscaler_1", self.upscaler_1)
        self.upscaler_2 = _name("upscaler_2", self.upscaler_2)
        self.upscaler_2_visibility = _number("extras_upscaler_2_visibility", self.upscaler_2_visibility, 0.0, 1.0)
        for index, item in enumerate(self.images):
            if not isinstance(item, ExtrasImage) or not hasattr(item.image, "size"):
                raise RequestError("image", f"<item {index}>", "must be a picture")
            if self.upscaler_1 != "None":
                self._check_size(index, *item.image.size)
        return self

    def _check_size(self, index: int, width: int, height: int) -> None:
        """Refuse an output side over the limit, naming the field that makes it (the factor or the box side)."""
        plan = plan_size(self, width, height)
        if max(plan.upscale_width, plan.upscale_height) <= MAX_EXTRAS_SIDE:
            return
        if self.resize_mode == RESIZE_MODES[0]:
            field_name, value = "upscaling_resize", self.scale
        elif self.width / width >= self.height / height:
            field_name, value = "upscaling_resize_w", self.width
        else:
            field_name, value = "upscaling_resize_h", self.height
        which = f" (image {index + 1})" if len(self.images) > 1 else ""
        raise RequestError(field_name, value, f"makes {plan.upscale_width}x{plan.upscale_height}{which}; each "
                           f"side must be at most {MAX_EXTRAS_SIDE}: lower it or upscale a smaller picture")

    @property
    def second_upscaler(self) -> bool:
        """Upscaler 2 runs (A1111: a real upscaler with a visibility above 0, and upscaler 1 running)."""
        return self.upscaler_1 != "None" and self.upscaler_2 != "None" and self.upscaler_2_visibility > 0


@dataclass
class ExtrasOutput:
    image: Any
    infotext: str  # the Postprocessing text ("" when nothing ran)
    parameters: str | None  # the source's own parameters text, kept
    name: str


@dataclass
class ExtrasResult:
    images: list[ExtrasOutput]
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SizePlan:
    """The size the upscalers make and, when cropping, the box it is cut to (else ``crop_*`` are 0)."""

    upscale_width: int
    upscale_height: int
    crop_width: int = 0
    crop_height: int = 0


def plan_size(request: ExtrasRequest, width: int, height: int) -> SizePlan:
    """The sizes for a ``width`` x ``height`` source under A1111's rules (see the module docstring)."""
    if request.resize_mode == RESIZE_MODES[0]:
        return SizePlan(_floor8(width * request.scale), _floor8(height * request.scale))
    factor = max(request.width / width, request.height / height)
    up_w, up_h = _floor8(width * factor), _floor8(height * factor)
    if not request.crop:
        return SizePlan(up_w, up_h)
    if up_w < request.width or up_h < request.height:
        # Rounding down to 8 fell short of the box: cover it exactly instead (A1111 would leave a black edge).
        up_w, up_h = max(request.width, math.ceil(width * factor)), max(request.height, math.ceil(height * factor))
    return SizePlan(up_w, up_h, request.width, request.height)


def postprocessing_text(request: ExtrasRequest, plan: SizePlan) -> str:
    """A1111's Postprocessing line for what ran ("" when upscaler 1 is "None")."""
    if request.upscaler_1 == "None":
        return ""
    items: dict[str, Any] = {}
    if request.resize_mode == RESIZE_MODES[0]:
        items["Postprocess upscale by"] = f"{request.scale:g}"
    else:
        items["Postprocess upscale to"] = f"{request.width}x{request.height}"
    if plan.crop_width:
        items["Postprocess crop to"] = f"{plan.crop_width}x{plan.crop_height}"
    items["Postprocess upscaler"] = request.upscaler_1
    if request.second_upscaler:
        items["Postprocess upscaler 2"] = request.upscaler_2
    return ", ".join(f"{key}: {quote(value)}" for key, value in items.items())


def run_extras(request: ExtrasRequest, upscale: Upscale,
               on_progress: Callable[[int, int, int, int], None] | None = None,
               control: RunControl | None = None) -> ExtrasResult:
    """Upscale every image of a validated ``request`` with ``upscale`` (``Engine.upscale``'s signature).

    ``on_progress(image_index, images_total, tiles_done, tiles_total)``. An interrupt stops between images (and,
    inside ``upscale``, between tiles): the images finished are kept, the one cut short is dropped.
    """
    started = time.perf_counter()
    control = control if control is not None else RunControl()
    outputs: list[ExtrasOutput] = []
    total = len(request.images)
    interrupted = False
    for index, item in enumerate(request.images):
        if control.interrupted:
            interrupted = True
            break
        if on_progress is not None:
            on_progress(index, total, 0, 0)
        try:
            image, text = _one(request, item.image, upscale, control, _tile_progress(on_progress, index, total))
        except Exception:
            if control.interrupted:  # the upscaler stopped between tiles: keep what is done, drop this one
                interrupted = True
                break
            raise
        outputs.append(ExtrasOutput(image=image, infotext=text, parameters=item.parameters, name=item.name))
    if on_progress is not None and not interrupted:
        on_progress(total, total, 0, 0)
    return ExtrasResult(images=outputs, interrupted=interrupted,
                        timings={"upscale": round(time.perf_counter() - started, 3)})


def _one(request: ExtrasRequest, source: Any, upscale: Upscale, control: RunControl,
         on_tiles: Callable[[int, int], None] | None) -> tuple[Any, str]:
    """One picture through upscaler 1 (and 2, blended), then the crop; the picture and its Postprocessing text."""
    from PIL import Image

    image = source.convert("RGB") if source.mode != "RGB" else source
    if request.upscaler_1 == "None":
        return image, ""
    plan = plan_size(request, *image.size)
    size = (plan.upscale_width, plan.upscale_height)
    result = upscale(image, request.upscaler_1, *size, control=control, on_progress=on_tiles)
    if request.second_upscaler:
        second = upscale(image, request.upscaler_2, *size, control=control, on_progress=on_tiles)
        result = Image.blend(result.convert("RGB"), second.convert("RGB"), request.upscaler_2_visibility)
    if plan.crop_width:
        left = (result.width - plan.crop_width) // 2
        top = (result.height - plan.crop_height) // 2
        result = result.crop((left, top, left + plan.crop_width, top + plan.crop_height))
    return result, postprocessing_text(request, plan)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def load_images(paths: list[Any], field_name: str = "image") -> list[ExtrasImage]:
    """Source pictures from files (the Extras tab's batch), each with its own ``parameters`` kept; a file that
    cannot be read is a ``RequestError`` naming ``field_name`` and the file."""
    from pathlib import Path

    from sdlocal.engine.images import decode_image
    from sdlocal.outputs import read_image_info

    if len(paths) > MAX_EXTRAS_IMAGES:
        raise RequestError(field_name, f"<{len(paths)} files>", f"must be at most {MAX_EXTRAS_IMAGES} at once")
    images = []
    for raw in paths:
        path = Path(raw)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RequestError(field_name, str(path), f"cannot be read ({exc.strerror or exc})") from None
        try:
            image = decode_image(data, field_name)
        except RequestError as exc:
            raise RequestError(field_name, path.name, exc.allowed) from None
        try:
            parameters = read_image_info(path)[0]
        except Exception:  # noqa: BLE001 - the pixels were readable; a broken text chunk only loses the text
            parameters = None
        images.append(ExtrasImage(image=image, name=path.name, parameters=parameters))
    return images


def load_folder(folder: Any, field_name: str = "input_dir") -> list[ExtrasImage]:
    """Every picture directly in ``folder`` (A1111's "Batch from Directory"), in name order."""
    from pathlib import Path

    path = Path(str(folder or "")).expanduser()
    if not str(folder or "").strip() or not path.is_dir():
        raise RequestError(field_name, str(folder), "must be an existing folder of images")
    files = sorted(item for item in path.iterdir() if item.is_file() and item.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise RequestError(field_name, str(folder), f"holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return load_images(files, field_name)


def _tile_progress(on_progress: Callable[[int, int, int, int], None] | None, index: int,
                   total: int) -> Callable[[int, int], None] | None:
    if on_progress is None:
        return None
    return lambda done, tiles: on_progress(index, total, done, tiles)


def _floor8(value: float) -> int:
    """A1111's output side: rounded down to a multiple of 8, and never below 8."""
    return max(8, int(value // 8 * 8))


def _resize_mode(value: Any) -> str:
    if isinstance(value, bool):
        raise RequestError("resize_mode", value, "must be 0 (Scale by) or 1 (Scale to)")
    if isinstance(value, int) and 0 <= value < len(RESIZE_MODES):
        return RESIZE_MODES[value]
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() and int(text) < len(RESIZE_MODES):
            return RESIZE_MODES[int(text)]
        for mode in RESIZE_MODES:
            if text.lower() == mode.lower():
                return mode
    raise RequestError("resize_mode", value, "must be 0 (Scale by) or 1 (Scale to)")


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(name, value, f"must be a number from {low:g} to {high:g}")
    if not low <= value <= high:
        raise RequestError(name, value, f"must be from {low:g} to {high:g}")
    return float(value)


def _whole(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(name, value, f"must be a whole number from {low} to {high}")
    if not low <= value <= high:
        raise RequestError(name, value, f"must be from {low} to {high}")
    return value


def _name(name: str, value: Any) -> str:
    if value is None:
        return "None"
    if not isinstance(value, str) or len(value) > MAX_UPSCALER_NAME:
        raise RequestError(name, value, "must be an upscaler name as GET /sdapi/v1/upscalers lists them, or None")
    text = value.strip()
    return "None" if not text or text.lower() == "none" else text
