"""Hires fix's second pass: the first pass's latents upscaled, centre-cropped to the final size, denoised again.

A1111's rules (v1.10, from its documented behaviour): a latent mode interpolates the latents themselves; any
other upscaler decodes the first pass, upscales each picture to the upscale size and encodes it again. The
result is cropped in latent space, centred, to the final size. The second pass is img2img over those latents
that runs exactly ``N = hires.second_pass_steps(steps)`` steps: the schedule is made for
``T = int(N / min(strength, 0.999))`` steps and its last N run (diffusers is given T and a strength with
int(T x strength) == N). Its noise comes from each image's own CPU generator, continuing after the first pass,
so the same request gives the same pixels. Strength 0 runs no second pass: the upscaled picture is the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdlocal.engine.conditioning import PromptEncoder, PromptPlan
from sdlocal.engine.loader import LoadedModel
from sdlocal.engine.request import USE_SAME, GenerationRequest, HiresSizes, HiresSpec, RequestError
from sdlocal.engine.upscalers import latent_mode
from sdlocal.engine.vae_tiling import auto_tiling

# upscale(image, upscaler name, width, height) -> image at exactly (width, height)
UpscaleFn = Callable[[Any, str, int, int], Any]


@dataclass
class HiresPass:
    """Everything the second pass of every batch needs, worked out once per run."""

    spec: HiresSpec
    sizes: HiresSizes
    steps: int  # N: the steps that run
    schedule_steps: int  # T: the schedule they are the end of
    strength: float  # the strength diffusers is given (int(T x strength) == N)
    scheduler: Any
    plan: PromptPlan
    latent: tuple[str, bool] | None  # (interpolate mode, antialias) for a latent mode, else None
    upscale: UpscaleFn | None

    @property
    def denoises(self) -> bool:
        return self.steps > 0


def schedule_for(steps: int, strength: float, limit: int | None = None) -> tuple[int, float]:
    """(T, diffusers strength) so that the last ``steps`` of a T-step schedule run, as A1111's hires pass does.

    ``limit`` caps T at the model's training timesteps (a very low strength asks for more schedule steps than
    diffusers' schedulers can space out); the same ``steps`` still run, from a little higher noise.
    """
    total = max(steps, int(steps / min(strength, 0.999)))
    if limit is not None:
        total = max(steps, min(total, limit))
    return total, min(1.0, (steps + 0.5) / total)


def effective_sampler(request: GenerationRequest) -> tuple[str, str]:
    """The second pass's (sampler, schedule): the hires ones, or the first pass's where "Use same"."""
    spec = request.hires
    sampler = request.sampler if spec.sampler == USE_SAME else spec.sampler
    schedule = request.schedule if spec.schedule == USE_SAME else spec.schedule
    return sampler, schedule


def check_sampler(request: GenerationRequest) -> None:
    """Validate the hires sampler/schedule with the errors naming the API's hr_ fields; canonical names kept."""
    from sdlocal.engine import samplers

    spec = request.hires
    sampler, schedule = effective_sampler(request)
    try:
        sampler, schedule = samplers.check(sampler, schedule)
    except RequestError as exc:
        field = "hr_scheduler" if exc.field == "schedule" else "hr_sampler_name"
        raise RequestError(field, exc.value, exc.allowed) from None
    if spec.sampler != USE_SAME:
        spec.sampler = sampler
    if spec.schedule != USE_SAME:
        spec.schedule = schedule


def check_upscaler(spec: HiresSpec, find: Callable[[str, str], Any] | None) -> None:
    """A latent mode (its canonical name kept) or an upscaler ``find`` knows; else an error on hr_upscaler."""
    from sdlocal.engine.upscalers import BUILTIN_UPSCALERS, LATENT_MODES

    for name in LATENT_MODES:
        if name.lower() == spec.upscaler.lower():
            spec.upscaler = name
            return
    if find is not None:
        try:
            spec.upscaler = find(spec.upscaler, "hr_upscaler").name
        except RequestError as exc:
            raise RequestError("hr_upscaler", spec.upscaler,
                               f"{exc.allowed}; or a latent mode: {', '.join(LATENT_MODES)}") from None
        return
    for name in BUILTIN_UPSCALERS:
        if name.lower() == spec.upscaler.lower():
            spec.upscaler = name
            return
    raise RequestError("hr_upscaler", spec.upscaler,
                       f"must be one of: {', '.join([*LATENT_MODES, *BUILTIN_UPSCALERS])}")


def hires_texts(request: GenerationRequest, texts: tuple[str, str], warnings: list[str]) -> tuple[str, str]:
    """The second pass's (prompt, negative): the hires prompts without their <lora:> tags, else the first's.

    The LoRAs merged for the first prompt stay merged for the second pass (one model, patched once); a hires
    prompt asking for other ones gets a warning saying so.
    """
    from sdlocal.engine.networks.extra_networks import parse_networks

    spec = request.hires
    prompt, negative = texts
    if spec.prompt:
        prompt, uses, _others = parse_networks(spec.prompt, "hr_prompt")
        first = parse_networks(request.prompt, "prompt")[1]
        if uses and uses != first:
            warnings.append("The hires prompt's <lora:...> tags differ from the prompt's; the prompt's LoRAs stay "
                            "active for the second pass (put the tags in the prompt).")
    if spec.negative_prompt:
        negative = parse_networks(spec.negative_prompt, "hr_negative_prompt")[0]
    return prompt, negative


