"""A1111's fields to the engine's request and the engine's result back to A1111's response, shared by the
txt2img and img2img routes: the translation that is the same for both lives here once.
"""

from __future__ import annotations

import base64
import io
from datetime import datetime
from typing import Any

from sdlocal.api.models import GenerationFields, Txt2ImgRequest
from sdlocal.engine.request import USE_SAME, GenerationRequest, GenerationResult, HiresSpec
from sdlocal.engine.samplers import resolve_alias
from sdlocal.jobs import Job
from sdlocal.styles import StyleLibrary, apply_styles

# Fields A1111 clients may set that sdlocal does not implement, with the value (or the tuple of values) that asks
# for nothing: any other value is named in ``info.warnings``, never silently dropped. Clients such as webuiapi
# send ``restore_faces: false`` with every request; that asks for nothing. (``styles`` is honoured: see
# ``to_generation_request``; so is ``script_name``: see ``sdlocal.api.scripts``. sdlocal has no always-on scripts.)
UNSUPPORTED: dict[str, Any] = {
    "restore_faces": False, "tiling": False, "alwayson_scripts": {},
    "refiner_checkpoint": (None, "", "None"), "subseed_strength": 0.0,
    "hr_checkpoint_name": (None, "", "Use same checkpoint"),
}

# A1111's API default for hires fix's strength (its UI's is 0.7), used when a txt2img body sends none.
HIRES_DENOISING_DEFAULT = 0.75
DEFAULT_LATENT_UPSCALER = "Latent"  # what A1111 uses when hr_upscaler is not sent

# Infotext keys of hires fix: A1111 reports them in ``info.extra_generation_params`` too.
HIRES_INFOTEXT_KEYS = ("Hires upscale", "Hires resize", "Hires steps", "Hires upscaler", "Hires sampler",
                       "Hires schedule type", "Hires prompt", "Hires negative prompt")


def schedule_name(label: str) -> str:
    """A1111 scheduler ``name`` ("sgm_uniform") from the label sdlocal uses ("SGM Uniform")."""
    return label.lower().replace(" ", "_")


def to_generation_request(body: GenerationFields, current_options: dict[str, Any], overrides: dict[str, Any],
                          styles: StyleLibrary | None = None) -> GenerationRequest:
    """A1111's fields to the engine's request (validated later, at submit, by the queue).

    The ``styles`` named in the body are applied here, before the engine, so the request (and the PNG's
    parameters) holds the expanded prompt, as A1111 writes it; an unknown style raises ``RequestError("styles")``.
    The ``emphasis`` and ``sd_vae`` options come from ``override_settings`` or the current options, like clip skip.
    """
    sampler = resolve_alias(body.sampler_name or body.sampler_index or "Euler")
    schedule = _schedule_label(body.scheduler or "Automatic")
    clip_skip = overrides.get("CLIP_stop_at_last_layers", current_options.get("CLIP_stop_at_last_layers", 1))
    tome = overrides.get("token_merging_ratio", current_options.get("token_merging_ratio", 0.0))
    emphasis = overrides.get("emphasis", current_options.get("emphasis", "Original"))
    vae = overrides.get("sd_vae", current_options.get("sd_vae", "Automatic"))
    model = overrides.get("sd_model_checkpoint") or ""
    prompt, negative = apply_styles(body.prompt, body.negative_prompt, body.styles, styles)
    return GenerationRequest(
        prompt=prompt, negative_prompt=negative, model=str(model), sampler=sampler, emphasis=emphasis,
        schedule=schedule, steps=body.steps, cfg_scale=body.cfg_scale, width=body.width, height=body.height,
        seed=body.seed, batch_size=body.batch_size, batch_count=body.n_iter, clip_skip=clip_skip,
        token_merging_ratio=tome, vae=vae,
    )


def _schedule_label(value: str) -> str:
    """A1111's scheduler name ("karras", "sgm_uniform") or label as sdlocal's label; others unchanged."""
    for label in ("Automatic", "Karras", "Exponential", "SGM Uniform"):
        if value.strip().lower() in (label.lower(), schedule_name(label)):
            return label
    return value


def _same_or(value: str | None, resolve: Any) -> str:
    """A1111's "Use same sampler"/"Use same scheduler" (and None or "") as ``USE_SAME``; else ``resolve(value)``."""
    text = (value or "").strip()
    if not text or text.lower().startswith(USE_SAME.lower()):
        return USE_SAME
    return resolve(text)


