"""LoRA base keys, in every spelling trainers write, name the right module of the right pipeline component."""

from __future__ import annotations

from typing import Any

import pytest

from sdlocal.engine.networks.lora_keys import module_targets, patchable_modules, unet_ldm_names


@pytest.fixture(scope="module")
def real_sd15() -> dict[str, Any]:
    from sdlocal.engine.streaming import build_meta_models

    return build_meta_models("sdlocal/engine/configs/sd1")


@pytest.fixture(scope="module")
def real_sdxl() -> dict[str, Any]:
    from sdlocal.engine.streaming import build_meta_models

    return build_meta_models("sdlocal/engine/configs/sdxl")


def kohya(name: str) -> str:
    return name.replace(".", "_")


def weight_shape(models: Any, target: tuple[str, str]) -> tuple[int, ...]:
    component, module = target
    model = models[component] if isinstance(models, dict) else getattr(models, component)
    return tuple(model.get_submodule(module).weight.shape)


# ------------------------------------------------------------------------------------ every module, every way
def test_every_unet_module_is_reached_by_its_diffusers_style_kohya_key_and_its_peft_name(sd1, sd2, sdxl) -> None:
    for pipe in (sd1, sd2, sdxl):
        targets = module_targets(pipe)
        names = [name for name, _ in patchable_modules(pipe.unet)]
        assert len(names) > 50
        for name in names:
            assert targets["lora_unet_" + kohya(name)] == ("unet", name)
            assert targets["unet." + name] == ("unet", name)


def test_every_unet_module_with_an_original_name_is_reached_by_its_ldm_style_kohya_key(sd1, sd2, sdxl) -> None:
    for pipe in (sd1, sd2, sdxl):
        targets = module_targets(pipe)
        ldm = unet_ldm_names(pipe.unet)
        assert set(ldm) == {name for name, _ in patchable_modules(pipe.unet)}  # every Linear/Conv2d has one
        for name, original in ldm.items():
            assert targets["lora_unet_" + kohya(original)] == ("unet", name)


def test_ldm_style_keys_follow_the_input_middle_output_numbering(sdxl) -> None:
    """The tiny SDXL UNet has one resnet per level and attention at level 1 only: level 1 starts at input 3."""
    targets = module_targets(sdxl)
    assert targets["lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_k"] == (
        "unet", "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k")
    assert targets["lora_unet_input_blocks_1_0_in_layers_2"] == ("unet", "down_blocks.0.resnets.0.conv1")
    assert targets["lora_unet_input_blocks_2_0_op"] == ("unet", "down_blocks.0.downsamplers.0.conv")
    assert targets["lora_unet_middle_block_1_proj_in"] == ("unet", "mid_block.attentions.0.proj_in")
    assert targets["lora_unet_output_blocks_0_1_transformer_blocks_0_ff_net_2"] == (
        "unet", "up_blocks.0.attentions.0.transformer_blocks.0.ff.net.2")


def test_sd1_and_sd2_text_encoder_is_lora_te_with_the_text_model_level_and_peft_with_or_without_it(sd1, sd2) -> None:
    for pipe in (sd1, sd2):
        targets = module_targets(pipe)
        names = [name for name, _ in patchable_modules(pipe.text_encoder)]
        assert "encoder.layers.0.self_attn.q_proj" in names  # transformers 5: no text_model. level
        for name in names:
            assert targets["lora_te_text_model_" + kohya(name)] == ("text_encoder", name)
            assert targets["text_encoder.text_model." + name] == ("text_encoder", name)
            assert targets["text_encoder." + name] == ("text_encoder", name)
        assert not any(key.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for key in targets)


def test_sdxl_text_encoders_are_lora_te1_and_lora_te2(sdxl) -> None:
    targets = module_targets(sdxl)
    for component, prefix in (("text_encoder", "lora_te1_"), ("text_encoder_2", "lora_te2_")):
        names = [name for name, _ in patchable_modules(getattr(sdxl, component))]
        for name in names:
            if name.startswith("text_projection"):
                assert targets[prefix + "text_projection"] == (component, name)
                continue
            # transformers 5 drops the text_model. level from CLIPTextModel but keeps it in ...WithProjection.
            short = name.removeprefix("text_model.")
            assert targets[prefix + "text_model_" + kohya(short)] == (component, name)
            assert targets[f"{component}.text_model.{short}"] == (component, name)
            assert targets[f"{component}.{short}"] == (component, name)
    assert targets["lora_te2_text_model_encoder_layers_1_mlp_fc2"] == (
        "text_encoder_2", "text_model.encoder.layers.1.mlp.fc2")
    assert not any(key.startswith("lora_te_") for key in targets)  # SD 1.x's spelling is not SDXL's


