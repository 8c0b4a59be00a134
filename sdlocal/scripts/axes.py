"""The X/Y/Z plot's axes, in A1111's order (the API sends an axis as its index in this list).

A1111 lists 43 axes; txt2img sees 40 of them and img2img 39. sdlocal keeps every one in its place so an index
an A1111 client sends means the same axis here. The axes sdlocal can vary have an ``apply``; the others (a
sampler's sigma settings, refiners, face restoration...) carry the reason they cannot be plotted, so asking
for one is a clear error rather than a silently unchanged grid, and the UI lists only the usable ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from sdlocal.engine.request import GenerationRequest, RequestError
from sdlocal.scripts.plan import ScriptContext
from sdlocal.scripts.values import expand_floats, expand_ints, parse_size, split_values

Apply = Callable[[GenerationRequest, Any, list[Any], ScriptContext, str], None]
BOTH, TXT2IMG, IMG2IMG = "both", "txt2img", "img2img"


@dataclass(frozen=True)
class Axis:
    """One axis: how its values are read (``kind``), how a cell's request takes one (``apply``), how a legend
    shows it, and how slow a change is (``cost``: a checkpoint 1.0, a VAE 0.7; the costliest runs outermost)."""

    label: str
    kind: str = "str"  # "int", "float", "str", "size", "permutations" or "nothing"
    apply: Apply | None = None
    mode: str = BOTH
    cost: float = 0.0
    choices: Callable[[ScriptContext], list[str]] | None = None
    legend: str = "label"  # "label" ("Steps: 20"), "value" ("Euler a"), "path" (a file name), "join", "none"
    reason: str = ""  # why the axis cannot be plotted here; "" when it can

    @property
    def supported(self) -> bool:
        return self.apply is not None

    def values(self, text: str, dropdown: list[str] | None, field: str) -> list[Any]:
        """The axis's values from its text box (or, for a list axis, the dropdown's picks), expanded and typed."""
        if self.kind == "nothing":
            return [None]
        items = list(dropdown) if dropdown else split_values(text or "")
        if self.kind == "int":
            values: list[Any] = expand_ints(items, field)
        elif self.kind == "float":
            values = expand_floats(items, field)
        elif self.kind == "size":
            values = [parse_size(item, field) for item in items if item]
        elif self.kind == "permutations":
            values = [list(order) for order in itertools.permutations(items)]
        else:
            values = items
        if not values:
            raise RequestError(field, text, f"gives no values for {self.label}; write them separated by commas")
        return values

    def format(self, value: Any) -> str:
        """The legend text for one value, as A1111 writes it."""
        if self.legend == "none":
            return ""
        if self.kind == "size":
            value = f"{value[0]}x{value[1]}"
        elif isinstance(value, float):
            value = f"{value:g}"
        if self.legend == "join":
            return ", ".join(value)
        if self.legend == "path":
            return PurePath(str(value)).name
        if self.legend == "value":
            return str(value)
        return f"{self.label}: {value}"

    def infotext_values(self, values: list[Any]) -> list[str]:
        """The values as the grid's ``X Values`` writes them (the UI and PNG Info read them back)."""
        if self.kind == "size":
            return [f"{w}x{h}" for w, h in values]
        if self.kind == "permutations":
            return list(values[0]) if values else []
        return [f"{value:g}" if isinstance(value, float) else str(value) for value in values]


# ---------------------------------------------------------------------------------------------- applying
def _field(name: str) -> Apply:
    def apply(request: GenerationRequest, value: Any, values: list[Any], ctx: ScriptContext, field: str) -> None:
        setattr(request, name, value)
    return apply


def _hires(name: str, label: str) -> Apply:
    def apply(request: GenerationRequest, value: Any, values: list[Any], ctx: ScriptContext, field: str) -> None:
        if request.hires is None:
            raise RequestError(field, label, "plots a hires fix setting; turn on Hires fix (enable_hr) first")
        setattr(request.hires, name, value)
    return apply


def _prompt_sr(request: GenerationRequest, value: Any, values: list[Any], ctx: ScriptContext, field: str) -> None:
    first = values[0]
    if not first or (first not in request.prompt and first not in request.negative_prompt):
        raise RequestError(field, first, "is Prompt S/R's first value, which must appear in the prompt or the "
                                         "negative prompt (each cell replaces it with one of the values)")
    request.prompt = request.prompt.replace(first, value)
    request.negative_prompt = request.negative_prompt.replace(first, value)


