"""Pipelines written in the original single-file layout load back through diffusers bit for bit, at real shapes too.

The round trips go through diffusers' own reader (``from_single_file`` with a local config folder), so a name or
reshape that disagrees with what real downloaded files look like fails here, not in a user's model folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from sdlocal.engine import ldm_layout
from sdlocal.engine.loader import BUNDLED_CONFIGS

UNET = "model.diffusion_model."
CASES = {  # id: (family, inpainting)
    "sd1": ("sd1", False),
    "sd2": ("sd2", False),
    "sdxl": ("sdxl", False),
    "sd1-inpainting": ("sd1", True),
}


def _components(pipe: Any) -> list[str]:
    return [name for name in ("unet", "vae", "text_encoder", "text_encoder_2") if getattr(pipe, name, None) is not None]


def _generate(pipe: Any) -> Any:
    import torch
    from PIL import Image

    extra: dict[str, Any] = {}
    if "Inpaint" in type(pipe).__name__:
        extra = {"image": Image.new("RGB", (64, 64), (120, 80, 40)), "mask_image": Image.new("L", (64, 64), 255)}
    generator = torch.Generator().manual_seed(7)
    return pipe("a red cube on a table", num_inference_steps=2, height=64, width=64, guidance_scale=7.0,
                generator=generator, output_type="np", **extra).images


def _same_width_encoders(pipe: Any) -> bool:
    second = getattr(pipe, "text_encoder_2", None)
    return second is not None and second.config.hidden_size == pipe.text_encoder.config.hidden_size


# ------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("case", list(CASES))
def test_single_file_loads_back_identical_and_generates_the_same_image(no_network, tmp_path: Path,
                                                                       case: str) -> None:
    import torch

    from sdlocal.engine.synthetic import build_tiny_pipeline, write_config_folder

    family, inpainting = CASES[case]
    pipe = build_tiny_pipeline(family, seed=3, inpainting=inpainting)
    # diffusers tells SDXL's two encoders apart in a single file by width: the tiny ones must differ.
    assert not _same_width_encoders(pipe)
    partial = ldm_layout.write_single_file(pipe, tmp_path / "model.safetensors.partial", include_extras=True)
    assert partial == tmp_path / "model.safetensors.partial" and partial.is_file()
    path = tmp_path / "model.safetensors"
    os.replace(partial, path)
    config = write_config_folder(pipe, tmp_path / "model.config")

    options: dict[str, Any] = {} if family == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    loaded = type(pipe).from_single_file(str(path), config=str(config), local_files_only=True, **options)
    for component in _components(pipe):
        original = getattr(pipe, component).state_dict()
        back = getattr(loaded, component).state_dict()
        assert back.keys() == original.keys(), component
        for name, tensor in original.items():
            assert back[name].device.type == "cpu", f"{component}.{name} was not loaded"
            assert torch.equal(back[name], tensor), f"{component}.{name} differs"
    assert (_generate(pipe) == _generate(loaded)).all()


def test_sdxl_second_encoder_converts_back_exactly() -> None:
    """The OpenCLIP slot holds text_encoder_2 exactly as diffusers' reader for it unpacks it (q/k/v, projection)."""
    import torch
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint

    from sdlocal.engine.synthetic import build_tiny_pipeline

    pipe = build_tiny_pipeline("sdxl", seed=5)
    state = ldm_layout.pipeline_to_ldm_state_dict(pipe)
    second = pipe.text_encoder_2
    hidden, projection = second.config.hidden_size, second.config.projection_dim
    assert state[ldm_layout.SDXL_OPENCLIP_PREFIX + "text_projection"].shape == (hidden, projection)
    fused = state[ldm_layout.SDXL_OPENCLIP_PREFIX + "transformer.resblocks.0.attn.in_proj_weight"]
    assert fused.shape == (3 * hidden, hidden)

    for model, converted in ((second, convert_open_clip_checkpoint(second, state, ldm_layout.SDXL_OPENCLIP_PREFIX)),
                             (pipe.text_encoder, convert_ldm_clip_checkpoint(state))):
        wrapped = hasattr(model, "text_model")
        converted = {k if wrapped else k.removeprefix("text_model."): v for k, v in converted.items()}
        expected = model.state_dict()
        assert converted.keys() == expected.keys()
        assert all(torch.equal(converted[k], expected[k]) for k in expected)