def test_the_table_is_cached_per_pipeline_and_also_built_from_a_dict_of_models(sd1) -> None:
    assert module_targets(sd1) is module_targets(sd1)
    models = {"unet": sd1.unet, "text_encoder": sd1.text_encoder, "vae": sd1.vae}
    assert module_targets(models) == module_targets(sd1)


# --------------------------------------------------------------------------------- real-size key names
@pytest.mark.parametrize(("key", "target", "shape"), [
    ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k",
     "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", (320, 768)),
    ("lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k",
     "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", (320, 768)),
    ("lora_unet_mid_block_attentions_0_proj_in", "mid_block.attentions.0.proj_in", (1280, 1280, 1, 1)),
    ("lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_ff_net_0_proj",
     "up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj", (10240, 1280)),
    ("lora_unet_output_blocks_2_1_conv", "up_blocks.0.upsamplers.0.conv", (1280, 1280, 3, 3)),
    ("lora_unet_input_blocks_3_0_op", "down_blocks.0.downsamplers.0.conv", (320, 320, 3, 3)),
])
def test_real_sd15_kohya_keys(real_sd15, key: str, target: str, shape: tuple[int, ...]) -> None:
    targets = module_targets(real_sd15)
    assert targets[key] == ("unet", target)
    assert weight_shape(real_sd15, targets[key]) == shape


def test_real_sd15_text_encoder_key_fits_a_rank_32_down_of_width_768(real_sd15) -> None:
    targets = module_targets(real_sd15)
    target = targets["lora_te_text_model_encoder_layers_11_self_attn_q_proj"]
    assert target == ("text_encoder", "encoder.layers.11.self_attn.q_proj")
    assert weight_shape(real_sd15, target)[1] == 768
    assert weight_shape(real_sd15, targets["lora_te_text_model_encoder_layers_0_mlp_fc1"]) == (3072, 768)


@pytest.mark.parametrize(("key", "target", "shape"), [
    ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k",
     ("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"), (640, 2048)),
    ("lora_unet_middle_block_1_proj_in", ("unet", "mid_block.attentions.0.proj_in"), (1280, 1280)),
    ("lora_unet_output_blocks_0_1_transformer_blocks_0_ff_net_2",
     ("unet", "up_blocks.0.attentions.0.transformer_blocks.0.ff.net.2"), (1280, 5120)),
    ("lora_unet_input_blocks_1_0_in_layers_2", ("unet", "down_blocks.0.resnets.0.conv1"), (320, 320, 3, 3)),
    ("lora_unet_input_blocks_1_0_out_layers_3", ("unet", "down_blocks.0.resnets.0.conv2"), (320, 320, 3, 3)),
    ("lora_unet_input_blocks_4_0_skip_connection", ("unet", "down_blocks.1.resnets.0.conv_shortcut"),
     (640, 320, 1, 1)),
    ("lora_unet_input_blocks_3_0_op", ("unet", "down_blocks.0.downsamplers.0.conv"), (320, 320, 3, 3)),
    ("lora_unet_output_blocks_2_2_conv", ("unet", "up_blocks.0.upsamplers.0.conv"), (1280, 1280, 3, 3)),
    ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
     ("text_encoder", "encoder.layers.0.self_attn.q_proj"), (768, 768)),
    ("lora_te2_text_model_encoder_layers_31_mlp_fc1", ("text_encoder_2", "text_model.encoder.layers.31.mlp.fc1"),
     (5120, 1280)),
])
def test_real_sdxl_kohya_keys(real_sdxl, key: str, target: tuple[str, str], shape: tuple[int, ...]) -> None:
    targets = module_targets(real_sdxl)
    assert targets[key] == target
    assert weight_shape(real_sdxl, target) == shape
