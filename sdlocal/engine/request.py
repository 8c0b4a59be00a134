"""The one typed request the UI, the HTTP API and the command line hand to the engine, and what comes back.

Validation happens here, once, before any work: every adapter builds a ``GenerationRequest`` through
``GenerationRequest.build(...)`` (or the constructor followed by ``validate()``), and a bad value becomes a
``RequestError`` that names the field, the value and what is allowed, so the UI can show it next to the
control and the API can return it as a 422 without either of them knowing the rules.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

# Limits: wide enough for every real use, narrow enough that a typo (steps=10000) is caught before
# it ties up the GPU for an hour.
MAX_STEPS = 150
MAX_SIDE = 4096
MIN_SIDE = 64
MAX_BATCH_SIZE = 16
MAX_BATCH_COUNT = 100
MAX_CFG = 30.0
MAX_CLIP_SKIP = 12
MAX_SEED = 2**32 - 1  # A1111 seeds are unsigned 32-bit; -1 means "pick one at random"
MAX_TOKEN_MERGING = 0.9
MAX_PROMPT_CHARS = 20_000
MAX_INIT_IMAGES = 16
MAX_SOURCE_SIDE = 8192  # an init image may be larger than the output (it is resized), but not without bound
MAX_MASK_BLUR = 64
MAX_MASK_PADDING = 256

# A1111's names, in A1111's order: the API sends the index, the UI and the infotext the name.
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
INPAINT_AREAS = ("Whole picture", "Only masked")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
# A1111's "emphasis" option: how (word:1.2) weights act on the text encoder's output.
EMPHASIS_MODES = ("Original", "No norm", "Ignore")


class RequestError(ValueError):
    """A request value that cannot be used; ``field`` is the request's field name as the API spells it."""

    def __init__(self, field_name: str, value: Any, allowed: str) -> None:
        self.field = field_name
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field_name}: {value!r} is not allowed; {allowed}")


class EngineError(RuntimeError):
    """A failure the user can act on (out of memory, NaN images, a model that will not load).

    ``hint`` says what to do; adapters show message and hint, never a stack trace.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} {hint}".strip())


class ModelNotFoundError(EngineError):
    """The request named a model that discovery did not find; ``known`` lists what it did find."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
        super().__init__(
            f"model: {name!r} is not a known model.",
            f"Known models: {shown}" if known else "No models were found; put a .safetensors file in a models folder.",
        )