# ------------------------------------------------------------------------------------------- extras
def test_extras_are_the_ddpm_schedule_and_clip_position_ids() -> None:
    import torch

    from sdlocal.engine.synthetic import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd1")
    plain = ldm_layout.pipeline_to_ldm_state_dict(pipe)
    full = ldm_layout.pipeline_to_ldm_state_dict(pipe, include_extras=True)
    added = set(full) - set(plain)
    position_ids = ldm_layout.SD1_CLIP_PREFIX + "embeddings.position_ids"
    assert added == {*ldm_layout.DDPM_BUFFERS, position_ids}
    assert full[position_ids].dtype == torch.int64 and full[position_ids].tolist() == [list(range(77))]
    assert all(full[name].dtype == torch.float32 and full[name].shape == (1000,) for name in ldm_layout.DDPM_BUFFERS)

    # The same schedule the pipeline's scheduler trains and samples with (it computes it in float32).
    assert torch.allclose(full["alphas_cumprod"], pipe.scheduler.alphas_cumprod, rtol=1e-5, atol=1e-7)
    assert torch.allclose(full["betas"], pipe.scheduler.betas, rtol=1e-5, atol=1e-9)
    assert full["alphas_cumprod_prev"][0] == 1.0 and full["posterior_variance"][0] == 0.0
    assert full["posterior_log_variance_clipped"][0] == pytest.approx(-46.0517, abs=1e-3)  # log(1e-20)
    product = full["sqrt_alphas_cumprod"] ** 2 + full["sqrt_one_minus_alphas_cumprod"] ** 2
    assert torch.allclose(product, torch.ones(1000), atol=1e-6)


def test_sdxl_extras_are_position_ids_only_and_sd2_has_none_for_openclip() -> None:
    from sdlocal.engine.synthetic import build_tiny_pipeline

    xl = build_tiny_pipeline("sdxl")
    added = set(ldm_layout.pipeline_to_ldm_state_dict(xl, include_extras=True)) - set(
        ldm_layout.pipeline_to_ldm_state_dict(xl))
    assert added == {ldm_layout.SDXL_CLIP_PREFIX + "embeddings.position_ids"}  # SGM files carry no DDPM buffers
    sd2 = build_tiny_pipeline("sd2")
    full = ldm_layout.pipeline_to_ldm_state_dict(sd2, include_extras=True)
    assert not any(name.endswith("position_ids") for name in full)  # OpenCLIP has no such buffer
    assert "alphas_cumprod" in full and ldm_layout.SD2_OPENCLIP_PREFIX + "positional_embedding" in full


def test_written_file_has_fp16_weights_int64_ids_and_pt_metadata(tmp_path: Path) -> None:
    import torch
    from safetensors import safe_open

    from sdlocal.engine.synthetic import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd1")
    path = ldm_layout.write_single_file(pipe, tmp_path / "sub" / "x.bin.partial", dtype=torch.float16,
                                        include_extras=True)
    assert path == tmp_path / "sub" / "x.bin.partial"
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata() == {"format": "pt"}
        keys = set(fh.keys())
        assert keys == set(ldm_layout.pipeline_to_ldm_state_dict(pipe, include_extras=True))
        assert fh.get_tensor(ldm_layout.SD1_CLIP_PREFIX + "embeddings.position_ids").dtype == torch.int64
        assert fh.get_tensor(UNET + "input_blocks.0.0.weight").dtype == torch.float16
        assert fh.get_tensor(UNET + "input_blocks.0.0.weight").shape == (32, 4, 3, 3)
        assert fh.get_tensor("first_stage_model.decoder.mid.attn_1.q.weight").shape == (32, 32, 1, 1)


def test_unmapped_parameters_and_meta_writes_are_refused(tmp_path: Path) -> None:
    from diffusers import UNet2DConditionModel

    from sdlocal.engine.synthetic import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd1")
    pipe.unet = UNet2DConditionModel(**{**pipe.unet.config, "class_embed_type": "timestep"})
    with pytest.raises(ldm_layout.LayoutError, match=r"unet: no original-layout name for parameter 'class_embedding"):
        ldm_layout.pipeline_to_ldm_state_dict(pipe)

    meta = _meta_pipeline("sd1")
    with pytest.raises(ldm_layout.LayoutError, match="meta device"):
        ldm_layout.write_single_file(meta, tmp_path / "meta.safetensors")
    assert not (tmp_path / "meta.safetensors").exists()


