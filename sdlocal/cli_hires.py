"""``sdlocal generate``'s hires fix flags: A1111's hires controls, read into the request's ``hires`` part.

Hires fix is on with ``--hires`` or any ``--hr-*`` flag; the values left out take the request's own defaults
(A1111's UI: 2x, "Latent", the first pass's steps, strength 0.7 unless ``--denoising-strength`` says otherwise).
A refused value names the flag that set it.
"""

from __future__ import annotations

import argparse
from typing import Any

from sdlocal.engine.request import RequestError

# option key -> the HiresSpec field it sets
HIRES_KEYS = {"hr_scale": "scale", "hr_resize_x": "resize_x", "hr_resize_y": "resize_y", "hr_upscaler": "upscaler",
              "hr_steps": "steps", "hr_sampler": "sampler", "hr_schedule": "schedule", "hr_prompt": "prompt",
              "hr_negative_prompt": "negative_prompt"}
# A RequestError's field (the API's name) -> the flag that sets it.
HIRES_FIELD_FLAGS = {"hr_scale": "--hr-scale", "hr_resize_x": "--hr-resize-x", "hr_resize_y": "--hr-resize-y",
                     "hr_upscaler": "--hr-upscaler", "hr_second_pass_steps": "--hr-steps",
                     "hr_sampler": "--hr-sampler", "hr_sampler_name": "--hr-sampler", "hr_schedule": "--hr-schedule",
                     "hr_scheduler": "--hr-schedule", "hr_prompt": "--hr-prompt",
                     "hr_negative_prompt": "--hr-negative-prompt", "enable_hr": "--hires"}


def add_hires_flags(parser: argparse.ArgumentParser) -> None:
    """The flags; left unset (None) unless typed, so the request's defaults apply."""
    hr = parser.add_argument_group("hires fix (txt2img: generate small, upscale, denoise again at the larger size)")
    hr.add_argument("--hires", action="store_true", default=None,
                    help="turn hires fix on (so does any other flag of this group)")
    hr.add_argument("--hr-scale", "--hires-scale", dest="hr_scale", type=float, metavar="X",
                    help="upscale by this factor, 1-8 (default 2)")
    hr.add_argument("--hr-resize-x", type=int, metavar="PX", help="target width instead of the factor (0: follow)")
    hr.add_argument("--hr-resize-y", type=int, metavar="PX", help="target height instead of the factor (0: follow)")
    hr.add_argument("--hr-upscaler", metavar="NAME",
                    help="a latent mode ('Latent', 'Latent (bicubic)'...), 'Lanczos', or an upscaler model's name")
    hr.add_argument("--hr-steps", type=int, metavar="N", help="second-pass steps (default 0: as many as --steps)")
    hr.add_argument("--hr-sampler", metavar="NAME", help="second-pass sampler (default: the same)")
    hr.add_argument("--hr-schedule", metavar="NAME", help="second-pass schedule type (default: the same)")
    hr.add_argument("--hr-prompt", metavar="TEXT", help="second-pass prompt (default: the same)")
    hr.add_argument("--hr-negative-prompt", metavar="TEXT", help="second-pass negative prompt (default: the same)")


def hires_wanted(options: dict[str, Any]) -> bool:
    return bool(options.get("hires")) or any(options.get(key) is not None for key in HIRES_KEYS)


def hires_part(options: dict[str, Any]) -> Any:
    """The request's ``hires`` (a ``HiresSpec``) from the flags, or None when hires fix is off.

    With an init image (img2img) the flags are an error rather than ignored: hires fix is txt2img's.
    """
    from sdlocal.engine.request import HiresSpec

    if not hires_wanted(options):
        return None
    if options.get("init_image"):
        raise RequestError("enable_hr", True, "is for txt2img; leave out --hires and the other hires fix "
                                              "flags with --init-image")
    values = {field: options[key] for key, field in HIRES_KEYS.items() if options.get(key) is not None}
    if options.get("denoising_strength") is not None:
        values["denoising_strength"] = options["denoising_strength"]
    return HiresSpec(**values)


def hires_flag(field: str) -> str | None:
    return HIRES_FIELD_FLAGS.get(field)
