"""Tiny VAE files for the tests: a loaded tiny model's own VAE weights, changed so that the decode differs, written
as people download VAEs (original LDM names without a prefix, or a diffusers folder), plus files that are not VAEs
for these models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def changed_state(vae: Any, scale: float = 0.5, layout: str = "ldm") -> dict[str, Any]:
    """The VAE's tensors with the decoder's last convolution scaled (a visibly different decode)."""
    from sdlocal.engine import ldm_layout

    if layout == "ldm":
        state = {k.removeprefix(ldm_layout.VAE_PREFIX): v for k, v in ldm_layout._vae_items(vae)}
    else:
        state = dict(vae.state_dict())
    state = {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}
    state["decoder.conv_out.weight"] = state["decoder.conv_out.weight"] * scale
    return state


def write_vae(vae: Any, path: Path, scale: float = 0.5, prefix: str = "", metadata: dict[str, str] | None = None,
              layout: str = "ldm") -> Path:
    """A ``.safetensors`` VAE (or ``.pt`` by the suffix) of ``vae``'s weights, changed by ``scale``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {prefix + k: v for k, v in changed_state(vae, scale, layout).items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path), metadata=metadata)
    else:
        import torch

        torch.save({"state_dict": state}, path)
    return path


def write_diffusers_vae(vae: Any, folder: Path, scale: float = 0.5, force_upcast: bool | None = None) -> Path:
    """A diffusers AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = {"_class_name": "AutoencoderKL", **dict(vae.config)}
    if force_upcast is not None:
        config["force_upcast"] = force_upcast
    (folder / "config.json").write_text(json.dumps(config, default=list), encoding="utf-8")
    save_file(changed_state(vae, scale, "diffusers"), str(folder / "diffusion_pytorch_model.safetensors"))
    return folder


def write_tensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    """A safetensors file of zeros with these names and shapes (a 16-channel VAE, a checkpoint, a LoRA)."""
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: torch.zeros(shape) for name, shape in shapes.items()}, str(path))
    return path


SIXTEEN_CHANNELS = {"decoder.conv_in.weight": (32, 16, 3, 3), "encoder.conv_in.weight": (32, 3, 3, 3),
                    "decoder.up.0.block.0.conv1.weight": (32, 32, 3, 3)}
CHECKPOINT = {"model.diffusion_model.input_blocks.0.0.weight": (32, 4, 3, 3),
              "first_stage_model.decoder.conv_in.weight": (32, 4, 3, 3)}
LORA = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 32),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (32, 4)}