# ------------------------------------------------------------------------------------------- real shapes
def _meta_pipeline(family: str, in_channels: int = 4) -> Any:
    """The real-size pipeline of ``family`` from the bundled configs, on the meta device (no memory, no values)."""
    import diffusers
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    config = BUNDLED_CONFIGS / family
    if not (config / "model_index.json").is_file():
        pytest.skip(f"the bundled config folder {config} is not there yet")
    unet_config = {**UNet2DConditionModel.load_config(str(config / "unet")), "in_channels": in_channels}
    with init_empty_weights():
        parts: dict[str, Any] = {
            "unet": UNet2DConditionModel.from_config(unet_config),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(str(config / "vae"))),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(str(config / "text_encoder"))),
        }
        if family == "sdxl":
            parts["text_encoder_2"] = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(str(config / "text_encoder_2")))
    scheduler_config = diffusers.DDIMScheduler.load_config(str(config / "scheduler"))
    parts["scheduler"] = getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config)
    parts["tokenizer"] = CLIPTokenizer.from_pretrained(str(config / "tokenizer"))
    if family == "sdxl":
        parts["tokenizer_2"] = CLIPTokenizer.from_pretrained(str(config / "tokenizer_2"))
        cls = diffusers.StableDiffusionXLInpaintPipeline if in_channels == 9 else diffusers.StableDiffusionXLPipeline
        return cls(**parts)
    cls = diffusers.StableDiffusionInpaintPipeline if in_channels == 9 else diffusers.StableDiffusionPipeline
    return cls(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _converted_back(pipe: Any, state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each component's parameters as diffusers' own single-file converters read them out of ``state``."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    def flat(model: Any, converted: dict[str, Any]) -> dict[str, Any]:
        # position_ids is a buffer diffusers' loader drops (transformers no longer saves it).
        return {(k if hasattr(model, "text_model") else k.removeprefix("text_model.")): v
                for k, v in converted.items() if not k.endswith("position_ids")}

    back = {"unet": convert_ldm_unet_checkpoint(state, dict(pipe.unet.config)),
            "vae": convert_ldm_vae_checkpoint(state, dict(pipe.vae.config))}
    if getattr(pipe, "text_encoder_2", None) is not None:
        back["text_encoder"] = flat(pipe.text_encoder, convert_ldm_clip_checkpoint(state))
        back["text_encoder_2"] = flat(pipe.text_encoder_2, convert_open_clip_checkpoint(
            pipe.text_encoder_2, state, ldm_layout.SDXL_OPENCLIP_PREFIX))
    elif ldm_layout.SD2_OPENCLIP_PREFIX + "token_embedding.weight" in state:
        back["text_encoder"] = flat(pipe.text_encoder, convert_open_clip_checkpoint(
            pipe.text_encoder, state, ldm_layout.SD2_OPENCLIP_PREFIX))
    else:
        back["text_encoder"] = flat(pipe.text_encoder, convert_ldm_clip_checkpoint(state))
    return back


REAL_SIZE = {  # id: (family, in_channels, detection key, expected shape, text encoder prefix)
    "sd1": ("sd1", 4, "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight", (320, 768),
            ldm_layout.SD1_CLIP_PREFIX),
    "sd2": ("sd2", 4, "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight", (320, 1024),
            ldm_layout.SD2_OPENCLIP_PREFIX),
    "sdxl": ("sdxl", 4, "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight", (640, 2048),
             ldm_layout.SDXL_OPENCLIP_PREFIX),
    "sd1-inpainting": ("sd1", 9, "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight", (320, 768),
                       ldm_layout.SD1_CLIP_PREFIX),
    "sdxl-inpainting": ("sdxl", 9, "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight", (640, 2048),
                        ldm_layout.SDXL_OPENCLIP_PREFIX),
}


@pytest.mark.parametrize("case", list(REAL_SIZE))
def test_real_size_layout_has_the_detection_shapes_and_maps_every_parameter(case: str) -> None:
    family, in_channels, key, shape, text_prefix = REAL_SIZE[case]
    pipe = _meta_pipeline(family, in_channels)
    state = ldm_layout.pipeline_to_ldm_state_dict(pipe, include_extras=True)
    assert all(tensor.device.type == "meta" for name, tensor in state.items()
               if name not in ldm_layout.DDPM_BUFFERS and not name.endswith("position_ids"))
    assert tuple(state[UNET + key].shape) == shape
    assert tuple(state[UNET + "input_blocks.0.0.weight"].shape) == (320, in_channels, 3, 3)
    assert any(name.startswith(text_prefix) for name in state)
    if family == "sdxl":
        assert state[ldm_layout.SDXL_OPENCLIP_PREFIX + "text_projection"].shape == (1280, 1280)
        assert state[UNET + "label_emb.0.0.weight"].shape == (1280, 2816)
        assert not any(name in state for name in ldm_layout.DDPM_BUFFERS)
    else:
        assert tuple(state[UNET + "output_blocks.11.1.proj_out.weight"].shape[:2]) == (320, 320)
        assert all(name in state for name in ldm_layout.DDPM_BUFFERS)

    # Read back with diffusers' own converters: every parameter comes back, at its shape, from a unique name.
    back = _converted_back(pipe, state)
    consumed = 0
    for component, converted in back.items():
        expected = getattr(pipe, component).state_dict()
        assert set(converted) == set(expected), f"{component}: {sorted(set(converted) ^ set(expected))[:5]}"
        for name, tensor in expected.items():
            assert tuple(converted[name].shape) == tuple(tensor.shape), f"{component}.{name}"
        consumed += len(expected)
    weights = [name for name in state if name not in ldm_layout.DDPM_BUFFERS and not name.endswith("position_ids")]
    fused = [name for name in weights if name.endswith((".in_proj_weight", ".in_proj_bias"))]
    assert len(weights) + 2 * len(fused) == consumed  # each in_proj tensor holds q, k and v
