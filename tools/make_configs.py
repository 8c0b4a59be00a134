"""Write the bundled diffusers config folders (sdlocal/engine/configs/{sd1,sd2,sdxl}) from the published numbers.

Loading a single ``.safetensors`` offline needs a local diffusers-format folder with every component's config
(``from_single_file(config=...)``); without one diffusers goes to the Hub. These are the architectures of
SD 1.5, SD 2.1 (768, v-prediction) and SDXL 1.0 base. Only JSON is written here; tokenizers come from
``tools/make_tokenizers.py``. Run both after changing a number, then the engine tests.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "sdlocal" / "engine" / "configs"
DIFFUSERS_VERSION = "0.42.1"
SPATIAL = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
SPATIAL_UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
         "trained_betas": None, "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False,
         "timestep_spacing": "leading"}


def unet(**overrides: object) -> dict:
    config = {
        "_class_name": "UNet2DConditionModel", "_diffusers_version": DIFFUSERS_VERSION,
        "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False, "cross_attention_dim": 768, "down_block_types": SPATIAL,
        "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
        "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4,
        "sample_size": 64, "up_block_types": SPATIAL_UP, "use_linear_projection": False, "upcast_attention": False,
    }
    config.update(overrides)
    return config


def vae(sample_size: int, scaling_factor: float) -> dict:
    return {
        "_class_name": "AutoencoderKL", "_diffusers_version": DIFFUSERS_VERSION, "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4, "in_channels": 3, "out_channels": 3, "latent_channels": 4,
        "layers_per_block": 2, "norm_num_groups": 32, "sample_size": sample_size, "scaling_factor": scaling_factor,
        "force_upcast": True,
    }


def text_encoder(hidden: int, layers: int, heads: int, act: str, projection: int, with_projection: bool) -> dict:
    return {
        "architectures": ["CLIPTextModelWithProjection" if with_projection else "CLIPTextModel"],
        "model_type": "clip_text_model", "vocab_size": 49408, "hidden_size": hidden, "intermediate_size": hidden * 4,
        "num_hidden_layers": layers, "num_attention_heads": heads, "hidden_act": act, "projection_dim": projection,
        "max_position_embeddings": 77, "layer_norm_eps": 1e-05, "attention_dropout": 0.0, "dropout": 0.0,
        "initializer_factor": 1.0, "initializer_range": 0.02, "bos_token_id": 0, "eos_token_id": 2,
        "pad_token_id": 1, "dtype": "float32",
    }


CLIP_L = text_encoder(768, 12, 12, "quick_gelu", 768, with_projection=False)


def sd_index(scheduler: str) -> dict:
    return {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": DIFFUSERS_VERSION,
        "feature_extractor": [None, None], "safety_checker": [None, None], "requires_safety_checker": False,
        "image_encoder": [None, None],
        "scheduler": ["diffusers", scheduler], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


FOLDERS: dict[str, dict[str, dict]] = {
    "sd1": {  # Stable Diffusion 1.5
        "model_index.json": sd_index("PNDMScheduler"),
        "scheduler/scheduler_config.json": {"_class_name": "PNDMScheduler", "_diffusers_version": DIFFUSERS_VERSION,
                                            **BETAS, "skip_prk_steps": True, "prediction_type": "epsilon"},
        "unet/config.json": unet(),
        "vae/config.json": vae(512, 0.18215),
        "text_encoder/config.json": CLIP_L,
    },
    "sd2": {  # Stable Diffusion 2.1 (768x768, v-prediction; the 512 base is the same shape with epsilon)
        "model_index.json": sd_index("DDIMScheduler"),
        "scheduler/scheduler_config.json": {"_class_name": "DDIMScheduler", "_diffusers_version": DIFFUSERS_VERSION,
                                            **BETAS, "prediction_type": "v_prediction"},
        "unet/config.json": unet(attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024,
                                 use_linear_projection=True, sample_size=96, upcast_attention=True),
        "vae/config.json": vae(768, 0.18215),
        "text_encoder/config.json": text_encoder(1024, 23, 16, "gelu", 512, with_projection=False),
    },
    "sdxl": {  # Stable Diffusion XL 1.0 base
        "model_index.json": {
            "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": DIFFUSERS_VERSION,
            "force_zeros_for_empty_prompt": True, "feature_extractor": [None, None], "image_encoder": [None, None],
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers",
                                                                              "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        },
        "scheduler/scheduler_config.json": {
            "_class_name": "EulerDiscreteScheduler", "_diffusers_version": DIFFUSERS_VERSION, **BETAS,
            "interpolation_type": "linear", "prediction_type": "epsilon", "sample_max_value": 1.0,
            "skip_prk_steps": True, "use_karras_sigmas": False,
        },
        "unet/config.json": unet(
            attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280], cross_attention_dim=2048,
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            transformer_layers_per_block=[1, 2, 10], addition_embed_type="text_time",
            addition_embed_type_num_heads=64, addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
            use_linear_projection=True, sample_size=128,
        ),
        "vae/config.json": vae(1024, 0.13025),
        "text_encoder/config.json": CLIP_L,
        "text_encoder_2/config.json": text_encoder(1280, 32, 20, "gelu", 1280, with_projection=True),
    },
}


def main() -> int:
    for family, files in FOLDERS.items():
        for relative, content in files.items():
            path = CONFIGS / family / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {CONFIGS / family}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
