"""Synthetic LoRA files are laid out as trainers write them and read back into a patch for every module written."""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import torch

from sdlocal.engine.networks.lora import LORA_FORMATS
from sdlocal.engine.networks.lora_formats import build_patches, read_lora_tensors, split_key
from sdlocal.engine.networks.lora_synthetic import write_lora

TEXT = re.compile(r"self_attn\.(q|k|v|out)_proj$|mlp\.fc[12]$")
RESNET_OR_SAMPLER = re.compile(r"resnets\.\d+\.(conv1|conv2|conv_shortcut)$|samplers\.0\.conv$")


def header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(length))


def expected_modules(pipe: Any, conv: bool) -> set[tuple[str, str]]:
    """What kohya trains, enumerated here from the module tree: the UNet's transformer blocks (``attentions.N``
    holds exactly the Transformer2DModels), the text encoders' attention and MLP, with LoCon the convolutions."""
    found = set()
    for component in ("text_encoder", "text_encoder_2", "unet"):
        model = getattr(pipe, component, None)
        for name, module in (model.named_modules() if model is not None else ()):
            if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                continue
            if component != "unet":
                keep = bool(TEXT.search(name))
            else:
                keep = ".attentions." in name or (conv and bool(RESNET_OR_SAMPLER.search(name)))
            if keep:
                found.add((component, name))
    return found


