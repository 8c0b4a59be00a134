"""What an upscaler file holds: its tensors' names and shapes read cheaply, and the architecture they match.

Each architecture has a detector (``rrdbnet.detect``, ``srvgg.detect``) that returns its config from the shapes
or raises ``NotThisArchitecture``; the first that matches wins. Architectures people use that sdlocal cannot run
yet, and files that are not upscalers at all, are recognised by telling keys so the reason says which it is.
Nothing here trusts the file name: the scale, blocks and width come from the shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdlocal.engine.networks.library import pickle_reason

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
WRAPPERS = ("params_ema", "params", "state_dict", "model")  # Real-ESRGAN keeps EMA weights under params_ema

# Telling keys of architectures that are not written yet, and of files that are not upscalers.
_KNOWN_OTHERS: tuple[tuple[str, str], ...] = (
    ("model.diffusion_model.", "not an upscaler: a whole Stable Diffusion checkpoint (put it in "
                               "models/Stable-diffusion)"),
    ("lora_unet_", "not an upscaler: a LoRA (put it in models/Lora)"),
    ("decoder.conv_in.", "not an upscaler: a VAE (put it in models/VAE)"),
    (".attn.relative_position_bias_table", ""),  # SwinIR / HAT / DAT: told apart below
    ("block_1.c1_r.", "SPAN is not supported yet"),
    ("residual_layer.", "OmniSR is not supported yet"),
    ("feats.", "DAT or RealCUGAN is not supported yet"),
    ("unet1.", "RealCUGAN is not supported yet"),
)


class NotThisArchitecture(ValueError):
    """The shapes are not this architecture's; the message says why."""


class NotAnUpscaler(ValueError):
    """The file cannot be used as an upscaler; the message is the reason shown in the list."""


@dataclass(frozen=True)
class Architecture:
    """A recognised network: ``kind`` ("rrdbnet", "srvgg"), its config, and the key map (old ESRGAN names)."""

    kind: str
    config: Any
    mapping: dict[str, str] | None = None

    @property
    def scale(self) -> int:
        return int(self.config.scale)

    @property
    def label(self) -> str:
        return str(self.config.label)


def detect(shapes: Mapping[str, Sequence[int]]) -> Architecture:
    """The architecture of a state dict's shapes, or ``NotAnUpscaler`` saying what it is instead."""
    from sdlocal.engine.upscalers import rrdbnet, srvgg

    if not shapes:
        raise NotAnUpscaler("not an upscaler: the file holds no tensors")
    reasons = []
    try:
        config, mapping = rrdbnet.detect(shapes)
        return Architecture("rrdbnet", config, mapping)
    except NotThisArchitecture as exc:
        reasons.append(str(exc))
    try:
        return Architecture("srvgg", srvgg.detect(shapes))
    except NotThisArchitecture as exc:
        reasons.append(str(exc))
    raise NotAnUpscaler(_other_reason(list(shapes)))


def _other_reason(keys: list[str]) -> str:
    for marker, reason in _KNOWN_OTHERS:
        if any(marker in key for key in keys):
            if reason:
                return reason
            if any(".conv_block." in key for key in keys):
                return "HAT is not supported yet"
            return "SwinIR (or another transformer upscaler) is not supported yet"
    return ("not an upscaler architecture sdlocal knows (it runs ESRGAN/Real-ESRGAN RRDBNet and "
            "SRVGGNetCompact models)")


def unwrap(data: Any) -> dict[str, Any]:
    """The tensors of a loaded file, taken out of ``params_ema``/``params``/``state_dict`` wrappers."""
    for _ in range(3):
        if not isinstance(data, dict):
            break
        inner = next((data[k] for k in WRAPPERS if isinstance(data.get(k), dict)), None)
        if inner is None or any(hasattr(v, "shape") for v in data.values()):
            break
        data = inner
    if not isinstance(data, dict):
        raise NotAnUpscaler(f"not an upscaler: the file holds a {type(data).__name__}, not a dict of tensors")
    return {str(k): v for k, v in data.items() if hasattr(v, "shape")}


def read_shapes(path: Path) -> dict[str, list[int]]:
    """``{name: shape}`` of a ``.safetensors`` (its header only) or a ``.pth``/``.pt`` (memory-mapped,
    ``weights_only``); ``NotAnUpscaler`` with the reason for anything else."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from sdlocal.engine.headers import HeaderError, read_safetensors_header, shapes_of_header

        try:
            return {k: list(v) for k, v in shapes_of_header(read_safetensors_header(path)).items()}
        except HeaderError as exc:
            raise NotAnUpscaler(str(exc)) from None
    if suffix in PICKLE_SUFFIXES:
        return {k: list(v.shape) for k, v in load_tensors(path).items()}
    raise NotAnUpscaler(f"{suffix or 'a file without a suffix'} files are not supported: sdlocal reads upscaler "
                        "models as .pth or .safetensors")


def load_tensors(path: Path) -> dict[str, Any]:
    """The tensors of an upscaler file, on the CPU; a pickle that needs code is refused with the reason."""
    import pickle

    import torch

    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return unwrap(load_file(str(path), device="cpu"))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type on a damaged file
            raise NotAnUpscaler(f"cannot be read as a safetensors file ({exc}): download it again") from None
    if path.stat().st_size == 0:
        raise NotAnUpscaler("the file is empty: download it again")
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # a legacy (pre-zip) file cannot be mapped: read it whole
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise NotAnUpscaler(pickle_reason(str(exc), "a .pth file", "a .safetensors version of this model",
                                          "an upscaler model")) from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError... on damaged files
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise NotAnUpscaler(f"cannot be read as a PyTorch file ({type(exc).__name__}: {first}): it is damaged "
                            "or not an upscaler; download it again") from None
    return unwrap(data)


def build_network(architecture: Architecture, tensors: Mapping[str, Any]) -> Any:
    """The network for ``architecture`` with the file's weights (strict: every key must fit)."""
    from sdlocal.engine.upscalers import rrdbnet, srvgg

    builder = {"rrdbnet": rrdbnet.build, "srvgg": srvgg.build}[architecture.kind]
    network = builder(architecture.config)
    if architecture.mapping is not None:
        tensors = {architecture.mapping[k]: v for k, v in tensors.items() if k in architecture.mapping}
    network.load_state_dict(dict(tensors), strict=True)
    return network.eval().requires_grad_(False)
