"""The img2img and inpainting stage: init images -> latents -> the pipeline's arguments -> results put back.

sdlocal encodes the init images itself and hands the pipeline latents. That one path serves every case the
same way: the latent resize mode, "latent noise" and "latent nothing" (which change the latents, not the
pixels), 9-channel checkpoints' conditioning with its mask weight, and the VAE precision the loader chose
(diffusers' SDXL pipelines would otherwise cast an fp32 VAE back to half precision after encoding).

Steps follow A1111: ``request.denoising_steps()`` = int(steps x min(strength, 0.999)), at least one; the
pipeline is given a strength that makes diffusers cut its schedule to exactly that many steps. Each image's
VAE sample and noise come from its own seeded CPU generator, so the same request gives the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sdlocal.engine import images as source_images
from sdlocal.engine.loader import LoadedModel
from sdlocal.engine.pipelines import variant
from sdlocal.engine.request import EngineError, GenerationRequest


def prepare_all(request: GenerationRequest) -> list[source_images.PreparedImage]:
    """Every init image resized, cropped, blurred and filled once per run (PIL work, before the batches)."""
    source = request.source
    return [source_images.prepare(image, source, request.width, request.height) for image in source.images]


def pipeline_strength(request: GenerationRequest) -> float:
    """A strength for which diffusers runs exactly ``request.denoising_steps()`` steps (int(steps x strength));
    at most 1, which diffusers requires (a 1-step run: 1.5 / 1 would be refused)."""
    return min(1.0, (request.denoising_steps() + 0.5) / request.steps)


def to_tensor(loaded: LoadedModel, pixels: list[Any]) -> Any:
    """PIL images of one size -> a float batch in [-1, 1], shaped (batch, 3, h, w)."""
    return loaded.pipe.image_processor.preprocess(pixels)


def encode(loaded: LoadedModel, batch: Any, generators: list[Any], warnings: list[str]) -> Any:
    """A [-1, 1] image batch -> scaled latents in the UNet's dtype, one VAE sample per image from its generator."""
    import torch
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents

    pipe = loaded.pipe
    vae = pipe.vae
    batch = batch.to(pipe._execution_device)

    def run() -> Any:
        x = batch.to(dtype=vae.dtype)
        with torch.inference_mode():
            return torch.cat([retrieve_latents(vae.encode(x[i:i + 1]), generator=generators[i])
                              for i in range(x.shape[0])])

    latents = run()
    if torch.isnan(latents).any() and vae.dtype == torch.float16:
        vae.to(dtype=torch.float32)
        loaded.vae_upcast = True
        warnings.append("The VAE overflowed in fp16 (NaN) while encoding; it was switched to fp32 for this model.")
        latents = run()
    if torch.isnan(latents).any():
        raise EngineError("The VAE produced NaN values while encoding the init image.",
                          "Start with --no-half-vae, or use precision fp32 (--precision fp32).")
    mean = getattr(vae.config, "latents_mean", None)
    std = getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        mean_t = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
        std_t = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
        latents = (latents - mean_t) * vae.config.scaling_factor / std_t
    else:
        latents = latents * vae.config.scaling_factor
    return latents.to(dtype=pipe.unet.dtype)


def _latent_mask(masks: list[Any], size: tuple[int, int], like: Any) -> Any:
    """The masks at latent size, rounded to 0/1 (white = repaint), shaped (batch, 1, h, w)."""
    import numpy as np
    import torch
    from PIL import Image

    planes = [np.rint(np.asarray(m.resize(size, Image.Resampling.BICUBIC), dtype=np.float32) / 255.0) for m in masks]
    return torch.from_numpy(np.stack(planes)[:, None]).to(device=like.device, dtype=like.dtype)


def _content(latents: Any, masks: list[Any], content: str, generators: list[Any]) -> Any:
    """A1111's "latent noise" (seeded noise) and "latent nothing" (zeros) in the masked latents."""
    import torch

    if content not in ("latent noise", "latent nothing"):
        return latents
    keep = 1.0 - _latent_mask(masks, (latents.shape[-1], latents.shape[-2]), latents)
    if content == "latent nothing":
        return latents * keep
    noise = torch.cat([torch.randn((1, *latents.shape[1:]), generator=g, dtype=torch.float32) for g in generators])
    return latents * keep + noise.to(device=latents.device, dtype=latents.dtype) * (1.0 - keep)


