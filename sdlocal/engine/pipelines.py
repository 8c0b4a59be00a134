"""The img2img and inpainting pipelines of a loaded model, made over its own modules (no second copy).

Another pipeline class is built around the very same UNet, VAE and text encoder objects, so going from
txt2img to img2img to inpainting loads nothing and holds no extra weights; whatever is patched into those
modules (token merging, attention slicing, VAE tiling, later LoRA) is shared too. A 9-channel inpainting
checkpoint is already loaded as an inpainting pipeline, which also does its img2img.

This is what diffusers' ``from_pipe`` does, except its last step: ``from_pipe`` ends with
``new_pipeline.to(dtype=...)``, float32 unless told otherwise, which casts the shared modules in place: a bf16 or
fp16 model would silently become fp32 (twice the memory, for txt2img too), and with any one dtype passed an
fp32 VAE kept for SDXL or ``--no-half-vae`` would be cast down. So the pipeline is constructed directly.
"""

from __future__ import annotations

from typing import Any

from sdlocal.engine.loader import LoadedModel

_CLASSES = {
    ("sdxl", "img2img"): "StableDiffusionXLImg2ImgPipeline",
    ("sdxl", "inpaint"): "StableDiffusionXLInpaintPipeline",
    ("sd", "img2img"): "StableDiffusionImg2ImgPipeline",
    ("sd", "inpaint"): "StableDiffusionInpaintPipeline",
}


def variant(loaded: LoadedModel, mode: str) -> Any:
    """The pipeline that runs ``mode`` ("txt2img", "img2img" or "inpaint") for this model, built once."""
    if mode == "txt2img" or loaded.inpainting:
        return loaded.pipe
    cached = loaded.variants.get(mode)
    if cached is None:
        import diffusers

        name = _CLASSES[("sdxl" if loaded.family == "sdxl" else "sd", mode)]
        cached = _over_modules(getattr(diffusers, name), loaded.pipe)
        cached.set_progress_bar_config(disable=True)
        loaded.variants[mode] = cached
    return cached


def _over_modules(cls: Any, base: Any) -> Any:
    """A ``cls`` pipeline over ``base``'s component objects and its config flags, nothing cast or copied."""
    expected, optional = cls._get_signature_keys(cls)
    components = {name: component for name, component in base.components.items() if name in expected}
    flags = {key: base.config[key] for key in optional if key in base.config and key not in components}
    return cls(**components, **flags)


def shares_modules(loaded: LoadedModel, pipe: Any) -> bool:
    """True when ``pipe`` runs on the loaded model's own module objects (what ``from_pipe`` promises)."""
    names = ("unet", "vae", "text_encoder", "text_encoder_2")
    return all(getattr(pipe, name, None) is getattr(loaded.pipe, name, None) for name in names)
