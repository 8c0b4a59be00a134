"""The AUTOMATIC1111 ``parameters`` text: written into every PNG, read back from anyone's PNGs.

The format is a de-facto standard that civitai, ComfyUI importers, Forge and image hosts read:

    a prompt, which may span lines
    Negative prompt: the negative prompt, which may span lines
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, ...

A value is JSON-quoted only when it holds ``,``, ``:`` or a newline; a reader takes the last line as the
parameters only when it holds at least three ``Key: value`` pairs (otherwise it is part of the prompt).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

NEGATIVE_PREFIX = "Negative prompt:"

# One "Key: value" pair: a key of word characters, spaces, dashes or slashes, then either a JSON string
# (escapes allowed) or anything up to the next comma.
_PAIR = re.compile(r'\s*([A-Za-z0-9_][\w \-/]*?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


@lru_cache(maxsize=1)
def sdlocal_version() -> str:
    """The installed package version, or the source tree's pyproject version when run from a checkout."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("sdlocal")
    except PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        match = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"), re.MULTILINE)
    except OSError:
        match = None
    return match.group(1) if match else "dev"


def quote(value: Any) -> str:
    """A1111's quoting: JSON-quote only values that would otherwise break the pair list."""
    text = str(value)
    if "," in text or ":" in text or "\n" in text:
        return json.dumps(text, ensure_ascii=False)
    return text


def unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value


def _number(value: float) -> str:
    """7.0 -> "7", 7.5 -> "7.5": how A1111's own texts show CFG scale and ratios."""
    return f"{value:g}"


def format_infotext(request: Any, seed: int, model_name: str, model_hash: str | None,
                    extra: dict[str, Any] | None = None) -> str:
    """The parameters text for one image of ``request`` made with ``seed``.

    ``extra`` adds pairs before ``Version`` (e.g. {"VAE": "..."}); a None value drops the key. "Schedule type"
    is the schedule that ran, as A1111 writes it: "Automatic" with DPM++ 2M is written "Karras"; a sampler
    whose Automatic is its scheduler's own default sigmas writes none.
    """
    from sdlocal.engine.samplers import AUTOMATIC, effective_schedule

    schedule = effective_schedule(request.sampler, request.schedule)
    pairs: dict[str, Any] = {
        "Steps": request.steps,
        "Sampler": request.sampler,
        "Schedule type": None if schedule == AUTOMATIC else schedule,
        "CFG scale": _number(float(request.cfg_scale)),
        "Seed": seed,
        "Size": f"{request.width}x{request.height}",
        "Model hash": model_hash or None,
        "Model": model_name or None,
        "Clip skip": request.clip_skip if request.clip_skip > 1 else None,
        "Token merging ratio": _number(request.token_merging_ratio) if request.token_merging_ratio > 0 else None,
        "Emphasis": None if request.emphasis == "Original" else request.emphasis,  # A1111 writes it only then
    }
    pairs.update(extra or {})
    pairs["Version"] = f"sdlocal {sdlocal_version()}"
    line = ", ".join(f"{key}: {quote(value)}" for key, value in pairs.items() if value is not None)
    text = request.prompt
    if request.negative_prompt:
        text += f"\n{NEGATIVE_PREFIX} {request.negative_prompt}"
    return f"{text}\n{line}"


def ti_hashes(embeddings: list[Any]) -> str | None:
    """A1111's ``TI hashes`` value, "name: hash, name2: hash2", for the embeddings a run used (in order of first
    use); one without a hash (a hand-built embedding with no file) is left out; None when none is left."""
    pairs = []
    for embedding in embeddings:
        try:
            shorthash = embedding.shorthash
        except (AttributeError, OSError):
            continue
        if shorthash:
            pairs.append(f"{embedding.name}: {shorthash}")
    return ", ".join(pairs) or None


def _pairs(line: str) -> list[tuple[str, str]]:
    return [(m.group(1).strip(), m.group(2)) for m in _PAIR.finditer(line) if m.group(0).strip()]