def _conditioning(loaded: LoadedModel, prepared: list[source_images.PreparedImage], masks: list[Any],
                  weight: float, generators: list[Any], warnings: list[str]) -> Any:
    """A 9-channel model's masked-image latents: the image with the mask blacked out, mixed with the whole
    image by ``weight`` (A1111's conditional mask weight: 1 = masked, 0 = the original)."""
    import numpy as np
    import torch
    from PIL import Image

    size = masks[0].size  # the latent resize mode encodes the image at its own size; the conditioning is at ours
    batch = to_tensor(loaded, [p.pixels if p.pixels.size == size else p.pixels.resize(size, Image.Resampling.LANCZOS)
                               for p in prepared])
    mask = torch.from_numpy(np.stack([(np.asarray(m, dtype=np.float32) >= 127.5) for m in masks])[:, None])
    masked = batch * (1.0 - mask.to(batch.dtype))
    return encode(loaded, torch.lerp(batch, masked, weight), generators, warnings)


def batch_call(loaded: LoadedModel, request: GenerationRequest, prepared: list[source_images.PreparedImage],
               first_index: int, generators: list[Any], warnings: list[str]
               ) -> tuple[Any, dict[str, Any], list[Callable[[Any], Any]]]:
    """(pipeline, its image arguments, one finisher per image) for the batch starting at image ``first_index``."""
    from PIL import Image

    count = len(generators)
    chosen = [prepared[(first_index + i) % len(prepared)] for i in range(count)]
    spec = request.source.mask
    masked = chosen[0].mask is not None
    latents = encode(loaded, to_tensor(loaded, [p.pixels for p in chosen]), generators, warnings)
    if chosen[0].latent_resize:
        import torch.nn.functional as functional

        factor = loaded.pipe.vae_scale_factor
        latents = functional.interpolate(latents, size=(request.height // factor, request.width // factor),
                                         mode="bilinear", align_corners=False)
    kwargs: dict[str, Any] = {"strength": pipeline_strength(request)}
    mode = "inpaint" if masked or loaded.inpainting else "img2img"
    pipe = variant(loaded, mode)
    if mode == "img2img":
        kwargs["image"] = latents
        return pipe, kwargs, [_finisher(p) for p in chosen]
    full = Image.new("L", (request.width, request.height), 255)
    masks = [p.mask if p.mask is not None else full for p in chosen]
    if masked:
        latents = _content(latents, masks, spec.content, generators)
    if loaded.inpainting:
        weight = spec.conditional_weight if masked else 1.0
        kwargs["masked_image_latents"] = _conditioning(loaded, chosen, masks, weight, generators, warnings)
    else:
        kwargs["masked_image_latents"] = latents  # unused by 4-channel UNets; given so nothing is encoded twice
    kwargs.update(image=latents, mask_image=masks, height=request.height, width=request.width)
    return pipe, kwargs, [_finisher(p) for p in chosen]


def _finisher(prepared: source_images.PreparedImage) -> Callable[[Any], Any]:
    return lambda image: source_images.finish(prepared, image)


def infotext_extra(request: GenerationRequest, inpainting_model: bool) -> dict[str, Any]:
    """A1111's img2img keys for the ``parameters`` text (None drops a key)."""
    source = request.source
    extra: dict[str, Any] = {"Denoising strength": f"{source.denoising_strength:g}"}
    spec = source.mask if source_images.effective_mask(source.mask) is not None else None
    if spec is None:
        if inpainting_model:
            extra["Conditional mask weight"] = "1"
        return extra
    if spec.blur_x == spec.blur_y:
        extra["Mask blur"] = spec.blur_x
    else:
        extra["Mask blur X"], extra["Mask blur Y"] = spec.blur_x, spec.blur_y
    only_masked = spec.area == "Only masked"
    extra["Inpaint area"] = "Only masked" if only_masked else None
    extra["Masked area padding"] = spec.padding if only_masked else None
    extra["Masked content"] = spec.content
    extra["Mask mode"] = "Inpaint not masked" if spec.invert else None
    extra["Conditional mask weight"] = f"{spec.conditional_weight:g}" if inpainting_model else None
    return extra