def to_hires_spec(body: Txt2ImgRequest) -> HiresSpec | None:
    """txt2img's ``hr_*`` fields as the engine's ``HiresSpec`` (None without ``enable_hr``), A1111's API defaults
    applied: strength 0.75, upscaler "Latent", "Use same" sampler and schedule. Checked at submit."""
    if not body.enable_hr:
        return None
    strength = body.denoising_strength if body.denoising_strength is not None else HIRES_DENOISING_DEFAULT
    return HiresSpec(
        scale=body.hr_scale, resize_x=body.hr_resize_x, resize_y=body.hr_resize_y,
        upscaler=body.hr_upscaler if body.hr_upscaler is not None else DEFAULT_LATENT_UPSCALER,
        steps=body.hr_second_pass_steps, denoising_strength=strength,
        sampler=_same_or(body.hr_sampler_name, resolve_alias), schedule=_same_or(body.hr_scheduler, _schedule_label),
        prompt=body.hr_prompt, negative_prompt=body.hr_negative_prompt,
    )


def hires_info(info: dict[str, Any], result: GenerationResult) -> dict[str, Any]:
    """``info`` with hires fix as used: its strength, and its infotext keys in ``extra_generation_params``
    (numbers as numbers), as A1111 reports them."""
    from sdlocal.engine.infotext import parse_infotext

    hires = getattr(result.request, "hires", None)
    if hires is None:
        return info
    info["denoising_strength"] = hires.denoising_strength
    written = parse_infotext(info["infotexts"][0]) if info["infotexts"] else {}
    extra = {key: infotext_value(written[key]) for key in HIRES_INFOTEXT_KEYS if key in written}
    info["extra_generation_params"] = {**info["extra_generation_params"], **extra}
    return info


def infotext_value(text: str) -> Any:
    """An infotext value as A1111 keeps it in ``extra_generation_params``: numbers as numbers."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def png_base64(image: Any, parameters: str | None, extra: dict[str, str] | None = None) -> str:
    """A PNG as raw base64 (A1111 sends no ``data:`` prefix), with the ``parameters`` text chunk when given and
    the ``extra`` chunks (an Extras image's ``postprocessing``)."""
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    for key, value in {"parameters": parameters, **(extra or {})}.items():
        if value:
            meta.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=meta)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def encode_images(result: GenerationResult) -> list[str]:
    """Every image as ``png_base64`` with its infotext (run on a worker thread: PNG encoding is slow)."""
    return [png_base64(item.image, item.infotext) for item in result.images]


def ignored_fields(body: GenerationFields, unsupported: dict[str, Any]) -> list[str]:
    """The fields of ``unsupported`` (name -> the value or tuple of values that ask for nothing) that ``body``
    sets to something else; None always asks for nothing."""
    ignored = []
    for name, neutral in unsupported.items():
        value = getattr(body, name, None)
        if value is not None and value not in (neutral if isinstance(neutral, tuple) else (neutral,)):
            ignored.append(name)
    return ignored


def build_info(body: GenerationFields, result: GenerationResult, job: Job,
               unsupported: dict[str, Any] = UNSUPPORTED) -> dict[str, Any]:
    """A1111's ``info`` object (sent as a JSON string): what was actually generated, per image; the fields of
    ``unsupported`` that the body set are named in ``warnings``."""
    request = result.request
    seeds = [item.seed for item in result.images] or list(result.seeds)
    count = len(seeds)
    started = datetime.fromtimestamp(job.started or job.created).strftime("%Y%m%d%H%M%S")
    ignored = ignored_fields(body, unsupported)
    info = {
        "prompt": body.prompt,  # as sent; the prompts used (styles applied) are in all_prompts, as in A1111
        "all_prompts": [request.prompt] * count,
        "negative_prompt": body.negative_prompt,
        "all_negative_prompts": [request.negative_prompt] * count,
        "seed": seeds[0] if seeds else request.seed,
        "all_seeds": seeds,
        "subseed": seeds[0] if seeds else -1,
        "all_subseeds": seeds,
        "subseed_strength": 0,
        "width": request.width,
        "height": request.height,
        "sampler_name": request.sampler,
        "scheduler": request.schedule,
        "cfg_scale": request.cfg_scale,
        "steps": request.steps,
        "batch_size": request.batch_size,
        "n_iter": request.batch_count,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": result.model_name,
        "sd_model_hash": result.model_hash or None,
        "sd_vae_name": result.vae_name or None,
        "sd_vae_hash": result.vae_hash or None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": None,
        "extra_generation_params": {"Schedule type": request.schedule} if request.schedule != "Automatic" else {},
        "index_of_first_image": 0,
        "infotexts": [item.infotext for item in result.images],
        "styles": list(body.styles or []),
        "job_timestamp": started,
        "clip_skip": request.clip_skip,
        "is_using_inpainting_conditioning": False,
        "interrupted": result.interrupted,
        "warnings": list(result.warnings) + [f"{name} is not supported by sdlocal and was ignored"
                                             for name in ignored],
        "saved_paths": [str(path) for path in job.saved_paths],
        "timings": dict(result.timings),
    }
    return info