def parse_infotext(text: str) -> dict[str, str]:
    """A parameters text as a dict: "Prompt", "Negative prompt" and every key of the parameter line.

    Values are unquoted strings; nothing is dropped, so keys sdlocal does not use survive a round trip.
    """
    result: dict[str, str] = {}
    lines = (text or "").strip().replace("\r\n", "\n").split("\n")
    params_line = lines[-1] if lines else ""
    pairs = _pairs(params_line)
    if len(pairs) >= 3:
        lines = lines[:-1]
        for key, value in pairs:
            result[key] = unquote(value)
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        if line.strip().startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line.strip()[len(NEGATIVE_PREFIX):].strip()
        (negative if in_negative else prompt).append(line)
    result = {"Prompt": "\n".join(prompt).strip(), "Negative prompt": "\n".join(negative).strip(), **result}
    return result


def _int(value: str) -> int | None:
    try:
        return int(float(value.strip()))
    except (ValueError, AttributeError):
        return None


def _float(value: str) -> float | None:
    try:
        return float(value.strip())
    except (ValueError, AttributeError):
        return None


def infotext_to_request_fields(params: dict[str, str]) -> dict[str, Any]:
    """The ``GenerationRequest`` fields a parsed parameters text names, converted to their types.

    Values that do not parse are left out (the caller keeps its own), never guessed. Old A1111 names with the
    schedule inside the sampler ("DPM++ 2M Karras") are split into sampler and schedule.
    """
    fields: dict[str, Any] = {}
    if "Prompt" in params:
        fields["prompt"] = params["Prompt"]
    if "Negative prompt" in params:
        fields["negative_prompt"] = params["Negative prompt"]
    for key, name, convert in (("Steps", "steps", _int), ("CFG scale", "cfg_scale", _float), ("Seed", "seed", _int),
                               ("Clip skip", "clip_skip", _int),
                               ("Token merging ratio", "token_merging_ratio", _float)):
        if key in params:
            value = convert(params[key])
            if value is not None:
                fields[name] = value
    size = params.get("Size", "")
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", size)
    if match:
        fields["width"], fields["height"] = int(match.group(1)), int(match.group(2))
    if params.get("Sampler"):
        from sdlocal.engine.samplers import split_legacy_name

        schedule = params.get("Schedule type") or "Automatic"
        fields["sampler"], fields["schedule"] = split_legacy_name(params["Sampler"].strip(), schedule.strip())
    elif params.get("Schedule type"):
        fields["schedule"] = params["Schedule type"].strip()
    if params.get("Model"):
        fields["model"] = params["Model"].strip()
    if params.get("VAE"):  # the VAE file the image was decoded with (A1111 writes none for the checkpoint's own)
        fields["vae"] = params["VAE"].strip()
    emphasis = _emphasis(params.get("Emphasis", ""))
    if emphasis is not None:
        fields["emphasis"] = emphasis
    return fields


def _emphasis(value: str) -> str | None:
    """An ``Emphasis`` value as the request's mode name (any case), None when it names no mode."""
    from sdlocal.engine.request import EMPHASIS_MODES

    wanted = value.strip().lower()
    return next((mode for mode in EMPHASIS_MODES if mode.lower() == wanted), None)


def infotext_to_source_fields(params: dict[str, str]) -> dict[str, Any]:
    """The img2img / inpainting settings a parsed parameters text names, as ``ImageSource``/``MaskSpec`` fields.

    Keys: ``denoising_strength``, ``mask_blur_x``, ``mask_blur_y``, ``inpaint_area``, ``padding``, ``content``,
    ``invert``, ``conditional_weight``; only those present (and parseable) are returned. A1111 writes "Inpaint
    area" and "Masked area padding" only for "Only masked", and "Mask mode" only when the mask is inverted, so
    a text with a mask blur but no area means the whole picture.
    """
    from sdlocal.engine.request import MASKED_CONTENT

    fields: dict[str, Any] = {}
    for key, name, convert in (("Denoising strength", "denoising_strength", _float),
                               ("Masked area padding", "padding", _int),
                               ("Conditional mask weight", "conditional_weight", _float)):
        value = convert(params[key]) if key in params else None
        if value is not None:
            fields[name] = value
    blur = _int(params["Mask blur"]) if "Mask blur" in params else None
    if blur is not None:
        fields["mask_blur_x"] = fields["mask_blur_y"] = blur
    for key, name in (("Mask blur X", "mask_blur_x"), ("Mask blur Y", "mask_blur_y")):
        value = _int(params[key]) if key in params else None
        if value is not None:
            fields[name] = value
    inpainting = any(key in params for key in ("Mask blur", "Mask blur X", "Masked content", "Inpaint area"))
    if inpainting:
        fields["inpaint_area"] = "Only masked" if params.get("Inpaint area", "").strip() == "Only masked" \
            else "Whole picture"
        fields["invert"] = params.get("Mask mode", "").strip() == "Inpaint not masked"
    content = params.get("Masked content", "").strip().lower()
    if content in MASKED_CONTENT:
        fields["content"] = content
    return fields


