"""Random-factor LoRA files in the layouts trainers write, for the tests (tiny models) and the benchmark (real shapes).

Files are written the way kohya sd-scripts and LyCORIS write them: UNet keys diffusers-style for SD 1.x/2.x and
LDM-style (``input_blocks``...) for SDXL, ``lora_te_`` / ``lora_te1_`` / ``lora_te2_`` text-encoder keys, an
``alpha`` per module (rank / 2, so the alpha/rank scaling is exercised), fp16 factors, and on request kohya's
``__metadata__``. Only module names and shapes are read from the models, so meta-device models (a real-size
SD 1.5 without its 2 GB of weights) work; each tensor is drawn from its own seeded generator, so one file never
needs more memory than itself.

The factors are scaled so that every module's change has about ``scale`` times the spread of a freshly
initialised weight (1 / sqrt(fan-in)): ``scale=1`` visibly changes a picture, small scales barely do.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sdlocal.engine.networks.lora import COMPONENTS, LORA_FORMATS, TEXT_COMPONENTS
from sdlocal.engine.networks.lora_keys import (
    KOHYA_UNET_PREFIX,
    components_of,
    kohya_text_key,
    patchable_modules,
    text_model_name,
    unet_ldm_names,
)

_TEXT_MODULE = re.compile(r"(?:^|\.)(?:self_attn\.(?:q|k|v|out)_proj|mlp\.fc[12])$")
_CONV_MODULE = re.compile(r"(?:^|\.)(?:resnets\.\d+\.(?:conv1|conv2|conv_shortcut)|(?:down|up)samplers\.0\.conv)$")
_BASE_VERSIONS = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
_LYCORIS = {"loha": "loha", "lokr": "lokr"}
Trained = tuple[str, str, Any]  # (component, module name, module)


# ------------------------------------------------------------------------------------------ which modules
def trained_modules(models: Mapping[str, Any], components: tuple[str, ...], conv: bool) -> Iterator[Trained]:
    """(component, module name, module) of what kohya trains: every Linear/Conv2d inside the UNet's transformers
    (with ``conv`` also the resnet and sampler convolutions: LoCon) and the text encoders' attention and MLP."""
    from diffusers.models import Transformer2DModel

    for component in components:
        model = models.get(component)
        if model is None:
            continue
        if component in TEXT_COMPONENTS:
            for name, module in patchable_modules(model):
                if _TEXT_MODULE.search(name):
                    yield component, name, module
            continue
        inside = {f"{outer}.{inner}" for outer, block in model.named_modules() if isinstance(block, Transformer2DModel)
                  for inner, _ in patchable_modules(block)}
        for name, module in patchable_modules(model):
            if name in inside or (conv and _CONV_MODULE.search(name)):
                yield component, name, module


def family_of(models: Mapping[str, Any]) -> str:
    """"sdxl" (two text encoders), "sd2" (OpenCLIP traits), else "sd1"."""
    from sdlocal.engine.ldm_layout import uses_openclip_layout

    if "text_encoder_2" in models:
        return "sdxl"
    return "sd2" if uses_openclip_layout(SimpleNamespace(**models)) else "sd1"


# ------------------------------------------------------------------------------------------------ factors
class _Draw:
    """Seeded random tensors, one generator per tensor (the same file for the same seed, whatever the order)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.count = 0

    def __call__(self, *shape: int, std: float = 1.0) -> Any:
        import torch

        self.count += 1
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.count)
        return (torch.randn(*shape, generator=generator) * std).to(torch.float16)


def _split(n: int) -> tuple[int, int]:
    """n = a * b with a the largest divisor not above sqrt(n): LoKr's two Kronecker sides."""
    a = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return a, n // a


def _factors(fmt: str, weight: Any, rank: int, scale: float, draw: _Draw) -> dict[str, Any]:
    """One module's tensors (suffix -> fp16 tensor). Each product of a factor of std s_a ([.., r]) and one of std s_b
    has std sqrt(r) * s_a * s_b; ``spread`` is the change's std before the alpha/rank scaling undoes r / alpha."""
    import torch

    out, inn, kernel = int(weight.shape[0]), int(weight.shape[1]), tuple(int(k) for k in weight.shape[2:])
    fan_in = inn * math.prod(kernel)
    alpha = rank / 2
    spread = scale / math.sqrt(fan_in) * (1.0 if fmt == "peft" else rank / alpha)
    ones = (1,) * len(kernel)
    if fmt == "loha":
        parts = {"hada_w1_a": draw(out, rank, std=rank ** -0.5), "hada_w1_b": draw(rank, fan_in),
                 "hada_w2_a": draw(out, rank, std=rank ** -0.5), "hada_w2_b": draw(rank, fan_in, std=spread)}
    elif fmt == "lokr":
        (o1, o2), (i1, i2) = _split(out), _split(inn)
        parts = {"lokr_w1": draw(o1, i1), "lokr_w2_a": draw(o2, rank, std=rank ** -0.5),
                 "lokr_w2_b": draw(rank, i2 * math.prod(kernel), std=spread)}
    else:
        down = draw(rank, inn, *kernel)
        up = draw(out, rank, *ones, std=spread / math.sqrt(rank))
        names = ("lora_A.weight", "lora_B.weight") if fmt == "peft" else ("lora_down.weight", "lora_up.weight")
        parts = {names[0]: down, names[1]: up}
    if fmt != "peft":
        parts["alpha"] = torch.tensor(alpha, dtype=torch.float16)
    if fmt == "dora":
        parts["dora_scale"] = _dora_scale(weight, scale, draw)
    return parts