def _as_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        raise RequestError(name, value, f"must be a whole number from {lo} to {hi}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise RequestError(name, value, f"must be a whole number from {lo} to {hi}")
        value = int(value)
    elif isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise RequestError(name, value, f"must be a whole number from {lo} to {hi}") from None
    elif not isinstance(value, int):
        raise RequestError(name, value, f"must be a whole number from {lo} to {hi}")
    if not lo <= value <= hi:
        raise RequestError(name, value, f"must be from {lo} to {hi}")
    return value


def _as_float(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool):
        raise RequestError(name, value, f"must be a number from {lo:g} to {hi:g}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(name, value, f"must be a number from {lo:g} to {hi:g}") from None
    if not math.isfinite(number) or not lo <= number <= hi:
        raise RequestError(name, value, f"must be a number from {lo:g} to {hi:g}")
    return number


def _as_text(name: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RequestError(name, value, "must be text")
    if len(value) > MAX_PROMPT_CHARS:
        raise RequestError(name, f"<{len(value)} characters>", f"must be at most {MAX_PROMPT_CHARS} characters")
    return value


def _as_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """A name from ``choices`` (any case) or its index, as A1111's API sends it."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
        return choices[value]
    if isinstance(value, str):
        for choice in choices:
            if value.strip().lower() == choice.lower():
                return choice
    listed = ", ".join(f"{i} {c!r}" for i, c in enumerate(choices))
    raise RequestError(name, value, f"must be one of {listed}")


VAE_CHOICES = ("Automatic", "None")  # A1111's sd_vae values besides a VAE's name
MAX_VAE_NAME = 1000


def _as_vae(value: Any) -> str:
    """A1111's ``sd_vae``: "Automatic" (also for "" and None), "None", or a VAE's name (checked by the engine)."""
    if value is None:
        return "Automatic"
    if not isinstance(value, str) or len(value) > MAX_VAE_NAME:
        raise RequestError("vae", value, "must be a VAE name (as GET /sdapi/v1/sd-vae lists them), Automatic or None")
    text = value.strip()
    return next((choice for choice in VAE_CHOICES if text.lower() == choice.lower()), text or "Automatic")


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):  # A1111's API sends inpainting_mask_invert as 0/1
        return bool(value)
    raise RequestError(name, value, "must be true or false")


def _check_image(name: str, image: Any) -> tuple[int, int]:
    size = getattr(image, "size", None)
    if not (isinstance(size, tuple) and len(size) == 2 and hasattr(image, "mode")):
        raise RequestError(name, type(image).__name__, "must be an image (PNG, JPEG or WebP)")
    width, height = size
    if width < 1 or height < 1:
        raise RequestError(name, f"{width}x{height}", "is empty; give an image with pixels")
    if width > MAX_SOURCE_SIDE or height > MAX_SOURCE_SIDE:
        raise RequestError(name, f"{width}x{height}", f"is too large; each side must be at most {MAX_SOURCE_SIDE}")
    return width, height


def _from_dict(cls: Any, values: dict, name: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        allowed = f"is not a field; fields are {', '.join(sorted(known))}"
        raise RequestError(f"{name}.{unknown[0]}", values[unknown[0]], allowed)
    return cls(**values)


@dataclass
class MaskSpec:
    """Inpainting: which part of the init image to repaint, and how (A1111's inpaint controls).

    ``image`` is white where to repaint; an RGBA mask uses its alpha instead. ``blur_x``/``blur_y`` are the
    Gaussian's sigma in pixels; ``padding`` is used only with ``area == "Only masked"``; ``conditional_weight``
    only by 9-channel inpainting checkpoints (1 = the masked image, 0 = the whole original as conditioning).
    """

    image: Any = None  # PIL.Image.Image
    blur_x: int = 4
    blur_y: int = 4
    invert: bool = False
    area: str = "Whole picture"
    padding: int = 32
    content: str = "original"
    conditional_weight: float = 1.0

    def validate(self) -> MaskSpec:
        _check_image("mask", self.image)
        self.blur_x = _as_int("mask_blur_x", self.blur_x, 0, MAX_MASK_BLUR)
        self.blur_y = _as_int("mask_blur_y", self.blur_y, 0, MAX_MASK_BLUR)
        self.invert = _as_bool("inpainting_mask_invert", self.invert)
        self.area = _as_choice("inpaint_area", self.area, INPAINT_AREAS)
        self.padding = _as_int("inpaint_full_res_padding", self.padding, 0, MAX_MASK_PADDING)
        self.content = _as_choice("inpainting_fill", self.content, MASKED_CONTENT)
        self.conditional_weight = self.validate_weight(self.conditional_weight)
        return self

    @staticmethod
    def validate_weight(value: Any) -> float:
        """The conditional mask weight: a number from 0 (the whole original) to 1 (the masked image)."""
        return _as_float("conditional_mask_weight", value, 0.0, 1.0)


@dataclass
class ImageSource:
    """img2img: the init image(s) a run starts from; with ``mask`` it is inpainting.

    Image i of the run starts from ``images[i % len(images)]``. Field names in errors are the API's.
    """

    images: list[Any] = field(default_factory=list)  # PIL.Image.Image
    denoising_strength: float = 0.75
    resize_mode: str = "Just resize"
    mask: MaskSpec | None = None

    def validate(self) -> ImageSource:
        if not isinstance(self.images, list | tuple) or not self.images:
            raise RequestError("init_images", self.images, "must hold at least one image")
        if len(self.images) > MAX_INIT_IMAGES:
            raise RequestError("init_images", f"<{len(self.images)} images>", f"must hold at most {MAX_INIT_IMAGES}")
        self.images = list(self.images)
        sizes = [_check_image("init_images", image) for image in self.images]
        self.denoising_strength = _as_float("denoising_strength", self.denoising_strength, 0.0, 1.0)
        self.resize_mode = _as_choice("resize_mode", self.resize_mode, RESIZE_MODES)
        if isinstance(self.mask, dict):
            self.mask = _from_dict(MaskSpec, self.mask, "mask")
        if self.mask is not None:
            if not isinstance(self.mask, MaskSpec):
                raise RequestError("mask", type(self.mask).__name__, "must be a mask image")
            self.mask.validate()
            for index, size in enumerate(sizes):
                if size != self.mask.image.size:
                    raise RequestError("mask", "x".join(map(str, self.mask.image.size)),
                                       f"must be the size of its image: init image {index + 1} is "
                                       f"{size[0]}x{size[1]}; paint or resize the mask to match")
        return self


MAX_HR_SCALE = 8.0
USE_SAME = "Use same"  # A1111's choice for the hires sampler and schedule: the first pass's


@dataclass
class HiresSizes:
    """Hires fix's sizes: the first pass is upscaled to ``upscale_*``, then centre-cropped to ``final_*``."""

    upscale_width: int
    upscale_height: int
    final_width: int
    final_height: int


def _multiple_of_8(value: float) -> int:
    return max(MIN_SIDE, int(value) // 8 * 8)


@dataclass
class HiresSpec:
    """Hires fix (txt2img only): generate at the request's size, upscale, then denoise again at the larger size.

    A1111's rules and defaults: the target is ``scale`` x the size unless ``resize_x``/``resize_y`` are given (one
    of them 0: the other follows the aspect ratio; both: upscale to cover, then crop). ``steps`` 0 = the first
    pass's steps; the second pass runs exactly that many. ``sampler``/``schedule`` "Use same" = the first pass's;
    an empty ``prompt``/``negative_prompt`` = the first pass's. ``denoising_strength`` 0 skips the second pass
    (the upscaled image is the result). Field names in errors are the API's (``hr_scale``...).
    """

    scale: float = 2.0
    resize_x: int = 0
    resize_y: int = 0
    upscaler: str = "Latent"
    steps: int = 0
    denoising_strength: float = 0.7
    sampler: str = USE_SAME
    schedule: str = USE_SAME
    prompt: str = ""
    negative_prompt: str = ""

    def sizes(self, width: int, height: int) -> HiresSizes:
        """The upscale and final sizes for a first pass of ``width`` x ``height``, each a multiple of 8 (the VAE
        works in 8-pixel cells, so that is the size the second pass makes)."""
        x, y = self.resize_x, self.resize_y
        if x == 0 and y == 0:
            w, h = width * self.scale, height * self.scale
            return HiresSizes(_multiple_of_8(w), _multiple_of_8(h), _multiple_of_8(w), _multiple_of_8(h))
        if y == 0:
            size = (x, x * height // width)
            return HiresSizes(*map(_multiple_of_8, size), *map(_multiple_of_8, size))
        if x == 0:
            size = (y * width // height, y)
            return HiresSizes(*map(_multiple_of_8, size), *map(_multiple_of_8, size))
        if width / height < x / y:  # cover the target box, then crop the overflow (A1111's "both set")
            upscale = (x, x * height // width)
        else:
            upscale = (y * width // height, y)
        return HiresSizes(*map(_multiple_of_8, upscale), _multiple_of_8(x), _multiple_of_8(y))

    def second_pass_steps(self, steps: int) -> int:
        """Steps the second pass runs: ``self.steps``, or the first pass's when 0; none when the strength is 0."""
        if self.denoising_strength <= 0:
            return 0
        return self.steps or steps

    def validate(self, width: int, height: int) -> HiresSpec:
        self.scale = _as_float("hr_scale", self.scale, 1.0, MAX_HR_SCALE)
        for name in ("resize_x", "resize_y"):
            value = _as_int(f"hr_{name}", getattr(self, name), 0, MAX_SIDE)
            if 0 < value < MIN_SIDE:
                raise RequestError(f"hr_{name}", value,
                                   f"must be 0 (follow the other side) or {MIN_SIDE} to {MAX_SIDE}")
            setattr(self, name, value)
        if not isinstance(self.upscaler, str) or not self.upscaler.strip():
            raise RequestError("hr_upscaler", self.upscaler, "must be an upscaler name as GET /sdapi/v1/upscalers "
                                                             "lists them, or a latent mode such as 'Latent'")
        self.upscaler = self.upscaler.strip()
        self.steps = _as_int("hr_second_pass_steps", self.steps, 0, MAX_STEPS)
        self.denoising_strength = _as_float("denoising_strength", self.denoising_strength, 0.0, 1.0)
        for name in ("sampler", "schedule"):
            value = getattr(self, name)
            if value is None or (isinstance(value, str) and not value.strip()):
                value = USE_SAME
            if not isinstance(value, str):
                raise RequestError(f"hr_{name}", value, f"must be a name, or {USE_SAME!r}")
            setattr(self, name, USE_SAME if value.strip().lower() == USE_SAME.lower() else value.strip())
        self.prompt = _as_text("hr_prompt", self.prompt)
        self.negative_prompt = _as_text("hr_negative_prompt", self.negative_prompt)
        sizes = self.sizes(width, height)
        largest = max(sizes.upscale_width, sizes.upscale_height)
        if largest > MAX_SIDE:
            field_name = "hr_scale" if self.resize_x == 0 and self.resize_y == 0 else \
                ("hr_resize_x" if self.resize_x else "hr_resize_y")
            raise RequestError(field_name, getattr(self, field_name[3:]),
                               f"makes {sizes.upscale_width}x{sizes.upscale_height}; each side must be at most "
                               f"{MAX_SIDE}: lower it or the first pass's size")
        return self


@dataclass
class GenerationRequest:
    """A txt2img request in A1111's terms (sampler names, schedule types, seed -1 for random).

    With a ``source`` it is img2img, and with ``source.mask`` inpainting: the same fields, the same checks.
    """

    prompt: str = ""
    negative_prompt: str = ""
    model: str = ""  # a model name, an A1111 title "name [hash]", or "" for the loaded/default model
    sampler: str = "Euler a"
    schedule: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    seed: int = -1
    batch_size: int = 1
    batch_count: int = 1
    clip_skip: int = 1
    token_merging_ratio: float = 0.0
    vae_tiling: bool = False
    emphasis: str = "Original"
    vae: str = "Automatic"  # A1111's sd_vae: "Automatic", "None" (the checkpoint's own) or a VAE's name
    source: ImageSource | None = None
    hires: HiresSpec | None = None  # hires fix (txt2img only)

    @property
    def mode(self) -> str:
        """"txt2img", "img2img" or "inpaint"."""
        if self.source is None:
            return "txt2img"
        return "inpaint" if self.source.mask is not None else "img2img"

    @property
    def output_kind(self) -> str:
        """The outputs folder, as A1111 names it: inpainting results go with img2img's."""
        return "txt2img" if self.source is None else "img2img"

    def denoising_steps(self) -> int:
        """Steps that actually run: all of them for txt2img (plus hires fix's second pass); int(steps x
        min(strength, 0.999)) for img2img.

        That is A1111's rule with its default settings; a run always takes at least one step.
        """
        if self.source is None:
            return self.steps + (self.hires.second_pass_steps(self.steps) if self.hires is not None else 0)
        return max(1, int(self.steps * min(self.source.denoising_strength, 0.999)))

    def validate(self) -> GenerationRequest:
        """Check and normalise every field in place; raise ``RequestError`` on the first bad one."""
        self.prompt = _as_text("prompt", self.prompt)
        self.negative_prompt = _as_text("negative_prompt", self.negative_prompt)
        if not isinstance(self.model, str):
            raise RequestError("model", self.model, "must be a model name")
        self.model = self.model.strip()
        if not isinstance(self.sampler, str) or not self.sampler.strip():
            raise RequestError("sampler", self.sampler, "must be a sampler name such as 'Euler a'")
        if not isinstance(self.schedule, str) or not self.schedule.strip():
            raise RequestError("schedule", self.schedule, "must be a schedule type such as 'Automatic'")
        self.steps = _as_int("steps", self.steps, 1, MAX_STEPS)
        self.cfg_scale = _as_float("cfg_scale", self.cfg_scale, 0.0, MAX_CFG)
        for side in ("width", "height"):
            value = _as_int(side, getattr(self, side), MIN_SIDE, MAX_SIDE)
            if value % 8:
                lower = value // 8 * 8
                raise RequestError(side, value, f"must be a multiple of 8 (try {lower} or {lower + 8})")
            setattr(self, side, value)
        self.seed = _as_int("seed", self.seed, -1, MAX_SEED)
        self.batch_size = _as_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        self.batch_count = _as_int("batch_count", self.batch_count, 1, MAX_BATCH_COUNT)
        self.clip_skip = _as_int("clip_skip", self.clip_skip, 1, MAX_CLIP_SKIP)
        self.token_merging_ratio = _as_float("token_merging_ratio", self.token_merging_ratio, 0.0, MAX_TOKEN_MERGING)
        if not isinstance(self.vae_tiling, bool):
            raise RequestError("vae_tiling", self.vae_tiling, "must be true or false")
        self.emphasis = _as_choice("emphasis", self.emphasis, EMPHASIS_MODES)
        self.vae = _as_vae(self.vae)
        if isinstance(self.source, dict):
            self.source = _from_dict(ImageSource, self.source, "source")
        if self.source is not None:
            if not isinstance(self.source, ImageSource):
                raise RequestError("init_images", type(self.source).__name__, "must be init images")
            self.source.validate()
        if isinstance(self.hires, dict):
            self.hires = _from_dict(HiresSpec, self.hires, "hires")
        if self.hires is not None:
            if not isinstance(self.hires, HiresSpec):
                raise RequestError("enable_hr", type(self.hires).__name__, "must be hires fix settings")
            if self.source is not None:
                raise RequestError("enable_hr", True, "hires fix is for txt2img; for img2img set the larger size "
                                                      "itself (or upscale on the Extras tab)")
            self.hires.validate(self.width, self.height)
        return self

    @classmethod
    def build(cls, **values: Any) -> GenerationRequest:
        """Build and validate from loose values (form fields, JSON); unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            allowed = f"is not a request field; fields are {', '.join(sorted(known))}"
            raise RequestError(unknown[0], values[unknown[0]], allowed)
        return cls(**values).validate()

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain values; the source's images are left out (they are pixels, not settings)."""
        values = asdict(replace(self, source=None))
        if self.source is not None:
            mask = self.source.mask
            values["source"] = {
                "images": len(self.source.images), "denoising_strength": self.source.denoising_strength,
                "resize_mode": self.source.resize_mode,
                "mask": None if mask is None else {k: v for k, v in asdict(replace(mask, image=None)).items()
                                                   if k != "image"},
            }
        return values


@dataclass
class GeneratedImage:
    """One finished image with the seed that made it and its A1111 ``parameters`` text."""

    image: Any  # PIL.Image.Image; typed loosely so this module does not import PIL
    seed: int
    infotext: str
    index: int  # position in the whole run (batch_count x batch_size)


@dataclass
class GenerationResult:
    """What a run produced. ``interrupted`` is true when the user stopped it; the finished images are kept."""

    images: list[GeneratedImage]
    request: GenerationRequest
    model_name: str
    model_hash: str
    seeds: list[int]
    timings: dict[str, float] = field(default_factory=dict)  # seconds: load, generate, total
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)
    vae_name: str = ""  # the VAE file used instead of the checkpoint's own ("" when it was its own)
    vae_hash: str = ""


@dataclass
class Progress:
    """One sampling step's report. ``preview`` is a small PIL image (cheap latent preview) or None."""

    step: int  # steps done in the current image batch
    total_steps: int
    batch_index: int  # which of batch_count is running (0-based)
    batch_count: int
    eta_seconds: float
    preview: Any = None

    @property
    def fraction(self) -> float:
        """Progress of the whole run from 0 to 1, across all batches."""
        done = self.batch_index * self.total_steps + self.step
        return min(1.0, done / max(1, self.total_steps * self.batch_count))


ProgressCallback = Callable[[Progress], None]


class RunControl:
    """The Interrupt and Skip buttons of one run, pressed from any thread, before or during the run.

    Whoever starts a run owns its control (the job queue makes one per job), so a button pressed while the
    run is still starting is kept for that run and never reaches the next one. An interrupt stays set; a skip
    is pending until the run acts on it: in the middle of a batch it abandons that batch, between two batches
    (or before the first) it skips the next one.
    """

    def __init__(self) -> None:
        self._interrupt = threading.Event()
        self._skip = threading.Event()
        self._lock = threading.Lock()

    def interrupt(self) -> None:
        self._interrupt.set()

    def skip(self) -> None:
        self._skip.set()

    @property
    def interrupted(self) -> bool:
        return self._interrupt.is_set()

    @property
    def skipped(self) -> bool:
        """A skip is pending (pressed and not yet acted on)."""
        return self._skip.is_set()

    def take_skip(self) -> bool:
        """Act on a pending skip: True once per press, and the press is used up."""
        with self._lock:
            if self._skip.is_set():
                self._skip.clear()
                return True
            return False
