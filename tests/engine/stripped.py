""""Stripped" checkpoints for detection and discovery tests: the real key names and shapes, no real weights.

``HEADERS`` holds, per kind of file, a few tensors with the names and shapes the real releases have (the ones
detection reads, plus some neighbours). ``write_safetensors`` writes such a header to disk with the data
region left as a sparse hole, so a "real-size" SDXL key costs no disk space and no time; ``header_only=True``
leaves the data out altogether (a truncated file).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

U = "model.diffusion_model."
TO_K_2 = U + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
TO_K_4 = U + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
CONV_IN = U + "input_blocks.0.0.weight"

SD1 = {
    CONV_IN: [320, 4, 3, 3],
    TO_K_2: [320, 768],
    TO_K_4: [640, 768],
    U + "out.2.weight": [4, 320, 3, 3],
    "first_stage_model.decoder.conv_in.weight": [512, 4, 3, 3],
    "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": [77, 768],
}
SD2 = {
    CONV_IN: [320, 4, 3, 3],
    TO_K_2: [320, 1024],
    TO_K_4: [640, 1024],
    "first_stage_model.decoder.conv_in.weight": [512, 4, 3, 3],
    "cond_stage_model.model.positional_embedding": [77, 1024],
}
SDXL = {
    CONV_IN: [320, 4, 3, 3],
    TO_K_4: [640, 2048],
    U + "input_blocks.7.1.transformer_blocks.0.attn2.to_k.weight": [1280, 2048],
    U + "label_emb.0.0.weight": [1280, 2816],
    "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": [77, 768],
    "conditioner.embedders.1.model.positional_embedding": [77, 1280],
    "first_stage_model.decoder.conv_in.weight": [512, 4, 3, 3],
}
REFINER = {
    CONV_IN: [384, 4, 3, 3],
    TO_K_4: [768, 1280],
    U + "label_emb.0.0.weight": [1536, 2560],
    "conditioner.embedders.0.model.positional_embedding": [77, 1280],
}
SD1_INPAINTING = {**SD1, CONV_IN: [320, 9, 3, 3]}
SDXL_INPAINTING = {**SDXL, CONV_IN: [320, 9, 3, 3]}
PIX2PIX = {**SD1, CONV_IN: [320, 8, 3, 3]}
SD3 = {
    U + "joint_blocks.0.context_block.attn.qkv.weight": [4608, 1536],
    U + "x_embedder.proj.weight": [1536, 16, 2, 2],
    "text_encoders.clip_l.transformer.text_model.embeddings.position_embedding.weight": [77, 768],
}
FLUX = {
    "double_blocks.0.img_attn.qkv.weight": [9216, 3072],
    "single_blocks.0.linear1.weight": [21504, 3072],
    "img_in.weight": [3072, 64],
}
FLUX_PREFIXED = {U + k: v for k, v in FLUX.items()}
LORA_KOHYA = {
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": [4, 320, 1, 1],
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": [320, 4, 1, 1],
    "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": [4, 768],
}
LORA_PEFT = {
    "unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": [4, 320],
    "unet.down_blocks.0.attentions.0.proj_in.lora_B.weight": [320, 4],
}
VAE = {
    "encoder.conv_in.weight": [128, 3, 3, 3],
    "decoder.conv_out.weight": [3, 128, 3, 3],
    "quant_conv.weight": [8, 8, 1, 1],
    "post_quant_conv.weight": [4, 4, 1, 1],
}
EMBEDDING_SD1 = {"emb_params": [4, 768]}
EMBEDDING_SDXL = {"clip_l": [2, 768], "clip_g": [2, 1280]}
CONTROLNET = {
    "control_model.input_hint_block.0.weight": [16, 3, 3, 3],
    "control_model.input_blocks.0.0.weight": [320, 4, 3, 3],
}
DIFFUSERS_UNET = {
    "conv_in.weight": [320, 4, 3, 3],
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": [320, 768],
}
UNKNOWN_UNET = {CONV_IN: [32, 4, 3, 3], U + "input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight": [64, 32]}

HEADERS: dict[str, dict[str, list[int]]] = {
    "sd1": SD1, "sd2": SD2, "sdxl": SDXL, "refiner": REFINER, "sd1-inpainting": SD1_INPAINTING,
    "sdxl-inpainting": SDXL_INPAINTING, "pix2pix": PIX2PIX, "sd3": SD3, "flux": FLUX,
    "flux-prefixed": FLUX_PREFIXED, "lora-kohya": LORA_KOHYA, "lora-peft": LORA_PEFT, "vae": VAE,
    "embedding-sd1": EMBEDDING_SD1, "embedding-sdxl": EMBEDDING_SDXL, "controlnet": CONTROLNET,
    "diffusers-unet": DIFFUSERS_UNET, "unknown-unet": UNKNOWN_UNET,
}


def header_of(shapes: dict[str, list[int]], dtype: str = "F16", item_size: int = 2) -> tuple[dict, int]:
    """A safetensors header for these shapes (tensors laid out one after another) and its data length."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        count = 1
        for dim in shape:
            count *= dim
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + count * item_size]}
        offset += count * item_size
    return header, offset


def write_safetensors(path: Path, shapes: dict[str, list[int]], header_only: bool = False,
                      fill: bytes | None = None) -> Path:
    """A safetensors file with these shapes; zero data as a sparse hole, ``fill`` bytes repeated, or none."""
    header, length = header_of(shapes)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        if header_only:
            return path
        if fill:
            fh.write((fill * (length // len(fill) + 1))[:length])
        else:
            fh.truncate(8 + len(blob) + length)
    return path


def write_diffusers_folder(folder: Path, pipeline: str = "StableDiffusionPipeline", cross_attention_dim: int = 768,
                           in_channels: int = 4, weights: bytes | None = b"unet weights") -> Path:
    """A diffusers-layout folder with only the configs discovery reads (and a stand-in UNet weights file)."""
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline, "unet": ["diffusers",
                                                          "UNet2DConditionModel"]}), encoding="utf-8")
    (folder / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": cross_attention_dim,
                                                             "in_channels": in_channels}), encoding="utf-8")
    if weights is not None:
        (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(weights)
    return folder
