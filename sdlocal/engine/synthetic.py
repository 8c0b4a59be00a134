"""Random-weight models for tests and benchmarks: tiny ones that run in a fraction of a second, and a real-size
SD 1.5 single file for measuring load and step times without downloading 2 GB.

Tiny models use the bundled tokenizers and scheduler configs, so the text path (tokenize, encode, pad) is the
real one; only the widths and depths shrink. A tiny single file cannot load with the full-size bundled config,
so ``save_tiny_model`` writes its config folder next to it as ``<stem>.config/`` (the sidecar that
``loader.config_dir_for`` and discovery honour, also meant for custom architectures).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Literal

from sdlocal.engine.loader import BUNDLED_CONFIGS, sidecar_config_dir

TinyFormat = Literal["diffusers", "safetensors", "ckpt"]
FAMILIES = ("sd1", "sd2", "sdxl")


def _bundled(family: str) -> Path:
    folder = BUNDLED_CONFIGS / family
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"the bundled config folder for {family} is missing: {folder}")
    return folder


def _text_config(tokenizer: Any, projection: bool, width: int = 32) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length, projection_dim=32,
        hidden_act="gelu" if projection else "quick_gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _tiny_vae(base_config: dict[str, Any]) -> Any:
    from diffusers import AutoencoderKL

    # Four blocks keep the real 8x latent downscale, so sizes and latent shapes behave as in real models.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 32, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
        sample_size=64, scaling_factor=base_config.get("scaling_factor", 0.18215),
        force_upcast=base_config.get("force_upcast", True),
    )


def build_tiny_pipeline(family: str = "sd1", seed: int = 0, inpainting: bool = False,
                        top_attention: bool = False) -> Any:
    """An in-memory random-weight pipeline of ``family`` ("sd1", "sd2" or "sdxl"); the same seed, the same weights.

    ``top_attention`` (SD 1.x/2.x) puts the UNet's attention at the full latent resolution, where real SD 1.x
    and 2.x models have it and where token merging works (it merges there only, by default); the usual tiny
    UNet attends only at half resolution, like SDXL.
    """
    from sdlocal.engine.loader import quiet_libraries

    quiet_libraries()  # first: importing the pipelines is what logs the torchvision fallback notes
    import torch
    from diffusers import (
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLInpaintPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    config = _bundled(family)
    scheduler_config = json.loads((config / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    vae_config = json.loads((config / "vae" / "config.json").read_text(encoding="utf-8"))
    in_channels = 9 if inpainting else 4
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = CLIPTokenizer.from_pretrained(str(config / "tokenizer"))
        text_encoder = CLIPTextModel(_text_config(tokenizer, projection=False)).eval()
        vae = _tiny_vae(vae_config).eval()
        import diffusers

        scheduler_cls = getattr(diffusers, scheduler_config["_class_name"])
        scheduler = scheduler_cls.from_config(scheduler_config)
        if family == "sdxl":
            tokenizer_2 = CLIPTokenizer.from_pretrained(str(config / "tokenizer_2"))
            # A wider second encoder: diffusers tells SDXL's two encoders apart in a single file by their widths.
            text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer_2, projection=True, width=48)).eval()
            unet = UNet2DConditionModel(
                block_out_channels=(32, 64), layers_per_block=1, sample_size=64, in_channels=in_channels,
                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=6 * 8 + 32,
                cross_attention_dim=32 + 48, norm_num_groups=32,
            ).eval()
            cls = StableDiffusionXLInpaintPipeline if inpainting else StableDiffusionXLPipeline
            return cls(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                       tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=1, sample_size=64, in_channels=in_channels, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D") if top_attention
            else ("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D") if top_attention
            else ("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
            attention_head_dim=8 if family == "sd1" else (2, 4),
            use_linear_projection=family == "sd2", norm_num_groups=32,
        ).eval()
        cls = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
        return cls(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def write_config_folder(pipe: Any, folder: Path) -> Path:
    """The pipeline's configs and tokenizers without weights: what ``from_single_file(config=...)`` needs."""
    folder = Path(folder)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".config-") as tmp:
        staging = Path(tmp) / "config"
        pipe.save_pretrained(str(staging), safe_serialization=True)
        for weights in list(staging.rglob("*.safetensors")) + list(staging.rglob("*.bin")):
            weights.unlink()
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return folder


