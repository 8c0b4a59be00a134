"""Each LoRA format's change is the formula its trainers define; files become patches, or say why they cannot.

The expected values are computed here element by element from the definitions (sums over the rank), not with
the library's matrix products, on hand-made factors of small shapes.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sdlocal.engine.networks.lora_formats import build_patches, delta_for, read_lora_tensors
from sdlocal.engine.request import EngineError

TO_K = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"  # tiny SD 1.x: Linear [64, 32]
PROJ_IN = "down_blocks.1.attentions.0.proj_in"  # tiny SD 1.x: Conv2d [64, 64, 1, 1]
CONV1 = "down_blocks.1.resnets.0.conv1"  # tiny SD 1.x: Conv2d [64, 32, 3, 3]
Q_PROJ = "encoder.layers.0.self_attn.q_proj"  # tiny text encoder: Linear [32, 32]


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 7 * len(shape) + sum(shape)))


def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b as the sum over the rank of outer products."""
    return sum((torch.outer(a[:, i], b[i]) for i in range(a.shape[1])), torch.zeros(a.shape[0], b.shape[1]))


def tucker(core: torch.Tensor, b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """out[p, q, k, l] = sum_ij core[i, j, k, l] * b[j, q] * a[i, p], element by element."""
    r1, r2, kh, kw = core.shape
    out = torch.zeros(a.shape[1], b.shape[1], kh, kw)
    for i, j in itertools.product(range(r1), range(r2)):
        out += core[i, j][None, None] * (a[i][:, None] * b[j][None, :])[:, :, None, None]
    return out


def kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The Kronecker product over the first two dims, block by block; b may carry a kernel."""
    o1, i1 = a.shape
    o2, i2 = b.shape[:2]
    out = torch.zeros(o1 * o2, i1 * i2, *b.shape[2:])
    for p, q in itertools.product(range(o1), range(i1)):
        out[p * o2:(p + 1) * o2, q * i2:(q + 1) * i2] = a[p, q] * b
    return out


def scalar(value: float) -> torch.Tensor:
    return torch.tensor(value)


# ------------------------------------------------------------------------------------------- LoRA / LoCon
def test_lora_is_up_times_down_times_alpha_over_rank() -> None:
    up, down, weight = rand(5, 2), rand(2, 3), rand(5, 3)
    delta = delta_for({"lora_up.weight": up, "lora_down.weight": down, "alpha": scalar(1.0)})
    assert (delta.rank, delta.scale) == (2, 0.5)
    torch.testing.assert_close(delta.updown(weight), product(up, down) * 0.5)


def test_lora_without_alpha_means_alpha_equals_rank() -> None:
    up, down = rand(5, 4), rand(4, 3)
    delta = delta_for({"lora_up.weight": up, "lora_down.weight": down})
    torch.testing.assert_close(delta.updown(rand(5, 3)), product(up, down))


def test_locon_3x3_down_gives_a_kernel_change() -> None:
    up, down = rand(4, 2, 1, 1), rand(2, 3, 3, 3)
    delta = delta_for({"lora_up.weight": up, "lora_down.weight": down, "alpha": scalar(4.0)})
    expected = product(up.flatten(1), down.flatten(1)).reshape(4, 3, 3, 3) * 2.0
    torch.testing.assert_close(delta.updown(rand(4, 3, 3, 3)), expected)
    assert delta.shape() == (4, 3, 3, 3)


def test_tucker_locon_uses_the_mid_core() -> None:
    up, mid, down = rand(4, 2, 1, 1), rand(2, 2, 3, 3), rand(2, 3, 1, 1)
    delta = delta_for({"lora_up.weight": up, "lora_mid.weight": mid, "lora_down.weight": down,
                       "alpha": scalar(1.0)})
    expected = tucker(mid, down.flatten(1), up.flatten(1).T) * 0.5
    torch.testing.assert_close(delta.updown(rand(4, 3, 3, 3)), expected)


def test_peft_lora_a_and_b_are_down_and_up() -> None:
    up, down = rand(5, 2), rand(2, 3)
    for names in (("lora_B.weight", "lora_A.weight"), ("lora.up.weight", "lora.down.weight")):
        delta = delta_for({names[0]: up, names[1]: down})
        torch.testing.assert_close(delta.updown(rand(5, 3)), product(up, down))


# -------------------------------------------------------------------------------------------------- LoHa
def test_loha_is_the_elementwise_product_of_two_low_rank_products() -> None:
    w1a, w1b, w2a, w2b = rand(5, 2), rand(2, 3, seed=1), rand(5, 2, seed=2), rand(2, 3, seed=3)
    delta = delta_for({"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b,
                       "alpha": scalar(1.0)})
    torch.testing.assert_close(delta.updown(rand(5, 3)), product(w1a, w1b) * product(w2a, w2b) * 0.5)


def test_loha_on_a_convolution_reshapes_the_flattened_kernel() -> None:
    w1a, w1b, w2a, w2b = rand(4, 2), rand(2, 27, seed=1), rand(4, 2, seed=2), rand(2, 27, seed=3)
    delta = delta_for({"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b})
    expected = (product(w1a, w1b) * product(w2a, w2b)).reshape(4, 3, 3, 3)
    torch.testing.assert_close(delta.updown(rand(4, 3, 3, 3)), expected)


def test_tucker_loha_builds_each_side_from_its_core() -> None:
    w1a, w1b, t1 = rand(2, 4), rand(2, 3, seed=1), rand(2, 2, 3, 3, seed=4)
    w2a, w2b, t2 = rand(2, 4, seed=2), rand(2, 3, seed=3), rand(2, 2, 3, 3, seed=5)
    delta = delta_for({"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b, "hada_t1": t1,
                       "hada_t2": t2, "alpha": scalar(1.0)})
    expected = tucker(t1, w1b, w1a) * tucker(t2, w2b, w2a) * 0.5
    torch.testing.assert_close(delta.updown(rand(4, 3, 3, 3)), expected)
    assert delta.shape() == (4, 3, 3, 3)


# -------------------------------------------------------------------------------------------------- LoKr
def test_lokr_whole_w1_and_factored_w2_scales_by_the_rank_of_w2() -> None:
    w1, w2a, w2b = rand(2, 3), rand(4, 2, seed=1), rand(2, 5, seed=2)
    delta = delta_for({"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b, "alpha": scalar(1.0)})
    assert (delta.rank, delta.scale) == (2, 0.5)
    torch.testing.assert_close(delta.updown(rand(8, 15)), kron(w1, product(w2a, w2b)) * 0.5)


def test_lokr_factored_w1_takes_its_rank_from_w1_b() -> None:
    w1a, w1b, w2 = rand(2, 4), rand(4, 3, seed=1), rand(4, 5, seed=2)
    delta = delta_for({"lokr_w1_a": w1a, "lokr_w1_b": w1b, "lokr_w2": w2, "alpha": scalar(2.0)})
    assert delta.rank == 4
    torch.testing.assert_close(delta.updown(rand(8, 15)), kron(product(w1a, w1b), w2) * 0.5)


def test_lokr_with_neither_side_factored_ignores_alpha() -> None:
    w1, w2 = rand(2, 3), rand(4, 5, seed=1)
    delta = delta_for({"lokr_w1": w1, "lokr_w2": w2, "alpha": scalar(8.0)})
    torch.testing.assert_close(delta.updown(rand(8, 15)), kron(w1, w2))


def test_lokr_on_a_convolution_puts_the_kernel_in_w2() -> None:
    w1, w2 = rand(2, 3), rand(4, 5, 3, 3, seed=1)
    delta = delta_for({"lokr_w1": w1, "lokr_w2": w2})
    torch.testing.assert_close(delta.updown(rand(8, 15, 3, 3)), kron(w1, w2))
    w2a, w2b = rand(4, 2, seed=2), rand(2, 45, seed=3)  # factored, the kernel flattened into w2_b
    delta = delta_for({"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b})
    torch.testing.assert_close(delta.updown(rand(8, 15, 3, 3)), kron(w1, product(w2a, w2b).reshape(4, 5, 3, 3)))


def test_lokr_tucker_w2_uses_lokr_t2() -> None:
    w1, w2a, w2b, t2 = rand(2, 3), rand(2, 4, seed=1), rand(2, 5, seed=2), rand(2, 2, 3, 3, seed=3)
    delta = delta_for({"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b, "lokr_t2": t2, "alpha": scalar(1.0)})
    torch.testing.assert_close(delta.updown(rand(8, 15, 3, 3)), kron(w1, tucker(t2, w2b, w2a)) * 0.5)


# -------------------------------------------------------------------------------------------------- DoRA
def dora_expected(weight: torch.Tensor, change: torch.Tensor, magnitude: torch.Tensor, keep: int) -> torch.Tensor:
    merged = weight + change
    dims = [d for d in range(merged.dim()) if d != keep]
    norm = (merged ** 2).sum(dim=dims, keepdim=True).sqrt()
    return merged * magnitude.reshape(norm.shape) / norm - weight


@pytest.mark.parametrize(("weight_shape", "down_shape", "keep"), [
    ((5, 3), (2, 3), 0), ((5, 3), (2, 3), 1), ((4, 3, 3, 3), (2, 3, 3, 3), 0), ((4, 3, 3, 3), (2, 3, 3, 3), 1)])
def test_dora_rescales_the_merged_weight_to_dora_scale(weight_shape, down_shape, keep: int) -> None:
    weight = rand(*weight_shape, seed=9)
    up = rand(weight_shape[0], 2) if len(weight_shape) == 2 else rand(weight_shape[0], 2, 1, 1)
    down = rand(*down_shape, seed=1)
    magnitude_shape = [1] * len(weight_shape)
    magnitude_shape[keep] = weight_shape[keep]
    magnitude = rand(*magnitude_shape, seed=3).abs() + 0.5
    delta = delta_for({"lora_up.weight": up, "lora_down.weight": down, "alpha": scalar(1.0),
                       "dora_scale": magnitude})
    change = product(up.flatten(1), down.flatten(1)).reshape(weight_shape) * 0.5
    torch.testing.assert_close(delta.updown(weight), dora_expected(weight, change, magnitude, keep))
    assert delta.kind == "DoRA"


def test_a_dora_scale_that_fits_neither_axis_is_refused() -> None:
    with pytest.raises(ValueError, match="dora_scale"):
        delta_for({"lora_up.weight": rand(5, 2), "lora_down.weight": rand(2, 3), "dora_scale": rand(7, 1)}).shape()


# ------------------------------------------------------------------------------------------- fp16 factors
def test_fp16_factors_stay_fp16_and_the_change_is_fp32() -> None:
    up, down = rand(5, 2).half(), rand(2, 3).half()
    delta = delta_for({"lora_up.weight": up, "lora_down.weight": down, "alpha": scalar(2.0).half()})
    assert delta.up is up and delta.down is down
    assert delta.nbytes == (10 + 6) * 2
    change = delta.updown(rand(5, 3))
    assert change.dtype == torch.float32
    torch.testing.assert_close(change, product(up.float(), down.float()))


# --------------------------------------------------------------------------------------------- patches
def test_patches_name_the_module_and_take_the_te_or_unet_multiplier(sd1) -> None:
    tensors = {
        "lora_unet_" + TO_K.replace(".", "_") + ".lora_down.weight": rand(2, 32),
        "lora_unet_" + TO_K.replace(".", "_") + ".lora_up.weight": rand(64, 2),
        "text_encoder.text_model." + Q_PROJ + ".lora_A.weight": rand(2, 32),
        "text_encoder.text_model." + Q_PROJ + ".lora_B.weight": rand(32, 2),
    }
    result = build_patches(tensors, sd1, te_multiplier=0.25, unet_multiplier=0.75, network="style")
    assert (result.unmatched, result.mismatched) == ([], [])
    assert {(p.component, p.module, p.multiplier, p.network) for p in result.patches} == {
        ("unet", TO_K, 0.75, "style"), ("text_encoder", Q_PROJ, 0.25, "style")}


def test_a_multiplier_of_zero_gives_no_patches_for_that_component(sd1) -> None:
    tensors = {"lora_unet_" + TO_K.replace(".", "_") + ".lora_down.weight": rand(2, 32),
               "lora_unet_" + TO_K.replace(".", "_") + ".lora_up.weight": rand(64, 2),
               "lora_te_text_model_" + Q_PROJ.replace(".", "_") + ".lora_down.weight": rand(2, 32),
               "lora_te_text_model_" + Q_PROJ.replace(".", "_") + ".lora_up.weight": rand(32, 2)}
    assert [p.component for p in build_patches(tensors, sd1, 0.0, 1.0).patches] == ["unet"]
    assert [p.component for p in build_patches(tensors, sd1, 1.0, 0.0).patches] == ["text_encoder"]
    assert build_patches(tensors, sd1, 0.0, 0.0).patches == []


def test_a_linear_lora_fits_a_1x1_convolution(sd1) -> None:
    up, down = rand(64, 2), rand(2, 64)
    key = "lora_unet_" + PROJ_IN.replace(".", "_")
    result = build_patches({key + ".lora_up.weight": up, key + ".lora_down.weight": down}, sd1, 1.0, 1.0)
    (patch,) = result.patches
    weight = sd1.unet.get_submodule(PROJ_IN).weight.detach().float()
    assert weight.shape == (64, 64, 1, 1)
    change = patch.delta.updown(weight)
    assert change.shape == weight.shape
    torch.testing.assert_close(change, product(up, down).reshape(64, 64, 1, 1))


def test_a_loha_flattened_kernel_fits_a_3x3_convolution(sd1) -> None:
    key = "lora_unet_" + CONV1.replace(".", "_")
    tensors = {f"{key}.hada_w1_a": rand(64, 2), f"{key}.hada_w1_b": rand(2, 32 * 9),
               f"{key}.hada_w2_a": rand(64, 2), f"{key}.hada_w2_b": rand(2, 32 * 9)}
    result = build_patches(tensors, sd1, 1.0, 1.0)
    assert [p.module for p in result.patches] == [CONV1] and not result.mismatched


def test_keys_of_no_module_and_unknown_formats_are_unmatched_with_the_reason(sd1) -> None:
    to_k = "lora_unet_" + TO_K.replace(".", "_")
    proj_in = "lora_unet_" + PROJ_IN.replace(".", "_")
    tensors = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": rand(2, 32),  # no attention at level 0
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": rand(32, 2),
        f"{to_k}.oft_blocks": rand(4, 16, 16), f"{to_k}.alpha": scalar(1.0),  # LyCORIS OFT
        f"{proj_in}.weight": rand(64),  # IA3
        "lora_te_text_model_" + Q_PROJ.replace(".", "_") + ".lora_down.weight": rand(2, 32),  # no up
    }
    result = build_patches(tensors, sd1, 1.0, 1.0)
    assert result.patches == [] and result.mismatched == []
    assert result.unmatched[0] == "lora_unet_down_blocks_0_attentions_0_proj_in"
    assert result.unmatched[1].startswith(f"{to_k}: holds tensors sdlocal does not apply: oft_blocks (LyCORIS OFT)")
    assert result.unmatched[2].startswith(f"{proj_in}: holds tensors sdlocal does not apply: weight")
    assert "only one of the LoRA factors" in result.unmatched[3]


def test_factors_of_the_wrong_shape_are_mismatched_with_both_shapes(sd1) -> None:
    key = "lora_unet_" + TO_K.replace(".", "_")
    tensors = {f"{key}.lora_down.weight": rand(2, 768), f"{key}.lora_up.weight": rand(64, 2)}  # SD 1.5's width
    result = build_patches(tensors, sd1, 1.0, 1.0)
    assert result.patches == []
    assert result.mismatched == [f"{key}: LoRA gives [64, 768], module is [64, 32]"]


# --------------------------------------------------------------------------------------------- reading
def test_safetensors_and_pt_files_read_back_their_tensors(tmp_path: Path) -> None:
    tensors = {"lora_unet_x.lora_down.weight": rand(2, 3).half(), "lora_unet_x.alpha": scalar(1.0)}
    save_file(tensors, str(tmp_path / "a.safetensors"))
    torch.save(tensors, tmp_path / "b.pt")
    torch.save({"state_dict": tensors, "epoch": 3}, tmp_path / "c.ckpt")
    for name in ("a.safetensors", "b.pt", "c.ckpt"):
        read = read_lora_tensors(tmp_path / name)
        assert set(read) == set(tensors), name
        assert read["lora_unet_x.lora_down.weight"].dtype == torch.float16
        torch.testing.assert_close(read["lora_unet_x.lora_down.weight"], tensors["lora_unet_x.lora_down.weight"])


class Payload:
    """Stands for the code a pickle can carry."""


def test_a_pt_file_with_python_objects_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"lora_unet_x.lora_down.weight": rand(2, 3), "note": Payload()}, path)
    with pytest.raises(EngineError, match=r"evil\.pt: contains Python objects other than tensors") as caught:
        read_lora_tensors(path)
    assert "use the .safetensors version" in str(caught.value).lower()


def test_a_truncated_safetensors_says_download_it_again(tmp_path: Path) -> None:
    path = tmp_path / "cut.safetensors"
    save_file({"lora_unet_x.lora_down.weight": rand(64, 64)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(EngineError, match=r"cut\.safetensors: .*download it again"):
        read_lora_tensors(path)


def test_a_lora_adds_itself_in_place_exactly_as_its_change_says():
    import torch

    from sdlocal.engine.networks.lora_deltas import LoraDelta

    generator = torch.Generator().manual_seed(3)
    up, down = torch.randn(6, 2, generator=generator), torch.randn(2, 5, generator=generator)
    delta = LoraDelta(up=up.half(), down=down.half(), alpha=1.0)
    weight = torch.randn(6, 5, generator=generator)
    expected = weight + 0.7 * delta.updown(weight)
    assert delta.add_to(weight, 0.7) is True
    torch.testing.assert_close(weight, expected, rtol=1e-6, atol=1e-6)
    conv = torch.randn(6, 5, 1, 1, generator=generator)
    expected = conv + delta.updown(conv)
    assert delta.add_to(conv, 1.0) and torch.allclose(conv, expected, atol=1e-6)
    assert delta.add_to(conv.to(memory_format=torch.channels_last).half(), 1.0) is False  # fp16: use updown
