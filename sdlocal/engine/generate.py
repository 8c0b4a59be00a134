"""One run (txt2img, img2img or inpainting): seeds, noise, progress with previews, interrupt/skip, decoding and
the checks on the result. What differs for img2img and inpainting (init latents, masks, the pipeline that runs
and putting the result back) is the image stage's (``img2img.py``); the loop around it is the same.

Seeds follow A1111: -1 picks a random seed in [0, 4294967294); image i of the run gets seed + i. Every image's
starting noise (and an ancestral sampler's per-step noise) comes from its own CPU ``torch.Generator`` seeded
with that image's seed, so image 3 of a batch equals a single run with seed + 2, and a seed gives the same
image on CPU, CUDA and MPS.

The pipeline is asked for latents, and sdlocal decodes them itself: that is where NaNs are caught, where an
fp16 VAE that overflowed is retried in fp32, and how an interrupted batch's half-done latents are dropped
instead of decoded into a noisy picture.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sdlocal.engine.conditioning import PromptEncoder, PromptPlan
from sdlocal.engine.infotext import format_infotext, hires_infotext, ti_hashes
from sdlocal.engine.loader import LoadedModel, free_memory, is_out_of_memory
from sdlocal.engine.request import (
    EngineError,
    GeneratedImage,
    GenerationRequest,
    Progress,
    RequestError,
    RunControl,
)
from sdlocal.engine.vae_tiling import auto_tiling

log = logging.getLogger(__name__)

RANDOM_SEED_LIMIT = 4294967294  # A1111: random seeds are drawn from [0, 4294967294)
PREVIEW_INTERVAL_S = 0.5
PREVIEW_MAX_SIDE = 256
BLACK_LEVEL = 2  # an image whose brightest pixel is at most this is "all black"

# Latent -> RGB linear approximations for the step previews (one row per latent channel, R G B). They follow
# the published analyses of the SD 1.x and SDXL VAEs' latent spaces (channel 0 ~ luminance, channel 3 ~ a
# blue-yellow axis), rounded; they are for a recognisable preview, not a decode.
PREVIEW_FACTORS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "sd1": ((0.35, 0.23, 0.32), (0.33, 0.50, 0.24), (-0.28, 0.18, 0.27), (-0.21, -0.26, -0.72)),
    "sd2": ((0.35, 0.23, 0.32), (0.33, 0.50, 0.24), (-0.28, 0.18, 0.27), (-0.21, -0.26, -0.72)),
    "sdxl": ((0.39, 0.41, 0.45), (-0.26, -0.02, 0.07), (0.06, 0.17, -0.08), (-0.31, -0.24, -0.21)),
}


@dataclass
class RunOutput:
    images: list[GeneratedImage]
    seeds: list[int]
    interrupted: bool
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def resolve_seeds(seed: int, count: int, rng: random.Random | None = None) -> list[int]:
    """A1111 seeds: -1 is random in [0, 4294967294); image i gets seed + i."""
    if seed == -1:
        seed = (rng or random.SystemRandom()).randrange(0, RANDOM_SEED_LIMIT)
    return [seed + i for i in range(count)]


def initial_noise(seeds: list[int], shape: tuple[int, int, int]) -> tuple[Any, list[Any]]:
    """Per-image starting noise from per-image CPU generators; the generators go on to feed ancestral samplers."""
    import torch

    generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    noise = torch.cat([torch.randn((1, *shape), generator=g, dtype=torch.float32) for g in generators])
    return noise, generators


def latent_preview(latents: Any, family: str, max_side: int = PREVIEW_MAX_SIDE) -> Any:
    """A cheap RGB preview of the first image's latents (a 4x3 linear map, no VAE)."""
    import numpy as np
    import torch
    from PIL import Image

    factors = torch.tensor(PREVIEW_FACTORS.get(family, PREVIEW_FACTORS["sd1"]), dtype=torch.float32)
    sample = latents[0].detach().to("cpu", torch.float32)
    if sample.shape[0] != factors.shape[0]:
        return None
    rgb = torch.einsum("chw,cr->hwr", sample, factors)
    rgb = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    scale = max(1, max_side // max(image.size))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    return image


def _apply_request_patches(loaded: LoadedModel, request: GenerationRequest) -> None:
    """Token merging and VAE tiling are per request, but re-patching costs time: change only what changed."""
    pipe = loaded.pipe
    if request.token_merging_ratio != loaded.token_merging_ratio:
        import tomesd

        tomesd.remove_patch(pipe)
        if request.token_merging_ratio > 0:
            # use_rand=False, as A1111 does: tomesd's random partition draws from one generator that runs on
            # from image to image, so the same seed and ratio would not give the same image twice.
            tomesd.apply_patch(pipe, ratio=request.token_merging_ratio, use_rand=False)
        loaded.token_merging_ratio = request.token_merging_ratio
    if request.vae_tiling != loaded.vae_tiling:
        if request.vae_tiling:
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()
        loaded.vae_tiling = request.vae_tiling


def _check_clip_skip(loaded: LoadedModel, clip_skip: int) -> None:
    layers = int(loaded.pipe.text_encoder.config.num_hidden_layers)
    if clip_skip > layers:
        raise RequestError("clip_skip", clip_skip, f"this model's text encoder has {layers} layers; use 1 to {layers}")


def _oom_error(request: GenerationRequest, exc: BaseException) -> EngineError:
    return EngineError(
        f"Out of memory generating {request.width}x{request.height} with batch size {request.batch_size} "
        f"({str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__}).",
        "Lower the size or the batch size, or turn on VAE tiling for this request; or start with attention "
        "slicing (--attention-slicing), and on NVIDIA GPUs --medvram (model CPU offload and VAE slicing) or "
        "--lowvram (the least memory, slower). The engine is still ready.",
    )


def decode(loaded: LoadedModel, latents: Any, warnings: list[str]) -> list[Any]:
    """Latents -> PIL images, retrying an fp16 VAE in fp32 when it overflows to NaN.

    SDXL's VAE, which is known to overflow, is already fp32 (its config's ``force_upcast``, see
    ``loader.vae_precision``); the retry is for VAEs whose config claims fp16 is safe and is wrong.
    """
    import torch

    pipe = loaded.pipe
    vae = pipe.vae
    if torch.isnan(latents).any():
        raise EngineError(
            "The model produced NaN values while sampling (a numerical overflow in half precision).",
            "Use precision fp32 (--precision fp32), or bf16 where available; --no-half-vae does not help here.",
        )

    def run(dtype: Any) -> Any:
        scaled = latents.to(device=vae.device, dtype=dtype)
        mean = getattr(vae.config, "latents_mean", None)
        std = getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean_t = torch.tensor(mean, device=scaled.device, dtype=dtype).view(1, -1, 1, 1)
            std_t = torch.tensor(std, device=scaled.device, dtype=dtype).view(1, -1, 1, 1)
            scaled = scaled * std_t / vae.config.scaling_factor + mean_t
        else:
            scaled = scaled / vae.config.scaling_factor
        with torch.inference_mode():
            return vae.decode(scaled, return_dict=False)[0]

    factor = pipe.vae_scale_factor
    size = (latents.shape[-1] * factor, latents.shape[-2] * factor, latents.shape[0])
    with auto_tiling(vae, *size, warnings):  # a picture too large for the free memory is decoded in tiles
        image = run(vae.dtype)
    if torch.isnan(image).any() and vae.dtype == torch.float16:
        vae.to(dtype=torch.float32)
        loaded.vae_upcast = True
        warnings.append("The VAE overflowed in fp16 (NaN); it was switched to fp32 for this model. Start with "
                        "--no-half-vae to use fp32 from the start.")
        with auto_tiling(vae, *size, warnings):
            image = run(torch.float32)
    if torch.isnan(image).any():
        raise EngineError("The VAE produced NaN values while decoding the image.",
                          "Start with --no-half-vae, or use precision fp32 (--precision fp32).")
    return pipe.image_processor.postprocess(image.float(), output_type="pil")


def _black(image: Any) -> bool:
    extrema = image.getextrema()
    return all(high <= BLACK_LEVEL for _low, high in extrema)


def _pipe_kwargs(loaded: LoadedModel, request: GenerationRequest, batch: int, plan: PromptPlan) -> dict[str, Any]:
    """The pipeline's arguments; the prompts go in as sdlocal's own embeddings (clip skip is already in them)."""
    kwargs: dict[str, Any] = {
        **plan.pipe_kwargs(batch),
        "num_inference_steps": request.steps,
        "guidance_scale": request.cfg_scale,
        "output_type": "latent",
    }
    if request.source is not None:
        return kwargs  # the image stage adds the image, the strength and (for inpainting) the size
    kwargs.update(height=request.height, width=request.width)
    if loaded.inpainting:
        # txt2img with an inpainting model: a neutral grey picture, all of it masked (A1111 does the same).
        from PIL import Image

        kwargs["image"] = Image.new("RGB", (request.width, request.height), (127, 127, 127))
        kwargs["mask_image"] = Image.new("L", (request.width, request.height), 255)
        kwargs["strength"] = 1.0
    return kwargs


@dataclass
class BatchCall:
    """What one batch runs: the pipeline, its arguments, and what is done to each decoded image."""

    pipe: Any
    kwargs: dict[str, Any]
    generators: list[Any]
    finishers: list[Callable[[Any], Any]] | None = None
    noise: Any = None


def _batch_call(loaded: LoadedModel, request: GenerationRequest, seeds: list[int], first_index: int,
                shape: tuple[int, int, int], prepared: list[Any] | None, warnings: list[str],
                plan: PromptPlan) -> BatchCall:
    import torch

    kwargs = _pipe_kwargs(loaded, request, len(seeds), plan)
    if prepared is None:
        noise, generators = initial_noise(seeds, shape)
        kwargs["latents"] = noise.to(device=loaded.pipe._execution_device, dtype=loaded.pipe.unet.dtype)
        return BatchCall(pipe=loaded.pipe, kwargs=kwargs, generators=generators, noise=noise)
    from sdlocal.engine import img2img

    generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    pipe, image_kwargs, finishers = img2img.batch_call(loaded, request, prepared, first_index, generators, warnings)
    kwargs.update(image_kwargs)
    return BatchCall(pipe=pipe, kwargs=kwargs, generators=generators, finishers=finishers)


def _prompt_plan(loaded: LoadedModel, request: GenerationRequest, embeddings: Mapping[str, Any] | None,
                 texts: tuple[str, str] | None = None) -> tuple[PromptEncoder, PromptPlan]:
    """Every prompt text of the run chunked and encoded, before any other work: a prompt that is too long fails
    now, no step ever runs the text encoder, and running out of memory here is the same clear error as later."""
    encoder = PromptEncoder(loaded, request.clip_skip, request.emphasis, embeddings or {})
    prompt, negative = texts if texts is not None else (request.prompt, request.negative_prompt)
    try:
        return encoder, PromptPlan(encoder, prompt, negative, request.steps)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        out_of_memory = _oom_error(request, exc)
    free_memory()  # after the except block: its traceback no longer holds the failed call's tensors
    raise out_of_memory


def _hires_pass(loaded: LoadedModel, request: GenerationRequest, second: Any, latents: Any, generators: list[Any],
                callback: Callable[..., Any], control: RunControl, warnings: list[str]) -> tuple[Any, Any]:
    """(latents, None) after hires fix's second pass, or (None, pictures) when strength 0 leaves pictures;
    (None, None) when the run was interrupted while upscaling."""
    from sdlocal.engine import hires

    if control.interrupted:
        return None, None
    latents, pictures = hires.upscaled_latents(loaded, second, latents, generators, warnings)
    if latents is None or not second.denoises:
        return latents, pictures  # pictures (strength 0), or (None, None): interrupted while upscaling
    return hires.second_pass(loaded, request, second, latents, generators, callback), None


def run_generation(loaded: LoadedModel, request: GenerationRequest, scheduler: Any, control: RunControl,
                   model_name: str, model_hash: str | None,
                   on_progress: Callable[[Progress], None] | None = None,
                   embeddings: Mapping[str, Any] | None = None,
                   texts: tuple[str, str] | None = None,
                   infotext_extra: Mapping[str, str | None] | None = None,
                   hires_scheduler: Any = None,
                   upscale: Callable[[Any, str, int, int], Any] | None = None) -> RunOutput:
    """Generate batch_count batches of batch_size images; stops early on interrupt, skips a batch on skip.

    A skip pressed between two batches (or before the first) is still pending at the next batch's start,
    which is then skipped without running; one pressed during a batch abandons that batch.
    ``embeddings`` are the textual-inversion embeddings that fit the model, by trigger name. ``texts`` are the
    (prompt, negative prompt) the text encoder reads when they differ from the request's (the ``<lora:...>``
    tags taken out); the infotext keeps the request's own, so "Reuse all parameters" gets the tags back.
    ``infotext_extra`` adds keys of the caller's (the LoRAs' and the VAE's) to every image's infotext.
    With ``request.hires``, each batch gets hires fix's second pass (``hires.py``) on ``hires_scheduler`` (the
    first pass's when None), pictures upscaled by ``upscale(image, name, width, height)``; progress counts the
    steps of both passes as one run.
    """
    pipe = loaded.pipe
    _check_clip_skip(loaded, request.clip_skip)
    encoder, plan = _prompt_plan(loaded, request, embeddings, texts)
    total_images = request.batch_size * request.batch_count
    seeds = resolve_seeds(request.seed, total_images)
    _apply_request_patches(loaded, request)

    factor = pipe.vae_scale_factor
    channels = int(pipe.unet.config.out_channels if loaded.inpainting else pipe.unet.config.in_channels)
    shape = (channels, request.height // factor, request.width // factor)
    prepared = None
    extra = None
    if request.source is not None:
        from sdlocal.engine import img2img

        prepared = img2img.prepare_all(request)
        extra = img2img.infotext_extra(request, loaded.inpainting)
    images: list[GeneratedImage] = []
    warnings: list[str] = []
    second = None
    if request.hires is not None:
        from sdlocal.engine import hires

        second = hires.prepare(loaded, request, encoder, plan, texts or (request.prompt, request.negative_prompt),
                               hires_scheduler if hires_scheduler is not None else scheduler, upscale, warnings)
        extra = hires_infotext(request.hires, request.prompt, request.negative_prompt)
    extra = {**(extra or {}), "TI hashes": ti_hashes([encoder.embeddings[name] for name in encoder.used]),
             **(infotext_extra or {})}
    started = time.perf_counter()
    last_preview = 0.0

    for batch_index in range(request.batch_count):
        if control.interrupted:
            break
        if control.take_skip():
            continue
        batch_seeds = seeds[batch_index * request.batch_size:(batch_index + 1) * request.batch_size]
        batch_started = time.perf_counter()
        stopped = {"flag": False}

        def callback(offset: int, step_plan: PromptPlan, batch_index: int = batch_index,
                     batch_started: float = batch_started, stopped: dict = stopped) -> Callable[..., Any]:
            """The step callback of one pass; ``offset`` steps of the run came before it (hires fix's first)."""

            def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                return _step(pipeline, step, tensors, offset, step_plan, batch_index, batch_started, stopped)

            return on_step_end

        def _step(pipeline: Any, step: int, tensors: dict[str, Any], offset: int, step_plan: PromptPlan,
                  batch_index: int, batch_started: float, stopped: dict) -> dict[str, Any]:
            nonlocal last_preview
            if second is not None:
                total_steps = request.denoising_steps()
            else:
                total_steps = int(getattr(pipeline, "_num_timesteps", 0) or request.denoising_steps())
            done = offset + step + 1
            if not stopped["flag"] and (control.interrupted or control.take_skip()):
                pipeline._interrupt = True
                stopped["flag"] = True
            if on_progress is not None:
                now = time.perf_counter()
                per_step = (now - batch_started) / done
                remaining = (total_steps - done) + total_steps * (request.batch_count - batch_index - 1)
                preview = None
                if now - last_preview >= PREVIEW_INTERVAL_S and done < total_steps and "latents" in tensors:
                    preview = latent_preview(tensors["latents"], loaded.family)
                    last_preview = now
                try:
                    on_progress(Progress(step=done, total_steps=total_steps, batch_index=batch_index,
                                         batch_count=request.batch_count, eta_seconds=per_step * remaining,
                                         preview=preview))
                except Exception:  # noqa: BLE001 - a broken progress listener must not kill the run
                    log.exception("progress callback failed")
            tensors.update(step_plan.step_tensors(pipeline, step + 1, request.batch_size))  # prompt editing
            return tensors

        out_of_memory: EngineError | None = None
        call: BatchCall | None = None
        try:
            call = _batch_call(loaded, request, batch_seeds, batch_index * request.batch_size, shape, prepared,
                               warnings, plan)
            call.pipe.scheduler = scheduler
            latents = call.pipe(**call.kwargs, generator=call.generators, callback_on_step_end=callback(0, plan),
                                callback_on_step_end_tensor_inputs=["latents", *plan.tensor_inputs()]).images
            if stopped["flag"]:
                continue  # interrupted or skipped mid-batch: its latents are half-denoised, not images
            decoded = None
            if second is not None:
                latents, decoded = _hires_pass(loaded, request, second, latents, call.generators,
                                               callback(request.steps, second.plan), control, warnings)
                if stopped["flag"] or latents is None and decoded is None:
                    continue
            if decoded is None:
                decoded = decode(loaded, latents, warnings)
            if call.finishers is not None:
                decoded = [finish(image) for finish, image in zip(call.finishers, decoded, strict=True)]
        except (EngineError, RequestError):
            raise
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            # Only converted here: the traceback holds every frame of the failed call and their tensors until
            # this block is left, so memory is freed below, after it.
            out_of_memory = _oom_error(request, exc)
        finally:
            if hasattr(pipe, "maybe_free_model_hooks"):
                pipe.maybe_free_model_hooks()
        if out_of_memory is not None:
            call = latents = None  # this frame's own tensors go too
            free_memory()
            raise out_of_memory
        for offset, image in enumerate(decoded):
            index = batch_index * request.batch_size + offset
            seed = batch_seeds[offset]
            if _black(image):
                warnings.append(f"Image {index + 1} (seed {seed}) is entirely black. If that is not what the prompt "
                                "asks for, the VAE may be overflowing in half precision: start with --no-half-vae.")
            images.append(GeneratedImage(image=image, seed=seed, index=index,
                                         infotext=format_infotext(request, seed, model_name, model_hash, extra)))
    torch_seconds = time.perf_counter() - started
    return RunOutput(images=images, seeds=seeds, interrupted=control.interrupted, warnings=warnings,
                     seconds=torch_seconds)
