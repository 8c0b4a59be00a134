"""Diffusers pipelines written back as single files in the original (A1111 / LDM / SGM) key layout.

People download checkpoints as one ``.safetensors`` file whose keys follow the original training code
(``model.diffusion_model.input_blocks...``, ``first_stage_model...``, ``cond_stage_model...``); diffusers only
reads that layout (``from_single_file``), it cannot write it. sdlocal's tests and benchmarks need such files
built from in-memory pipelines (tiny random ones, or real-size ones on the meta device), so this module maps
each diffusers parameter name to its original name, from the structure of the models:

* UNet -> ``model.diffusion_model.``: the flat ``input_blocks`` / ``middle_block`` / ``output_blocks`` lists,
  one entry per resnet (``.0``), its transformer (``.1``) and the down/up-sampler of each level.
* VAE -> ``first_stage_model.``: ``encoder.down.N.block.M`` / ``decoder.up.N`` (numbered from the bottom, so
  the reverse of diffusers' order), and the mid-block attention as 1x1 convolutions ``q``/``k``/``v``/``proj_out``.
* CLIP-L (SD 1.x, SDXL's first encoder) keeps the transformers names under ``...transformer.text_model.``;
  OpenCLIP encoders (SD 2.x, SDXL's second) use OpenCLIP's names under ``...model.``, with q, k and v fused into
  ``in_proj_weight`` and the projection stored transposed.

Only renames, ``reshape``, ``cat`` and transposes are used, so meta tensors work (no value is read). Every
parameter must be mapped: an unknown name raises, so a silently incomplete file cannot be written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer.text_model."
SD2_OPENCLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."

# The DDPM buffers LDM checkpoints (SD 1.x / 2.x) carry at the top level; SGM (SDXL) files carry none.
DDPM_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)

_RESNET_UNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
_VAE_TOP = {"conv_in": "conv_in", "conv_out": "conv_out", "conv_norm_out": "norm_out"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                   "self_attn.out_proj": "attn.out_proj"}


class LayoutError(ValueError):
    """A pipeline or parameter this module does not know how to write in the original layout."""


def _unmapped(component: str, name: str) -> LayoutError:
    return LayoutError(f"{component}: no original-layout name for parameter {name!r}; "
                       "sdlocal.engine.ldm_layout supports SD 1.x, SD 2.x and SDXL base (and their inpainting) only")


# --------------------------------------------------------------------------------------------------- UNet
def _split(name: str) -> tuple[str, str]:
    """``"a.b.weight"`` -> ``("a.b", "weight")``."""
    module, _, param = name.rpartition(".")
    return module, param


def _unet_namer(unet: Any) -> Callable[[str], str]:
    """A function from a diffusers UNet parameter name to its ``input_blocks``/``output_blocks`` name.

    The flat original lists number every resnet of a level, then that level's sampler: level b of the down path
    starts at input block 1 + (resnets + 1) per earlier level. Counts come from the model itself, not the config.
    """
    down_start: list[int] = []
    index = 1
    for block in unet.down_blocks:
        down_start.append(index)
        index += len(block.resnets) + (1 if getattr(block, "downsamplers", None) else 0)
    up_start: list[int] = []
    index = 0
    for block in unet.up_blocks:
        up_start.append(index)
        index += len(block.resnets)
    up_count = [len(block.resnets) for block in unet.up_blocks]
    up_has_attention = [bool(getattr(block, "attentions", None)) for block in unet.up_blocks]
    down_resnets = [len(block.resnets) for block in unet.down_blocks]
    mid_has_attention = bool(getattr(unet.mid_block, "attentions", None)) if unet.mid_block is not None else False

    def resnet(rest: str) -> str:
        module, param = _split(rest)
        if module not in _RESNET_UNET:
            raise KeyError(rest)
        return f"{_RESNET_UNET[module]}.{param}"

    def name(key: str) -> str:
        module, param = _split(key)
        if module in _UNET_TOP:
            return f"{_UNET_TOP[module]}.{param}"
        if match := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            level, kind, j, rest = int(match[1]), match[2], int(match[3]), match[4]
            slot = down_start[level] + j
            return f"input_blocks.{slot}.0.{resnet(rest)}" if kind == "resnets" else f"input_blocks.{slot}.1.{rest}"
        if match := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
            level = int(match[1])
            return f"input_blocks.{down_start[level] + down_resnets[level]}.0.op.{match[2]}"
        if match := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
            kind, j, rest = match[1], int(match[2]), match[3]
            if kind == "attentions":
                return f"middle_block.{1 + j}.{rest}"
            # Resnets and attentions alternate: resnet, attention, resnet.
            return f"middle_block.{2 * j if mid_has_attention else j}.{resnet(rest)}"
        if match := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            level, kind, j, rest = int(match[1]), match[2], int(match[3]), match[4]
            slot = up_start[level] + j
            return f"output_blocks.{slot}.0.{resnet(rest)}" if kind == "resnets" else f"output_blocks.{slot}.1.{rest}"
        if match := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
            level = int(match[1])
            slot = up_start[level] + up_count[level] - 1
            return f"output_blocks.{slot}.{2 if up_has_attention[level] else 1}.conv.{match[2]}"
        raise KeyError(key)

    return name


def unet_namer(unet: Any) -> Callable[[str], str]:
    """The diffusers -> original UNet parameter-name function (without ``model.diffusion_model.``), for the other
    readers of original names: kohya LoRAs for SDXL spell their UNet modules this way. Raises ``KeyError`` for a
    name it does not know."""
    return _unet_namer(unet)


def _unet_items(unet: Any) -> Iterator[tuple[str, Any]]:
    namer = _unet_namer(unet)
    for key, tensor in unet.state_dict().items():
        try:
            name = namer(key)
        except KeyError:
            raise _unmapped("unet", key) from None
        yield UNET_PREFIX + name, tensor


# ---------------------------------------------------------------------------------------------------- VAE
def _vae_items(vae: Any) -> Iterator[tuple[str, Any]]:
    levels = len(vae.decoder.up_blocks)
    for key, tensor in vae.state_dict().items():
        module, param = _split(key)
        value = tensor
        if module in ("quant_conv", "post_quant_conv"):
            new = module
        elif match := re.fullmatch(r"(encoder|decoder)\.(.+)", module):
            part, rest = match[1], match[2]
            new = _vae_part_name(rest, levels)
            if new is None:
                raise _unmapped("vae", key)
            new = f"{part}.{new}"
            if ".attn_1." in new and tensor.dim() == 2:
                value = tensor.reshape(*tensor.shape, 1, 1)  # linear -> 1x1 conv, as the original stores them
        else:
            raise _unmapped("vae", key)
        yield f"{VAE_PREFIX}{new}.{param}", value


def _vae_part_name(module: str, levels: int) -> str | None:
    """The original name of an encoder/decoder submodule (without the encoder./decoder. part)."""
    if module in _VAE_TOP:
        return _VAE_TOP[module]
    if match := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)", module):
        return f"down.{match[1]}.block.{match[2]}.{_vae_resnet(match[3])}"
    if match := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", module):
        return f"down.{match[1]}.downsample.conv"
    # The decoder's up levels are numbered from the lowest resolution in diffusers, from the highest originally.
    if match := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)", module):
        return f"up.{levels - 1 - int(match[1])}.block.{match[2]}.{_vae_resnet(match[3])}"
    if match := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", module):
        return f"up.{levels - 1 - int(match[1])}.upsample.conv"
    if match := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(\w+)", module):
        return f"mid.block_{int(match[1]) + 1}.{_vae_resnet(match[2])}"
    if match := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", module):
        if match[1] in _VAE_ATTENTION:
            return f"mid.attn_1.{_VAE_ATTENTION[match[1]]}"
    return None


def _vae_resnet(module: str) -> str:
    return "nin_shortcut" if module == "conv_shortcut" else module


# ---------------------------------------------------------------------------------------------- text encoders
def _text_state(encoder: Any) -> dict[str, Any]:
    """The encoder's parameters without transformers' optional ``text_model.`` wrapper prefix."""
    return {key.removeprefix("text_model."): tensor for key, tensor in encoder.state_dict().items()}


def _position_ids(encoder: Any) -> Any:
    import torch

    return torch.arange(encoder.config.max_position_embeddings, dtype=torch.int64).unsqueeze(0)


def _clip_items(encoder: Any, prefix: str, include_extras: bool) -> Iterator[tuple[str, Any]]:
    """OpenAI CLIP-L layout: the transformers names, under ``prefix`` (which ends in ``text_model.``)."""
    state = _text_state(encoder)
    for key, tensor in state.items():
        if key.startswith("text_projection"):
            raise _unmapped("text_encoder", key)  # the original CLIP-L slot has no projection
        yield prefix + key, tensor
    if include_extras:
        yield prefix + "embeddings.position_ids", _position_ids(encoder)


def _openclip_items(encoder: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """OpenCLIP layout: ``transformer.resblocks.N`` with q, k, v fused in that order, projection transposed."""
    import torch

    state = _text_state(encoder)
    fused: set[tuple[str, str]] = set()
    for key, tensor in state.items():
        module, param = _split(key)
        if key == "embeddings.token_embedding.weight":
            yield prefix + "token_embedding.weight", tensor
        elif key == "embeddings.position_embedding.weight":
            yield prefix + "positional_embedding", tensor
        elif module == "final_layer_norm":
            yield f"{prefix}ln_final.{param}", tensor
        elif key == "text_projection.weight":
            # transformers applies it as a Linear (x @ W.T); OpenCLIP stores the matrix it multiplies by (W.T).
            yield prefix + "text_projection", tensor.t()
        elif match := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.[qkv]_proj", module):
            block = f"encoder.layers.{match[1]}.self_attn"
            if (block, param) not in fused:
                fused.add((block, param))
                parts = [state[f"{block}.{p}_proj.{param}"] for p in "qkv"]
                yield f"{prefix}transformer.resblocks.{match[1]}.attn.in_proj_{param}", torch.cat(parts, dim=0)
        elif match := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", module):
            if match[2] not in _OPENCLIP_LAYER:
                raise _unmapped("text_encoder", key)
            yield f"{prefix}transformer.resblocks.{match[1]}.{_OPENCLIP_LAYER[match[2]]}.{param}", tensor
        else:
            raise _unmapped("text_encoder", key)


def uses_openclip_layout(pipe: Any) -> bool:
    """Whether an SD 1.x/2.x pipeline's text encoder belongs in the OpenCLIP slot (SD 2.x) or CLIP-L's (SD 1.x).

    Any one SD 2.x trait decides: an OpenCLIP encoder (exact GELU, where OpenAI's CLIP uses quick-GELU), a UNet
    with linear transformer projections (SD 2.x's ``use_linear_in_transformer``), or 1024-wide cross-attention.
    The real models have all three; tiny test pipelines keep at least the UNet's projection style.
    """
    if str(getattr(pipe.text_encoder.config, "hidden_act", "quick_gelu")) == "gelu":
        return True
    unet_config = pipe.unet.config
    return bool(getattr(unet_config, "use_linear_projection", False)) or (
        getattr(unet_config, "cross_attention_dim", None) == 1024)


# ------------------------------------------------------------------------------------------------- schedule
def ddpm_buffers(scheduler_config: Any, steps: int = 1000) -> dict[str, Any]:
    """The DDPM schedule buffers LDM checkpoints store, from the scheduler's beta range (float64 math, float32 out).

    LDM's "linear" schedule is diffusers' ``scaled_linear``: betas evenly spaced in square root, then squared.
    """
    import torch

    start = float(scheduler_config.get("beta_start", 0.00085))
    end = float(scheduler_config.get("beta_end", 0.012))
    schedule = scheduler_config.get("beta_schedule", "scaled_linear")
    if schedule == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float64) ** 2
    elif schedule == "linear":
        betas = torch.linspace(start, end, steps, dtype=torch.float64)
    else:
        raise LayoutError(f"scheduler config: beta_schedule {schedule!r} has no LDM buffers; "
                          "use scaled_linear or linear")
    alphas = 1.0 - betas
    cumprod = torch.cumprod(alphas, dim=0)
    cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), cumprod[:-1]])
    posterior_variance = betas * (1.0 - cumprod_prev) / (1.0 - cumprod)
    values = {
        "betas": betas,
        "alphas_cumprod": cumprod,
        "alphas_cumprod_prev": cumprod_prev,
        "sqrt_alphas_cumprod": cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / cumprod - 1.0).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * cumprod_prev.sqrt() / (1.0 - cumprod),
        "posterior_mean_coef2": (1.0 - cumprod_prev) * alphas.sqrt() / (1.0 - cumprod),
    }
    return {name: values[name].to(torch.float32) for name in DDPM_BUFFERS}


# ------------------------------------------------------------------------------------------------- pipeline
def _is_sdxl(pipe: Any) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


def pipeline_to_ldm_state_dict(pipe: Any, include_extras: bool = False) -> dict[str, Any]:
    """The pipeline's UNet, VAE and text encoder(s) under their original single-file names.

    ``pipe`` is an SD 1.x/2.x or SDXL base pipeline (txt2img or inpainting). With ``include_extras`` the result
    also holds what downloaded files carry besides weights: the CLIP-L ``position_ids`` (int64) and, for SD 1.x /
    2.x, the DDPM schedule buffers. Tensors keep the pipeline's dtype and device (meta included).
    """
    for part in ("unet", "vae", "text_encoder"):
        if getattr(pipe, part, None) is None:
            raise LayoutError(f"pipeline {type(pipe).__name__}: has no {part}; a single file needs unet, vae and "
                              "text_encoder")
    items: list[tuple[str, Any]] = []
    items.extend(_unet_items(pipe.unet))
    items.extend(_vae_items(pipe.vae))
    if _is_sdxl(pipe):
        items.extend(_clip_items(pipe.text_encoder, SDXL_CLIP_PREFIX, include_extras))
        items.extend(_openclip_items(pipe.text_encoder_2, SDXL_OPENCLIP_PREFIX))
    elif uses_openclip_layout(pipe):
        items.extend(_openclip_items(pipe.text_encoder, SD2_OPENCLIP_PREFIX))
    else:
        items.extend(_clip_items(pipe.text_encoder, SD1_CLIP_PREFIX, include_extras))
    if include_extras and not _is_sdxl(pipe):
        items.extend(ddpm_buffers(pipe.scheduler.config).items())

    state: dict[str, Any] = {}
    for name, tensor in items:
        if name in state:
            raise LayoutError(f"two parameters map to the same original name {name!r}; this is a bug in ldm_layout")
        state[name] = tensor
    return state


def write_single_file(pipe: Any, path: Path | str, dtype: Any = None, include_extras: bool = False) -> Path:
    """Write the pipeline as one original-layout ``.safetensors`` file at exactly ``path`` (any suffix).

    ``dtype`` (e.g. ``torch.float16``) converts the floating-point weights, as published files usually are;
    integer buffers such as ``position_ids`` stay int64.
    """
    from safetensors.torch import save_file

    path = Path(path)
    state = pipeline_to_ldm_state_dict(pipe, include_extras=include_extras)
    tensors = {}
    for name, tensor in state.items():
        if tensor.device.type == "meta":
            raise LayoutError(f"{name}: is on the meta device and has no values to write; materialise the "
                              "pipeline first (or stream it as synthetic.build_realsize_sd15_file does)")
        value = tensor.detach()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[name] = value.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path