def prepare(loaded: LoadedModel, request: GenerationRequest, encoder: PromptEncoder, first_plan: PromptPlan,
            texts: tuple[str, str], scheduler: Any, upscale: UpscaleFn | None, warnings: list[str]) -> HiresPass:
    """The run's second pass, with its prompts encoded now (a too-long hires prompt fails before any step)."""
    spec = request.hires
    if loaded.inpainting:
        raise RequestError("enable_hr", True, "hires fix needs a normal (4-channel) model; this is an inpainting "
                                              "model: choose another model, or upscale on the Extras tab")
    steps = spec.second_pass_steps(request.steps)
    limit = int(getattr(scheduler.config, "num_train_timesteps", 1000) or 1000)
    total, strength = schedule_for(steps, spec.denoising_strength, limit) if steps else (0, 0.0)
    second_texts = hires_texts(request, texts, warnings)
    if second_texts == texts and steps == request.steps:
        plan = first_plan  # the same conditioning, already encoded
    else:
        plan = PromptPlan(encoder, *second_texts, max(1, steps))
    return HiresPass(spec=spec, sizes=spec.sizes(request.width, request.height), steps=steps, schedule_steps=total,
                     strength=strength, scheduler=scheduler, plan=plan, latent=latent_mode(spec.upscaler),
                     upscale=upscale)


def crop_box(sizes: HiresSizes, factor: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the centred crop, in latent cells: A1111 drops tx // 2 on the left and
    (tx + 1) // 2 on the right, tx = (upscale_w - final_w) // 8, and the same for y."""
    tx = (sizes.upscale_width - sizes.final_width) // factor
    ty = (sizes.upscale_height - sizes.final_height) // factor
    height, width = sizes.upscale_height // factor, sizes.upscale_width // factor
    return ty // 2, height - (ty + 1) // 2, tx // 2, width - (tx + 1) // 2


def _upscale_pictures(hires: HiresPass, pictures: list[Any]) -> list[Any]:
    from PIL import Image

    width, height = hires.sizes.upscale_width, hires.sizes.upscale_height
    name = hires.spec.upscaler
    if hires.upscale is not None:
        return [hires.upscale(picture, name, width, height) for picture in pictures]
    if name not in ("None", "Lanczos", "Nearest"):
        raise RequestError("hr_upscaler", name, "no upscaler models are available in this engine")
    resample = Image.Resampling.NEAREST if name == "Nearest" else Image.Resampling.LANCZOS
    return [picture.resize((width, height), resample) for picture in pictures]


def upscaled_latents(loaded: LoadedModel, hires: HiresPass, latents: Any, generators: list[Any],
                     warnings: list[str]) -> tuple[Any, list[Any] | None]:
    """(cropped latents at the final size, or None; the final pictures when no second pass needs latents);
    (None, None) when the upscaler model was interrupted.

    A latent mode interpolates; any other upscaler decodes, upscales the pictures and (when the second pass
    runs) encodes them again with one VAE sample per image from its generator.
    """
    import torch.nn.functional as functional

    from sdlocal.engine import img2img
    from sdlocal.engine.generate import decode

    factor = loaded.pipe.vae_scale_factor
    top, bottom, left, right = crop_box(hires.sizes, factor)
    if hires.latent is not None:
        mode, antialias = hires.latent
        size = (hires.sizes.upscale_height // factor, hires.sizes.upscale_width // factor)
        options: dict[str, Any] = {"antialias": antialias} if antialias else {}
        if mode in ("bilinear", "bicubic"):
            options["align_corners"] = False
        resized = functional.interpolate(latents.float(), size=size, mode=mode, **options).to(latents.dtype)
        return resized[:, :, top:bottom, left:right], None
    from sdlocal.engine import upscalers

    interrupted = getattr(upscalers, "UpscaleInterrupted", None)  # UP's: Interrupt pressed between tiles
    try:
        pictures = _upscale_pictures(hires, decode(loaded, latents, warnings))
    except Exception as exc:
        if interrupted is not None and isinstance(exc, interrupted):
            return None, None  # the batch is dropped, as an interrupt in a sampling step drops it
        raise
    if not hires.denoises:
        box = (left * factor, top * factor, right * factor, bottom * factor)
        return None, [picture.crop(box) for picture in pictures]
    width, height = hires.sizes.upscale_width, hires.sizes.upscale_height
    with auto_tiling(loaded.pipe.vae, width, height, len(pictures), warnings):
        encoded = img2img.encode(loaded, img2img.to_tensor(loaded, pictures), generators, warnings)
    return encoded[:, :, top:bottom, left:right], None


def second_pass(loaded: LoadedModel, request: GenerationRequest, hires: HiresPass, latents: Any,
                generators: list[Any], callback: Callable[..., Any]) -> Any:
    """img2img over the cropped latents for exactly ``hires.steps`` steps; returns the new latents."""
    from sdlocal.engine.pipelines import variant

    pipe = variant(loaded, "img2img")
    pipe.scheduler = hires.scheduler
    kwargs: dict[str, Any] = {
        **hires.plan.pipe_kwargs(latents.shape[0]),
        "image": latents,
        "num_inference_steps": hires.schedule_steps,
        "strength": hires.strength,
        "guidance_scale": request.cfg_scale,
        "output_type": "latent",
    }
    return pipe(**kwargs, generator=generators, callback_on_step_end=callback,
                callback_on_step_end_tensor_inputs=["latents", *hires.plan.tensor_inputs()]).images