@pytest.mark.parametrize("fmt", LORA_FORMATS)
@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_a_written_file_patches_every_module_it_names(fmt: str, family: str, request, tmp_path: Path) -> None:
    pipe = request.getfixturevalue(family)
    path = write_lora(pipe, tmp_path / f"{fmt}.safetensors", fmt=fmt, rank=4, seed=1)
    tensors = read_lora_tensors(path)
    result = build_patches(tensors, pipe, te_multiplier=1.0, unet_multiplier=1.0, network=fmt)
    assert (result.unmatched, result.mismatched) == ([], [])
    bases = {split_key(key)[0] for key in tensors}
    assert len(result.patches) == len(bases)
    assert {(p.component, p.module) for p in result.patches} == expected_modules(pipe, conv=fmt == "locon")
    assert all(t.dtype == torch.float16 for t in tensors.values())
    for patch in result.patches[:: max(1, len(result.patches) // 12)]:
        weight = getattr(pipe, patch.component).get_submodule(patch.module).weight.detach().float()
        change = patch.delta.updown(weight)
        assert torch.isfinite(change).all() and change.abs().max() > 0
        # about `scale` (1) times a fresh weight's spread, 1/sqrt(fan-in): a visible change, not a blow-up
        spread = change.std().item() * math.sqrt(weight[0].numel())
        assert 0.05 < spread < 20, (patch.module, spread)


def test_sdxl_files_use_ldm_unet_names_and_te1_te2(sdxl, tmp_path: Path) -> None:
    keys = set(read_lora_tensors(write_lora(sdxl, tmp_path / "x.safetensors")))
    assert "lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert "lora_unet_middle_block_1_proj_in.lora_up.weight" in keys
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.alpha" in keys
    assert "lora_te2_text_model_encoder_layers_1_mlp_fc2.lora_down.weight" in keys
    assert not any(key.startswith(("lora_unet_down_blocks", "lora_unet_mid_block", "lora_te_")) for key in keys)


def test_sd1_files_use_diffusers_unet_names_and_lora_te(sd1, tmp_path: Path) -> None:
    keys = set(read_lora_tensors(write_lora(sd1, tmp_path / "x.safetensors", fmt="locon")))
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight" in keys
    assert "lora_unet_down_blocks_1_resnets_0_conv1.lora_down.weight" in keys
    assert "lora_te_text_model_encoder_layers_1_self_attn_out_proj.lora_up.weight" in keys
    assert not any(key.startswith(("lora_unet_input_blocks", "lora_te1_")) for key in keys)
    ldm = set(read_lora_tensors(write_lora(sd1, tmp_path / "y.safetensors", ldm_names=True)))
    assert "lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_k.lora_down.weight" in ldm  # 1 resnet per level


def test_locon_downs_carry_the_3x3_kernel_and_ups_are_1x1(sd1, tmp_path: Path) -> None:
    tensors = read_lora_tensors(write_lora(sd1, tmp_path / "c.safetensors", fmt="locon", rank=2))
    assert tensors["lora_unet_down_blocks_1_resnets_0_conv1.lora_down.weight"].shape == (2, 32, 3, 3)
    assert tensors["lora_unet_down_blocks_1_resnets_0_conv1.lora_up.weight"].shape == (64, 2, 1, 1)
    assert tensors["lora_unet_down_blocks_1_resnets_0_conv1.alpha"].item() == 1.0  # rank / 2


def test_peft_files_use_dotted_names_and_lora_a_b(sdxl, tmp_path: Path) -> None:
    keys = set(read_lora_tensors(write_lora(sdxl, tmp_path / "p.safetensors", fmt="peft")))
    assert "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight" in keys
    assert "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight" in keys
    assert "text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_A.weight" in keys
    assert not any(key.endswith(".alpha") for key in keys)


def test_components_choose_what_is_written(sdxl, tmp_path: Path) -> None:
    unet_only = read_lora_tensors(write_lora(sdxl, tmp_path / "u.safetensors", components=("unet",)))
    assert all(key.startswith("lora_unet_") for key in unet_only)
    te2_only = read_lora_tensors(write_lora(sdxl, tmp_path / "t.safetensors", components=("text_encoder_2",)))
    assert te2_only and all(key.startswith("lora_te2_") for key in te2_only)


def test_kohya_metadata_is_written_when_asked(sdxl, tmp_path: Path) -> None:
    tags = {"5_sks dog": {"sks dog": 12, "grass": 3}}
    path = write_lora(sdxl, tmp_path / "dog.safetensors", fmt="loha", rank=8,
                      metadata={"ss_output_name": "Good Dog", "ss_tag_frequency": tags})
    meta = header(path)["__metadata__"]
    assert meta["ss_output_name"] == "Good Dog"
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("8", "4")
    assert json.loads(meta["ss_tag_frequency"]) == tags
    assert json.loads(meta["ss_network_args"]) == {"algo": "loha"}
    assert "__metadata__" not in header(write_lora(sdxl, tmp_path / "plain.safetensors"))


@pytest.mark.parametrize(("family", "version"), [("sd1", "sd_v1"), ("sd2", "sd_v2"), ("sdxl", "sdxl_base_v1-0")])
def test_the_base_model_version_names_the_family(family: str, version: str, request, tmp_path: Path) -> None:
    path = write_lora(request.getfixturevalue(family), tmp_path / "v.safetensors", metadata={})
    meta = header(path)["__metadata__"]
    assert (meta["ss_base_model_version"], meta["ss_output_name"], meta["ss_network_module"]) == (
        version, "v", "networks.lora")


def test_the_same_seed_writes_the_same_file(sd1, tmp_path: Path) -> None:
    first = write_lora(sd1, tmp_path / "a.safetensors", fmt="lokr", seed=3).read_bytes()
    assert write_lora(sd1, tmp_path / "b.safetensors", fmt="lokr", seed=3).read_bytes() == first
    assert write_lora(sd1, tmp_path / "c.safetensors", fmt="lokr", seed=4).read_bytes() != first


def test_bad_arguments_are_refused(sd1, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fmt must be one of"):
        write_lora(sd1, tmp_path / "x.safetensors", fmt="oft")
    with pytest.raises(ValueError, match="components must be among"):
        write_lora(sd1, tmp_path / "x.safetensors", components=("vae",))


def test_a_real_size_sd15_rank_64_lora_is_written_from_meta_models(tmp_path: Path) -> None:
    """The benchmark's file: every module at its real shape, fp16, without the model's weights in memory."""
    from sdlocal.engine.streaming import build_meta_models

    models = build_meta_models("sdlocal/engine/configs/sd1")
    assert models["unet"].conv_in.weight.device.type == "meta"
    path = write_lora(models, tmp_path / "real.safetensors", rank=64)
    rank, expected, modules = 64, 0, 0
    for component in ("text_encoder", "unet"):
        for name, module in models[component].named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and (
                    (component == "unet" and ".attentions." in name) or TEXT.search(name)):
                out, fan_in = module.weight.shape[0], module.weight[0].numel()
                expected += rank * (fan_in + out) * 2
                modules += 1
    assert modules == 16 * 12 + 12 * 6  # 16 transformers of 12 layers; 12 text layers of 6
    data_bytes = path.stat().st_size - 8 - len(json.dumps(header(path)).encode())
    assert abs(data_bytes - (expected + 2 * modules)) < 0.001 * expected  # + one fp16 alpha per module
    assert 70e6 < path.stat().st_size < 80e6
    tensors = read_lora_tensors(path)
    assert tensors["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"].shape == (
        64, 768)
    result = build_patches(tensors, models, 1.0, 1.0)
    assert len(result.patches) == modules and not result.unmatched and not result.mismatched