# The keys whose presence means the image was made with hires fix (A1111 writes at least one of them).
HIRES_MARKERS = ("Hires upscale", "Hires resize", "Hires upscaler")


def hires_infotext(hires: Any, prompt: str, negative_prompt: str) -> dict[str, Any]:
    """A1111's hires fix keys for a ``HiresSpec`` (None drops a key, as in ``format_infotext``'s ``extra``).

    "Hires upscale" when the scale sets the size, else "Hires resize" as ``WxH``; "Hires steps" only when set;
    the sampler and schedule only when not "Use same"; the prompts only when given and unlike the first pass's,
    so a text from A1111 and one from sdlocal read back the same way.
    """
    from sdlocal.engine.request import USE_SAME

    by_scale = hires.resize_x == 0 and hires.resize_y == 0
    return {
        "Denoising strength": _number(float(hires.denoising_strength)),
        "Hires upscale": _number(float(hires.scale)) if by_scale else None,
        "Hires resize": None if by_scale else f"{hires.resize_x}x{hires.resize_y}",
        "Hires steps": hires.steps or None,
        "Hires upscaler": hires.upscaler,
        "Hires sampler": None if hires.sampler == USE_SAME else hires.sampler,
        "Hires schedule type": None if hires.schedule == USE_SAME else hires.schedule,
        "Hires prompt": hires.prompt if hires.prompt and hires.prompt != prompt else None,
        "Hires negative prompt": (hires.negative_prompt if hires.negative_prompt
                                  and hires.negative_prompt != negative_prompt else None),
    }


def infotext_to_hires_fields(params: dict[str, str]) -> dict[str, Any]:
    """The ``HiresSpec`` fields a parsed parameters text names; {} when it has no hires fix keys.

    Only the keys present (and parseable) are returned, so the caller keeps its defaults for the rest; the UI's
    "Reuse" and PNG Info tick "Hires fix" when the result is not empty. Old texts' "Hires sampler" with the
    schedule in the name ("DPM++ 2M Karras") are split as the first pass's sampler is.
    """
    if not any(key in params for key in HIRES_MARKERS):
        return {}
    fields: dict[str, Any] = {}
    for key, name, convert in (("Hires upscale", "scale", _float), ("Hires steps", "steps", _int),
                               ("Denoising strength", "denoising_strength", _float)):
        value = convert(params[key]) if key in params else None
        if value is not None:
            fields[name] = value
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", params.get("Hires resize", ""))
    if match:
        fields["resize_x"], fields["resize_y"] = int(match.group(1)), int(match.group(2))
    for key, name in (("Hires upscaler", "upscaler"), ("Hires prompt", "prompt"),
                      ("Hires negative prompt", "negative_prompt")):
        if params.get(key, "").strip():
            fields[name] = params[key].strip()
    schedule = params.get("Hires schedule type", "").strip()
    if params.get("Hires sampler", "").strip():
        from sdlocal.engine.samplers import split_legacy_name

        fields["sampler"], split = split_legacy_name(params["Hires sampler"].strip(), schedule or "Automatic")
        if schedule or split != "Automatic":
            fields["schedule"] = split
    elif schedule:
        fields["schedule"] = schedule
    return fields