def _prompt_order(request: GenerationRequest, value: Any, values: list[Any], ctx: ScriptContext, field: str) -> None:
    """Put the listed words of the prompt in this order, leaving the text around them where it was."""
    prompt = request.prompt
    missing = [word for word in value if word not in prompt]
    if missing:
        raise RequestError(field, missing[0], "is a Prompt order value that is not in the prompt")
    found = sorted((prompt.find(word), word) for word in value)
    parts, rest = [], prompt
    for _, word in found:
        at = rest.find(word)
        parts.append(rest[:at])
        rest = rest[at + len(word):]
    request.prompt = "".join(part + word for part, word in zip(parts, value, strict=True)) + rest


def _checkpoint(request: GenerationRequest, value: Any, values: list[Any], ctx: ScriptContext, field: str) -> None:
    from sdlocal.engine.request import ModelNotFoundError

    try:
        entry = ctx.engine.find_model(str(value))
    except ModelNotFoundError as exc:
        raise RequestError(field, value, f"is not a model here; {exc.hint or 'see GET /sdapi/v1/sd-models'}") \
            from None
    if not getattr(entry, "supported", True):
        raise RequestError(field, value, f"cannot be loaded: {entry.reason}")
    request.model = entry.name


def _denoising(request: GenerationRequest, value: Any, values: list[Any], ctx: ScriptContext, field: str) -> None:
    if request.source is not None:
        request.source.denoising_strength = value
    elif request.hires is not None:
        request.hires.denoising_strength = value
    else:
        raise RequestError(field, "Denoising", "changes nothing in txt2img without hires fix; turn on Hires fix "
                                              "(its denoising strength is what this axis varies) or use img2img")


def _mask_weight(request: GenerationRequest, value: Any, values: list[Any], ctx: ScriptContext, field: str) -> None:
    mask = request.source.mask if request.source is not None else None
    if mask is None:
        raise RequestError(field, "Cond. Image Mask Weight", "is for inpainting; give a mask first")
    mask.conditional_weight = value


def _styles(request: GenerationRequest, value: Any, values: list[Any], ctx: ScriptContext, field: str) -> None:
    from sdlocal.styles import apply_styles

    names = [name.strip() for name in str(value).split(",") if name.strip()]
    try:
        request.prompt, request.negative_prompt = apply_styles(request.prompt, request.negative_prompt, names,
                                                               ctx.styles)
    except RequestError as exc:
        raise RequestError(field, exc.value, exc.allowed) from None


def _size(request: GenerationRequest, value: Any, values: list[Any], ctx: ScriptContext, field: str) -> None:
    request.width, request.height = value


def _nothing(request: GenerationRequest, value: Any, values: list[Any], ctx: ScriptContext, field: str) -> None:
    return None


# ---------------------------------------------------------------------------------------------- choices
def _samplers(ctx: ScriptContext) -> list[str]:
    return list(ctx.engine.samplers())


def _schedules(ctx: ScriptContext) -> list[str]:
    return list(ctx.engine.schedules())


def _checkpoints(ctx: ScriptContext) -> list[str]:
    return sorted((entry.name for entry in ctx.engine.models() if entry.supported), key=str.casefold)


def _vaes(ctx: ScriptContext) -> list[str]:
    vaes = getattr(ctx.engine, "vaes", None)
    found = [vae.name for vae in (vaes() if callable(vaes) else []) if not getattr(vae, "reason", "")]
    return ["Automatic", "None", *found]


def _hires_upscalers(ctx: ScriptContext) -> list[str]:
    from sdlocal.engine.upscalers import LATENT_MODES

    upscalers = getattr(ctx.engine, "upscalers", None)
    found = [up.name for up in (upscalers() if callable(upscalers) else []) if up.usable]
    return [*LATENT_MODES, *found]


def _style_names(ctx: ScriptContext) -> list[str]:
    return list(ctx.styles.names()) if ctx.styles is not None else []


def _unsupported(label: str, reason: str, mode: str = BOTH) -> Axis:
    return Axis(label, mode=mode, reason=reason)


