"""Which network an upscaler file holds, read from its tensor names and shapes (never from its file name).

A detector either returns a ``Detected`` (the architecture, its description, the scale and how to build and
load the module) or raises ``NotAnUpscaler`` with a reason the user can act on: the list shows that reason
next to the file, as it does for LoRAs and VAEs that cannot be used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUFFIXES = (".pth", ".pt", ".safetensors")
WRAPPERS = ("params_ema", "params", "state_dict", "model", "net_g")


class NotAnUpscaler(ValueError):
    """The file cannot be used as an upscaler; the message is the reason."""


@dataclass(frozen=True)
class Detected:
    architecture: str  # "RRDBNet" | "SRVGGNetCompact"
    description: str  # e.g. "ESRGAN (RRDBNet, 23 blocks, 64 features, x4)"
    scale: float
    build: Callable[[], Any]  # () -> torch.nn.Module with random weights
    convert: Callable[[dict[str, Any]], dict[str, Any]]  # the file's state dict -> the module's


# Signatures of networks people keep in the same folders that sdlocal does not run, with what they are.
_UNSUPPORTED = (
    ("layers.0.residual_group.blocks.0.attn.relative_position_bias_table", "a SwinIR model: not supported yet"),
    ("layers.0.residual_group.blocks.0.conv_block.cab.0.weight", "a HAT model: not supported yet"),
    ("layers.0.blocks.0.attn.attns.0.pos.pos_proj.weight", "a DAT model: not supported yet"),
    ("block_1.c1_r.sk.weight", "a SPAN model: not supported yet"),
    ("residual_layer.0.residual_layer.0.layer.0.fn.0.weight", "an OmniSR model: not supported yet"),
    ("stylegan_decoder.style_mlp.1.weight", "a GFPGAN face restoration model, not an upscaler"),
    ("quantize.embedding.weight", "a CodeFormer face restoration model, not an upscaler"),
)


def unwrap(state: Any) -> dict[str, Any]:
    """The tensors of a saved dict: training wrappers (``params_ema`` first, as Real-ESRGAN's release files
    hold both) and a ``module.`` prefix (DataParallel) taken off."""
    for _ in range(3):
        if not isinstance(state, dict):
            break
        inner = next((state[key] for key in WRAPPERS if isinstance(state.get(key), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict) or not state:
        raise NotAnUpscaler("no weights inside (not a state dict)")
    prefix = "module."
    if all(isinstance(key, str) and key.startswith(prefix) for key in state):
        state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def detect(shapes: dict[str, list[int]]) -> Detected:
    """The network ``shapes`` (tensor name -> shape, unwrapped) describes."""
    from sdlocal.engine.upscalers import rrdbnet, srvgg

    try:
        if "conv_first.weight" in shapes and "body.0.rdb1.conv1.weight" in shapes:
            shape = rrdbnet.new_layout_shape(shapes)
            return _rrdb(shape, rrdbnet.convert_new_layout)
        if "model.0.weight" in shapes and "model.1.sub.0.RDB1.conv1.0.weight" in shapes:
            shape = rrdbnet.old_layout_shape(shapes)
            return _rrdb(shape, lambda state: rrdbnet.convert_old_layout(state, shape))
        if "body.0.weight" in shapes and "body.1.weight" in shapes:
            compact = srvgg.compact_shape(shapes)
            return Detected("SRVGGNetCompact", srvgg.describe(compact), float(compact.scale),
                            lambda: srvgg.SRVGGNetCompact(compact), dict)
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise NotAnUpscaler(f"looks like an ESRGAN-family model but its layers do not fit ({exc})") from None
    for key, what in _UNSUPPORTED:
        if key in shapes:
            raise NotAnUpscaler(what)
    if any(key.startswith(("model.diffusion_model.", "first_stage_model.")) for key in shapes):
        raise NotAnUpscaler("a Stable Diffusion checkpoint, not an upscaler: put it in models/Stable-diffusion")
    raise NotAnUpscaler("not an upscaler sdlocal knows (ESRGAN, Real-ESRGAN and Real-ESRGAN compact models are)")


def _rrdb(shape: Any, convert: Callable[[dict[str, Any]], dict[str, Any]]) -> Detected:
    from sdlocal.engine.upscalers import rrdbnet

    if shape.blocks < 1 or not rrdbnet.is_power_of_two(shape.scale * shape.unshuffle):
        raise NotAnUpscaler(f"an RRDBNet with {shape.blocks} blocks and scale {shape.scale} is not one sdlocal runs")
    return Detected("RRDBNet", rrdbnet.describe(shape), float(shape.scale), lambda: rrdbnet.RRDBNet(shape), convert)


def read_state(path: Path) -> dict[str, Any]:
    """The file's tensors, unwrapped. ``.pth``/``.pt`` are opened with ``weights_only=True`` (a pickle that needs
    code is refused, never run) and memory-mapped, so reading only the shapes costs little."""
    import torch

    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return unwrap(load_file(str(path), device="cpu"))
        except Exception as exc:  # noqa: BLE001 - a damaged file is listed with its reason
            raise NotAnUpscaler(f"cannot be read as safetensors ({str(exc)[:120]}): download it again") from None
    if suffix not in (".pth", ".pt"):
        raise NotAnUpscaler(f"{suffix or 'no suffix'} files are not read; upscalers are .pth or .safetensors")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        try:  # an old (pre-zip) torch file cannot be memory-mapped
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise NotAnUpscaler(_load_reason(exc)) from None
    except Exception as exc:  # noqa: BLE001 - includes the UnpicklingError of a file that needs code
        raise NotAnUpscaler(_load_reason(exc)) from None
    return unwrap(state)


def _load_reason(exc: BaseException) -> str:
    text = str(exc)
    if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
        return ("contains code, refused: it cannot be opened with weights only; use a .safetensors version or a "
                "plain state-dict .pth")
    return f"cannot be read ({type(exc).__name__}: {text.splitlines()[0][:120] if text else ''}): download it again"


def shapes_of(state: dict[str, Any]) -> dict[str, list[int]]:
    return {str(key): list(value.shape) for key, value in state.items() if hasattr(value, "shape")}