def save_tiny_model(dest: Path, family: str = "sd1", fmt: TinyFormat = "diffusers", seed: int = 0,
                    inpainting: bool = False) -> Path:
    """Write a tiny random model that discovery finds and the engine loads offline; returns its path.

    ``dest`` is the folder for "diffusers", the file for "safetensors"/"ckpt" (a ``<stem>.config/`` sidecar
    folder is written beside it). Writes go to a temporary name first, so a model is never half there.
    """
    import torch

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    pipe = build_tiny_pipeline(family, seed=seed, inpainting=inpainting)
    if fmt == "diffusers":
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".tiny-") as tmp:
            staging = Path(tmp) / "model"
            pipe.save_pretrained(str(staging), safe_serialization=True)
            shutil.rmtree(dest, ignore_errors=True)
            staging.rename(dest)
        return dest
    if fmt not in ("safetensors", "ckpt"):
        raise ValueError(f"fmt must be diffusers, safetensors or ckpt, not {fmt!r}")
    from sdlocal.engine import ldm_layout

    write_config_folder(pipe, sidecar_config_dir(dest))
    partial = dest.with_name(dest.name + ".partial")
    if fmt == "safetensors":
        ldm_layout.write_single_file(pipe, partial)
    else:
        state = ldm_layout.pipeline_to_ldm_state_dict(pipe)
        torch.save({"state_dict": {k: v.contiguous() for k, v in state.items()}, "global_step": 0}, str(partial))
    os.replace(partial, dest)
    return dest


# --------------------------------------------------------------------------------------- real-size SD 1.5
_ST_DTYPES = {"float16": ("F16", 2), "float32": ("F32", 4), "int64": ("I64", 8), "bfloat16": ("BF16", 2)}


def _fill_value(name: str, shape: tuple[int, ...], generator: Any) -> Any:
    """Plausible random values: scaled normal weights (activations stay finite), unit norms, zero biases."""
    import torch

    if name.endswith("position_ids"):
        return torch.arange(shape[-1], dtype=torch.int64).reshape(shape)
    if len(shape) <= 1:
        if name.endswith(".bias") or "bias" in name.rsplit(".", 1)[-1]:
            return torch.zeros(shape, dtype=torch.float16)
        if "norm" in name or ".ln" in name or "ln_" in name:
            return torch.ones(shape, dtype=torch.float16)
        return (torch.rand(shape, generator=generator) * 0.5 + 0.5).to(torch.float16)
    fan_in = math.prod(shape[1:])
    return (torch.randn(shape, generator=generator) / math.sqrt(fan_in)).to(torch.float16)


_FAMILY_NAMES = {"sd1": "SD 1.5", "sd2": "SD 2.x", "sdxl": "SDXL"}


def build_realsize_sd15_file(path: Path, seed: int = 0) -> Path:
    """A 2.1 GB SD 1.5 checkpoint in the original (A1111) layout with random fp16 weights at the real shapes."""
    return build_realsize_file(path, "sd1", seed=seed)


def build_realsize_file(path: Path, family: str = "sd1", seed: int = 0) -> Path:
    """A checkpoint of ``family`` at its real shapes (SD 1.5: 2.1 GB, SDXL: 6.9 GB), random fp16 weights.

    The models are built on the meta device from the bundled config (no memory), converted to the original key
    names by ``ldm_layout``, and each tensor is materialised and streamed to the file one at a time, so peak
    memory stays near the largest tensor instead of the whole model.
    """
    from types import SimpleNamespace

    import torch

    from sdlocal.engine import ldm_layout
    from sdlocal.engine.streaming import build_meta_models, load_other_components

    config = _bundled(family)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # ldm_layout reads only the models and the scheduler's config: a namespace stands in for the pipeline.
    pipe = SimpleNamespace(**build_meta_models(config), scheduler=load_other_components(config)["scheduler"])
    if family != "sdxl":
        pipe.text_encoder_2 = None
    layout = ldm_layout.pipeline_to_ldm_state_dict(pipe, include_extras=True)

    header: dict[str, Any] = {}
    offset = 0
    plan: list[tuple[str, tuple[int, ...], Any]] = []
    for name in sorted(layout):
        tensor = layout[name]
        shape = tuple(int(d) for d in tensor.shape)
        # Real values (A1111's schedule buffers, position ids) are written as they are; meta tensors get random ones.
        real = None if tensor.device.type == "meta" else tensor.detach().cpu().contiguous()
        kind = str(real.dtype).replace("torch.", "") if real is not None else (
            "int64" if name.endswith("position_ids") else "float16")
        code, size = _ST_DTYPES[kind]
        nbytes = math.prod(shape) * size
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        plan.append((name, shape, real))
        offset += nbytes
    header["__metadata__"] = {"format": "pt",
                              "sdlocal": f"random weights at {_FAMILY_NAMES[family]} shapes (bench/test only)"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    generator = torch.Generator().manual_seed(seed)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for name, shape, real in plan:
            value = real if real is not None else _fill_value(name, shape, generator)
            if value.numel():
                fh.write(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    os.replace(partial, path)
    return path
