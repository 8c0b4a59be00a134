"""Tiny LoRA/LyCORIS files with the key names and shape layout real trainers write (kohya sd-scripts, LyCORIS,
diffusers/PEFT), for the discovery tests: only names and shapes matter there, so the factors are small constant
tensors. Real widths are cheap ([4, 2048] in fp16 is 16 KB), so family detection is tested on real shapes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

Tensors = dict[str, torch.Tensor]

# Module base keys as the trainers spell them.
UNET_K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"  # kohya, diffusers-style
UNET_V = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v"
UNET_Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"  # self-attention: says no family
UNET_FF = "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_2"
UNET_CONV = "lora_unet_down_blocks_0_resnets_0_conv1"
SGM_K = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"  # kohya for SDXL (LDM/SGM names)
TE_Q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
TE1_Q = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
TE2_Q = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"
PEFT_UNET_K = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
PEFT_TE_Q = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
PEFT_TE2_Q = "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj"


def _t(*shape: int, value: float = 0.01) -> torch.Tensor:
    return torch.full(shape, value, dtype=torch.float16)


def lora(base: str, rank: int = 4, width: int = 32, out: int = 32, alpha: float | None = None) -> Tensors:
    """kohya LoRA: ``lora_down`` [rank, in], ``lora_up`` [out, rank], ``alpha`` a scalar."""
    return {f"{base}.lora_down.weight": _t(rank, width), f"{base}.lora_up.weight": _t(out, rank),
            f"{base}.alpha": torch.tensor(float(alpha if alpha is not None else rank))}


def conv(base: str, rank: int = 4, width: int = 32, out: int = 32, kernel: int = 3, mid: bool = False) -> Tensors:
    """LoCon: a convolution's ``lora_down`` [rank, in, k, k] (or tucker: 1x1 down/up around ``lora_mid``)."""
    if mid:
        return {f"{base}.lora_down.weight": _t(rank, width, 1, 1), f"{base}.lora_mid.weight": _t(rank, rank, kernel,
                                                                                                  kernel),
                f"{base}.lora_up.weight": _t(out, rank, 1, 1), f"{base}.alpha": torch.tensor(float(rank))}
    return {f"{base}.lora_down.weight": _t(rank, width, kernel, kernel), f"{base}.lora_up.weight": _t(out, rank, 1, 1),
            f"{base}.alpha": torch.tensor(float(rank))}


def loha(base: str, rank: int = 4, width: int = 32, out: int = 32) -> Tensors:
    """LoHa: (w1_a @ w1_b) * (w2_a @ w2_b), ``hada_w*_a`` [out, rank], ``hada_w*_b`` [rank, in]."""
    return {f"{base}.hada_w1_a": _t(out, rank), f"{base}.hada_w1_b": _t(rank, width),
            f"{base}.hada_w2_a": _t(out, rank), f"{base}.hada_w2_b": _t(rank, width),
            f"{base}.alpha": torch.tensor(float(rank))}


def lokr(base: str, in_factors: tuple[int, int] = (4, 8), out_factors: tuple[int, int] = (4, 8),
         rank: int | None = None) -> Tensors:
    """LoKr: w1 kron w2, the layer's in = i1 * i2; ``w2`` full, or factored ``lokr_w2_a`` [o2, r] @ ``_b`` [r, i2]."""
    (i1, i2), (o1, o2) = in_factors, out_factors
    tensors = {f"{base}.lokr_w1": _t(o1, i1)}
    if rank is None:
        tensors[f"{base}.lokr_w2"] = _t(o2, i2)
    else:
        tensors |= {f"{base}.lokr_w2_a": _t(o2, rank), f"{base}.lokr_w2_b": _t(rank, i2),
                    f"{base}.alpha": torch.tensor(float(rank))}
    return tensors


def dora(base: str, rank: int = 4, width: int = 32, out: int = 32) -> Tensors:
    """DoRA: a LoRA plus ``dora_scale`` (the per-output-channel magnitude)."""
    return lora(base, rank, width, out) | {f"{base}.dora_scale": _t(out, 1, value=1.0)}


def peft(base: str, rank: int = 4, width: int = 32, out: int = 32, old: bool = False) -> Tensors:
    """diffusers/PEFT: ``lora_A`` [rank, in], ``lora_B`` [out, rank] (older diffusers: ``lora.down``/``lora.up``)."""
    if old:
        return {f"{base}.lora.down.weight": _t(rank, width), f"{base}.lora.up.weight": _t(out, rank)}
    return {f"{base}.lora_A.weight": _t(rank, width), f"{base}.lora_B.weight": _t(out, rank)}


def save(path: Path, *parts: Tensors, metadata: dict[str, str] | None = None) -> Path:
    """Write the modules as a ``.safetensors`` file, or with ``torch.save`` for ``.pt``/``.ckpt``/``.bin``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: Tensors = {}
    for part in parts:
        tensors |= part
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    else:
        torch.save(tensors, path)
    return path


def small(path: Path, metadata: dict[str, str] | None = None, rank: int = 4) -> Path:
    """A usable kohya LoRA for the tiny models (32 wide: no real family), text encoder and UNet."""
    return save(path, lora(UNET_K, rank), lora(TE_Q, rank), metadata=metadata)