_SAMPLER_DEFAULTS = "sdlocal's samplers run with their default {} (not a setting here)"
AXES: tuple[Axis, ...] = (
    Axis("Nothing", "nothing", _nothing, legend="none"),
    Axis("Seed", "int", _field("seed")),
    _unsupported("Var. seed", "variation seeds are not a setting in sdlocal"),
    _unsupported("Var. strength", "variation seeds are not a setting in sdlocal"),
    Axis("Steps", "int", _field("steps")),
    Axis("Hires steps", "int", _hires("steps", "Hires steps"), mode=TXT2IMG),
    Axis("CFG Scale", "float", _field("cfg_scale")),
    _unsupported("Image CFG Scale", "it is for instruct-pix2pix models, which sdlocal does not run", IMG2IMG),
    Axis("Prompt S/R", "str", _prompt_sr, legend="value"),
    Axis("Prompt order", "permutations", _prompt_order, legend="join"),
    Axis("Sampler", "str", _field("sampler"), mode=TXT2IMG, choices=_samplers, legend="value"),
    Axis("Hires sampler", "str", _hires("sampler", "Hires sampler"), mode=TXT2IMG, choices=_samplers),
    Axis("Sampler", "str", _field("sampler"), mode=IMG2IMG, choices=_samplers, legend="value"),
    Axis("Checkpoint name", "str", _checkpoint, cost=1.0, choices=_checkpoints, legend="path"),
    _unsupported("Negative Guidance minimum sigma", _SAMPLER_DEFAULTS.format("guidance")),
    _unsupported("Sigma Churn", _SAMPLER_DEFAULTS.format("churn")),
    _unsupported("Sigma min", _SAMPLER_DEFAULTS.format("sigma range")),
    _unsupported("Sigma max", _SAMPLER_DEFAULTS.format("sigma range")),
    _unsupported("Sigma noise", _SAMPLER_DEFAULTS.format("noise")),
    Axis("Schedule type", "str", _field("schedule"), choices=_schedules),
    _unsupported("Schedule min sigma", _SAMPLER_DEFAULTS.format("schedule sigmas")),
    _unsupported("Schedule max sigma", _SAMPLER_DEFAULTS.format("schedule sigmas")),
    _unsupported("Schedule rho", _SAMPLER_DEFAULTS.format("schedule rho")),
    _unsupported("Eta", _SAMPLER_DEFAULTS.format("eta")),
    Axis("Clip skip", "int", _field("clip_skip")),
    Axis("Denoising", "float", _denoising),
    _unsupported("Initial noise multiplier", "the initial noise is not scaled in sdlocal (not a setting here)"),
    _unsupported("Extra noise", "img2img extra noise is not a setting in sdlocal"),
    Axis("Hires upscaler", "str", _hires("upscaler", "Hires upscaler"), mode=TXT2IMG, choices=_hires_upscalers),
    Axis("Cond. Image Mask Weight", "float", _mask_weight, mode=IMG2IMG),
    Axis("VAE", "str", _field("vae"), cost=0.7, choices=_vaes, legend="value"),
    Axis("Styles", "str", _styles, choices=_style_names),
    _unsupported("UniPC Order", "the UniPC sampler's order is not a setting in sdlocal"),
    _unsupported("Face restore", "face restoration (GFPGAN, CodeFormer) is not in sdlocal"),
    Axis("Token merging ratio", "float", _field("token_merging_ratio")),
    _unsupported("Token merging ratio high-res", "hires fix uses the one token merging ratio in sdlocal"),
    _unsupported("Always discard next-to-last sigma", "it is not a setting in sdlocal"),
    _unsupported("SGM noise multiplier", "it is not a setting in sdlocal"),
    _unsupported("Refiner checkpoint", "SDXL refiners are not supported by sdlocal"),
    _unsupported("Refiner switch at", "SDXL refiners are not supported by sdlocal"),
    _unsupported("RNG source", "sdlocal always makes the noise on the CPU, as A1111's 'CPU' source does"),
    _unsupported("FP8 mode", "fp8 weights are not supported by sdlocal"),
    Axis("Size", "size", _size),
)


def axes_for(img2img: bool) -> list[Axis]:
    """The axes a txt2img (or img2img) plot offers, in A1111's order: an API ``x_type`` indexes this list."""
    wanted = IMG2IMG if img2img else TXT2IMG
    return [axis for axis in AXES if axis.mode in (BOTH, wanted)]


def find_axis(value: Any, img2img: bool, field: str) -> Axis:
    """An axis by its index (what A1111's API sends) or its label (any case); a clear error otherwise."""
    axes = axes_for(img2img)
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    axis = None
    if isinstance(value, int):
        axis = axes[value] if 0 <= value < len(axes) else None
    elif isinstance(value, str):
        axis = next((a for a in axes if a.label.lower() == value.strip().lower()), None)
    usable = ", ".join(a.label for a in axes if a.supported)
    if axis is None:
        raise RequestError(field, value, f"must be an axis index 0-{len(axes) - 1} or one of: {usable}")
    if not axis.supported:
        raise RequestError(field, axis.label, f"cannot be plotted: {axis.reason}; axes are {usable}")
    return axis
