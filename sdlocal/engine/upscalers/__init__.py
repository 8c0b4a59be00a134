"""Upscalers: the latent modes hires fix uses, plain resamplers, and ESRGAN-family model files.

Names are A1111's, so API clients and infotexts that name an upscaler find the same one here. The latent modes
resize the latents themselves (only hires fix can use them); every other upscaler takes and returns a picture.
"""

from __future__ import annotations

# A1111's latent upscale modes -> (torch.nn.functional.interpolate mode, antialias), in A1111's order.
LATENT_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}

# The upscalers that need no file, in A1111's order: "None" keeps the picture (hires fix then only resizes
# it to the target with Lanczos, as A1111 does), "Lanczos" and "Nearest" are Pillow's resamplers.
BUILTIN_UPSCALERS: tuple[str, ...] = ("None", "Lanczos", "Nearest")


def latent_mode(name: str) -> tuple[str, bool] | None:
    """The interpolation for a latent mode's name (any case), or None when ``name`` is not a latent mode."""
    wanted = (name or "").strip().lower()
    return next((mode for key, mode in LATENT_MODES.items() if key.lower() == wanted), None)


from sdlocal.engine.upscalers.library import UpscaleInterrupted, UpscalerInfo, UpscalerSet  # noqa: E402

__all__ = ["BUILTIN_UPSCALERS", "LATENT_MODES", "UpscaleInterrupted", "UpscalerInfo", "UpscalerSet", "latent_mode"]