def _dora_scale(weight: Any, scale: float, draw: _Draw) -> Any:
    """Per-output magnitudes near the weight's row norms (near a fresh weight's, 1/sqrt(3), on the meta device)."""
    import torch

    shape = (int(weight.shape[0]),) + (1,) * (weight.dim() - 1)
    if weight.device.type == "meta":
        norms = torch.full(shape, 3 ** -0.5)
    else:
        flat = weight.detach().float().flatten(1)
        norms = torch.linalg.vector_norm(flat, dim=1).reshape(shape)
    return (norms * torch.exp(draw(*shape, std=0.2 * scale).float())).to(torch.float16)


# ------------------------------------------------------------------------------------------------ keys
def _base_key(fmt: str, component: str, name: str, sdxl: bool, ldm: dict[str, str] | None) -> str:
    if fmt == "peft":
        return f"{component}.{text_model_name(name) if component in TEXT_COMPONENTS else name}"
    if component in TEXT_COMPONENTS:
        return kohya_text_key(component, name, sdxl)
    return KOHYA_UNET_PREFIX + (ldm.get(name, name) if ldm is not None else name).replace(".", "_")


def kohya_metadata(path: Path, family: str, fmt: str, rank: int, given: Mapping[str, Any]) -> dict[str, str]:
    """kohya's ``ss_*`` fields (all strings; JSON for the structured ones), overridden by ``given``."""
    meta = {"ss_output_name": path.stem, "ss_base_model_version": _BASE_VERSIONS[family],
            "ss_network_dim": str(rank), "ss_network_alpha": f"{rank / 2:g}",
            "ss_network_module": "lycoris.kohya" if fmt in _LYCORIS else "networks.lora",
            "ss_tag_frequency": json.dumps({})}
    if fmt in _LYCORIS:
        meta["ss_network_args"] = json.dumps({"algo": _LYCORIS[fmt]})
    for key, value in given.items():
        meta[str(key)] = value if isinstance(value, str) else json.dumps(value)
    return meta


def write_lora(pipe_or_models: Any, path: Path | str, fmt: str = "lora", rank: int = 4, seed: int = 0,
               scale: float = 1.0, components: tuple[str, ...] = COMPONENTS, conv: bool = False,
               metadata: Mapping[str, Any] | None = None, ldm_names: bool | None = None) -> Path:
    """Write a LoRA of ``fmt`` (one of ``LORA_FORMATS``) for a pipeline or ``{component: model}``; returns ``path``.

    ``components`` lists which of text_encoder, text_encoder_2 and unet it changes (those the models lack are
    skipped); ``conv`` adds the UNet's resnet and sampler convolutions ("locon" always has them). ``ldm_names``
    chooses the UNet key style (default: LDM-style for SDXL, as sd-scripts writes, diffusers-style otherwise).
    ``metadata`` (even ``{}``) adds kohya's ``__metadata__``; its entries override the defaults.
    """
    from safetensors.torch import save_file

    if fmt not in LORA_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(LORA_FORMATS)}, not {fmt!r}")
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown or rank < 1:
        raise ValueError(f"components must be among {', '.join(COMPONENTS)} and rank >= 1 "
                         f"(got components {components!r}, rank {rank})")
    path = Path(path)
    models = components_of(pipe_or_models)
    family = family_of(models)
    sdxl = family == "sdxl"
    use_ldm = sdxl if ldm_names is None else ldm_names
    ldm = unet_ldm_names(models["unet"]) if use_ldm and "unet" in models else None
    draw = _Draw(seed)
    tensors: dict[str, Any] = {}
    for component, name, module in trained_modules(models, components, conv or fmt == "locon"):
        base = _base_key(fmt, component, name, sdxl, ldm)
        for suffix, tensor in _factors(fmt, module.weight, rank, scale, draw).items():
            tensors[f"{base}.{suffix}"] = tensor.contiguous()
    if not tensors:
        raise ValueError(f"no module to write: the models have none of {components!r}")
    meta = None if metadata is None else kohya_metadata(path, family, fmt, rank, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata=meta)
    os.replace(partial, path)
    return path
