"""The img2img and inpainting pipelines of a loaded model, made over its own modules (no second copy).

diffusers' ``from_pipe`` builds another pipeline class around the very same UNet, VAE and text encoder
objects, so going from txt2img to img2img to inpainting loads nothing and holds no extra weights; whatever is
patched into those modules (token merging, attention slicing, VAE tiling, later LoRA) is shared too. A
9-channel inpainting checkpoint is already loaded as an inpainting pipeline, which also does its img2img.
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
        cached = getattr(diffusers, name).from_pipe(loaded.pipe)
        cached.set_progress_bar_config(disable=True)
        loaded.variants[mode] = cached
    return cached


def shares_modules(loaded: LoadedModel, pipe: Any) -> bool:
    """True when ``pipe`` runs on the loaded model's own module objects (what ``from_pipe`` promises)."""
    names = ("unet", "vae", "text_encoder", "text_encoder_2")
    return all(getattr(pipe, name, None) is getattr(loaded.pipe, name, None) for name in names)
