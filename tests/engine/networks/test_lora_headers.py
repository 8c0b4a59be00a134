"""What a LoRA file is, read from its tensor names and shapes (the safetensors header alone, or a ``.pt`` loaded
with ``weights_only``): the format, the family it fits, its rank, the parts of the model it patches, and the kohya
training notes. A file that is no LoRA, or is damaged, is listed with a reason that says what it is and what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sdlocal.engine.networks.lora import LoraFile
from sdlocal.engine.networks.lora_headers import describe_header
from sdlocal.engine.networks.loras import read_lora
from tests.engine.networks import files
from tests.engine.networks import lora_files as lf


def read(path: Path) -> LoraFile:
    return read_lora(path, path.stem)


# ---------------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize(("parts", "fmt", "rank"), [
    ([lf.lora(lf.UNET_K, rank=8), lf.lora(lf.TE_Q, rank=4)], "lora", 8),
    ([lf.lora(lf.UNET_K), lf.conv(lf.UNET_CONV, rank=16, kernel=3)], "locon", 16),  # a 3x3 down: LoCon
    ([lf.conv(lf.UNET_CONV, rank=4, mid=True)], "locon", 4),  # tucker: lora_mid
    ([lf.conv(lf.UNET_CONV, rank=4, kernel=1)], "lora", 4),  # a 1x1 convolution is a plain LoRA
    ([lf.loha(lf.UNET_K, rank=6), lf.lora(lf.TE_Q, rank=2)], "loha", 6),
    ([lf.lokr(lf.UNET_K, rank=12)], "lokr", 12),
    ([lf.lokr(lf.UNET_K)], "lokr", None),  # full Kronecker factors have no rank
    ([lf.dora(lf.UNET_K, rank=4)], "dora", 4),
    ([lf.peft(lf.PEFT_UNET_K, rank=8)], "peft", 8),
    ([lf.peft(lf.PEFT_UNET_K, rank=2, old=True)], "peft", 2),  # older diffusers: lora.down / lora.up
])
def test_the_format_and_rank_come_from_the_tensor_names_and_shapes(tmp_path: Path, parts, fmt: str,
                                                                   rank: int | None) -> None:
    found = read(lf.save(tmp_path / "any.safetensors", *parts))
    assert (found.format, found.rank, found.reason, found.usable) == (fmt, rank, "", True)


def test_the_lokr_rank_is_the_largest_factored_one(tmp_path: Path) -> None:
    found = read(lf.save(tmp_path / "k.safetensors", lf.lokr(lf.UNET_K, rank=4), lf.lokr(lf.UNET_V, rank=10)))
    assert found.rank == 10


# ---------------------------------------------------------------------------------------------- family
@pytest.mark.parametrize(("parts", "family"), [
    ([lf.lora(lf.UNET_K, width=768)], "sd1"),  # cross-attention context: CLIP-L
    ([lf.lora(lf.UNET_V, width=1024)], "sd2"),  # OpenCLIP-H
    ([lf.lora(lf.SGM_K, width=2048)], "sdxl"),  # CLIP-L + OpenCLIP-bigG, kohya's LDM names
    ([lf.lora(lf.TE_Q, width=768)], "sd1"),  # a text-encoder-only file: q_proj's input width
    ([lf.lora(lf.TE_Q, width=1024)], "sd2"),
    ([lf.lora(lf.TE1_Q), lf.lora(lf.TE2_Q, width=48)], "sdxl"),  # two text encoders: SDXL, whatever the widths
    ([lf.peft(lf.PEFT_TE2_Q)], "sdxl"),
    ([lf.peft(lf.PEFT_UNET_K, width=1024)], "sd2"),
    ([lf.loha(lf.UNET_K, width=768)], "sd1"),  # hada_w1_b [rank, in]
    ([lf.lokr(lf.UNET_K, in_factors=(8, 256), rank=4)], "sdxl"),  # LoKr in = i1 * i2 = 2048
    ([lf.lokr(lf.UNET_K, in_factors=(8, 96))], "sd1"),
    ([lf.dora(lf.UNET_K, width=2048)], "sdxl"),
    ([lf.lora(lf.UNET_K, width=32), lf.lora(lf.TE_Q, width=32)], None),  # the tiny test models: no real family
    ([lf.lora(lf.UNET_K, width=80)], None),
])
def test_the_family_comes_from_the_shapes(tmp_path: Path, parts, family: str | None) -> None:
    assert read(lf.save(tmp_path / "x.safetensors", *parts)).family == family


@pytest.mark.parametrize(("metadata", "family"), [
    ({"ss_base_model_version": "sd_v1"}, "sd1"),
    ({"ss_base_model_version": "sd_v2"}, "sd2"),
    ({"ss_base_model_version": "sd_v2_768_v"}, "sd2"),
    ({"ss_base_model_version": "sdxl_base_v1-0"}, "sdxl"),
    ({"ss_v2": "True"}, "sd2"),
    ({"ss_v2": "False"}, None),
    ({"modelspec.architecture": "stable-diffusion-v1/lora"}, "sd1"),
    ({"modelspec.architecture": "stable-diffusion-v2-768-v/lora"}, "sd2"),
    ({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, "sdxl"),
    ({"ss_base_model_version": "flux1"}, None),
    ({}, None),
])
def test_when_the_shapes_say_nothing_the_metadata_names_the_family(tmp_path: Path, metadata, family) -> None:
    # self-attention and feed-forward layers have the same widths in every family's first block
    path = lf.save(tmp_path / "x.safetensors", lf.lora(lf.UNET_Q, width=320), lf.lora(lf.UNET_FF, width=1280),
                   metadata=metadata)
    assert read(path).family == family


@pytest.mark.parametrize(("width", "family"), [(768, "sd1"), (32, None)])
def test_the_shapes_win_over_the_metadata(tmp_path: Path, width: int, family: str | None) -> None:
    path = lf.save(tmp_path / "x.safetensors", lf.lora(lf.UNET_K, width=width),
                   metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    assert read(path).family == family


def test_the_file_name_never_names_the_family(tmp_path: Path) -> None:
    assert read(lf.save(tmp_path / "pixel_art_sdxl.safetensors", lf.lora(lf.UNET_K, width=768))).family == "sd1"


# ---------------------------------------------------------------------------------------------- modules
@pytest.mark.parametrize(("parts", "modules", "text_encoder", "unet"), [
    ([lf.lora(lf.UNET_K), lf.lora(lf.UNET_V), lf.lora(lf.TE_Q)], 3, True, True),
    ([lf.lora(lf.UNET_K), lf.lora(lf.UNET_V)], 2, False, True),
    ([lf.lora(lf.TE1_Q), lf.lora(lf.TE2_Q)], 2, True, False),
    ([lf.peft(lf.PEFT_TE_Q), lf.peft(lf.PEFT_UNET_K)], 2, True, True),
    ([lf.loha(lf.UNET_K), lf.loha(lf.TE_Q)], 2, True, True),
    ([lf.lokr(lf.UNET_K, rank=2)], 1, False, True),
])
def test_modules_are_counted_once_each_and_the_parts_they_patch_are_flagged(tmp_path: Path, parts, modules: int,
                                                                           text_encoder: bool, unet: bool) -> None:
    found = read(lf.save(tmp_path / "x.safetensors", *parts))
    assert (found.modules, found.text_encoder, found.unet) == (modules, text_encoder, unet)


# ---------------------------------------------------------------------------------------------- metadata
def test_the_kohya_metadata_is_kept_with_its_json_values_parsed(tmp_path: Path) -> None:
    buckets = {"buckets": {"0": {"resolution": [512, 512], "count": 40}}, "mean_img_ar_error": 0.0}
    metadata = {"ss_output_name": "pixel-art-v2", "ss_network_dim": "16", "ss_bucket_info": json.dumps(buckets),
                "ss_dataset_dirs": json.dumps({"10_pixel": {"n_repeats": 10, "img_count": 40}}),
                "ss_tags": json.dumps(["a", "b"]), "ss_note": "{not json", "ss_nan": "[1, NaN]"}
    found = read(lf.save(tmp_path / "pixel.safetensors", lf.lora(lf.UNET_K), metadata=metadata))
    assert found.alias == "pixel-art-v2" and found.name == "pixel"
    assert found.metadata["ss_network_dim"] == "16" and found.metadata["ss_bucket_info"] == buckets
    assert found.metadata["ss_dataset_dirs"] == {"10_pixel": {"n_repeats": 10, "img_count": 40}}
    assert found.metadata["ss_tags"] == ["a", "b"]
    assert found.metadata["ss_note"] == "{not json"  # not JSON: kept as the text it is
    assert found.metadata["ss_nan"] == "[1, NaN]"  # NaN is no JSON a client can read: kept as text


@pytest.mark.parametrize("output_name", [None, "", "   "])
def test_the_alias_is_the_stem_without_an_output_name(tmp_path: Path, output_name: str | None) -> None:
    metadata = {"ss_output_name": output_name} if output_name is not None else None
    assert read(lf.save(tmp_path / "detail.safetensors", lf.lora(lf.UNET_K), metadata=metadata)).alias == "detail"


def test_non_string_metadata_values_become_text(tmp_path: Path) -> None:
    header = {"__metadata__": {"ss_epoch": 3, "weird": float("nan")},
              "m.lora_down.weight": {"dtype": "F16", "shape": [4, 32], "data_offsets": [0, 256]},
              "m.lora_up.weight": {"dtype": "F16", "shape": [32, 4], "data_offsets": [256, 512]}}
    info = describe_header(header)
    assert info.metadata == {"ss_epoch": "3", "weird": "NaN"} and info.format == "lora"


def test_trigger_words_are_the_most_frequent_tags_summed_over_datasets(tmp_path: Path) -> None:
    frequency = {"10_pixel": {"pixel art": 30, "1girl": 12, "solo": 5, " outdoors ": 2},
                 "5_more": {"1girl": 20, "solo": 5, "bad": "many", "zero": 0}}
    frequency["5_more"] |= {f"tag{i:02d}": 1 for i in range(30)}
    found = read(lf.save(tmp_path / "p.safetensors", lf.lora(lf.UNET_K),
                         metadata={"ss_tag_frequency": json.dumps(frequency)}))
    assert found.trigger_words[:4] == ("1girl", "pixel art", "solo", "outdoors")  # 32, 30, 10, 2
    assert found.trigger_words[4:] == tuple(f"tag{i:02d}" for i in range(16))  # ties by name, 20 in all
    assert len(found.trigger_words) == 20


def test_no_tag_frequency_means_no_trigger_words(tmp_path: Path) -> None:
    for value in ("not json", json.dumps([1, 2]), json.dumps({"d": [1]})):
        found = read(lf.save(tmp_path / "p.safetensors", lf.lora(lf.UNET_K), metadata={"ss_tag_frequency": value}))
        assert found.trigger_words == () and found.usable


# ---------------------------------------------------------------------------------------------- unsupported
def _unsupported(path: Path) -> LoraFile:
    found = read(path)
    assert (found.usable, found.format, found.family, found.rank, found.modules) == (False, "", None, None, 0)
    assert (found.name, found.alias) == (path.stem, path.stem)
    return found


@pytest.mark.parametrize(("tensors", "words"), [
    ({"model.diffusion_model.input_blocks.0.0.weight": [4, 4]}, "is a model checkpoint, not a LoRA: put it in "
                                                               "models/Stable-diffusion"),
    ({"conditioner.embedders.0.transformer.x": [4]}, "put it in models/Stable-diffusion"),
    ({"encoder.down.0.block.0.conv1.weight": [4, 4]}, "is a VAE, not a LoRA: put it in models/VAE"),
    ({"decoder.up.0.block.0.conv1.weight": [4, 4]}, "put it in models/VAE"),
    ({"first_stage_model.decoder.conv_in.weight": [4, 4]}, "put it in models/VAE"),
    ({"emb_params": [2, 768]}, "is a textual-inversion embedding, not a LoRA: put it in embeddings"),
    ({"clip_l": [1, 768], "clip_g": [1, 1280]}, "put it in embeddings"),
    ({"model.0.weight": [4, 4], "model.1.sub.0.weight": [4]}, "is an upscaler model"),
    ({"conv_first.weight": [4, 4], "body.0.rdb1.conv1.weight": [4]}, "is an upscaler model"),
    ({"alpha": [], "weights": [3, 3], "zz": [1]}, "holds no LoRA tensors ('alpha', 'weights', 'zz')"),
    ({"m.alpha": []}, "holds no LoRA tensors"),  # an alpha alone is no module
])
def test_a_model_file_of_another_kind_says_where_it_belongs(tmp_path: Path, tensors, words: str) -> None:
    path = lf.save(tmp_path / "other.safetensors", {k: torch.zeros(shape) for k, shape in tensors.items()})
    assert words in _unsupported(path).reason


def test_an_embedding_pickle_is_named_as_one(tmp_path: Path) -> None:
    path = files.a1111_pt(tmp_path / "EasyNegative.pt", files.vectors(2, 768))
    assert "not a LoRA: put it in embeddings" in _unsupported(path).reason


@pytest.mark.parametrize(("make", "words"), [
    (lambda d: files.garbage(d / "junk.safetensors"), "not a safetensors file (its header claims"),
    (lambda d: files.garbage(d / "junk.safetensors"), "it is damaged or not a LoRA; download it again"),
    (lambda d: files.header_only(d / "none.safetensors", b"{}"), "holds no tensors at all: remove it from the LoRA"),
    (lambda d: files.garbage(d / "junk.pt"), "cannot be read as a PyTorch file"),
    (lambda d: files.header_only(d / "notjson.safetensors", b"{oops"), "not JSON"),
    (lambda d: files.header_only(d / "badshape.safetensors", b'{"a": {"dtype": "F16", "shape": [-1], '
                                                            b'"data_offsets": [0, 0]}}'), "damaged"),
    (lambda d: files._save(d / "list.pt", [1, 2]), "holds a list, not a dict of tensors"),  # type: ignore[arg-type]
    (lambda d: files._save(d / "notes.pt", {"a": 1}), "holds no LoRA tensors ('a')"),
])
def test_a_damaged_file_is_listed_with_the_reason(tmp_path: Path, make, words: str) -> None:
    assert words in _unsupported(make(tmp_path)).reason


def test_a_truncated_file_says_to_download_it_again(tmp_path: Path) -> None:
    path = lf.save(tmp_path / "cut.safetensors", lf.lora(lf.UNET_K, width=768))
    path.write_bytes(path.read_bytes()[:-100])
    reason = _unsupported(path).reason
    assert "truncated" in reason and "download it again" in reason


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".ckpt", ".bin"])
def test_an_empty_file_says_to_download_it_again(tmp_path: Path, suffix: str) -> None:
    (tmp_path / f"empty{suffix}").write_bytes(b"")
    assert _unsupported(tmp_path / f"empty{suffix}").reason == "the file is empty: download it again"


def test_a_broken_link_says_so(tmp_path: Path) -> None:
    (tmp_path / "gone.safetensors").symlink_to(tmp_path / "missing.safetensors")
    reason = _unsupported(tmp_path / "gone.safetensors").reason
    assert "cannot be read (FileNotFoundError" in reason and "link" in reason


# ---------------------------------------------------------------------------------------------- pickles
@pytest.mark.parametrize("suffix", [".pt", ".ckpt", ".bin"])
def test_a_pickled_lora_is_read_with_weights_only(tmp_path: Path, suffix: str) -> None:
    found = read(lf.save(tmp_path / f"old{suffix}", lf.loha(lf.UNET_K, rank=8, width=768), lf.loha(lf.TE_Q)))
    assert (found.format, found.family, found.rank, found.modules, found.usable) == ("loha", "sd1", 8, 2, True)
    assert found.metadata == {} and found.alias == "old"


def test_a_state_dict_wrapper_is_unwrapped(tmp_path: Path) -> None:
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": lf.lora(lf.UNET_K, width=1024), "epoch": 3}, path)
    assert (read(path).format, read(path).family) == ("lora", "sd2")


def test_a_legacy_pickle_that_cannot_be_memory_mapped_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save(lf.lora(lf.UNET_K, width=768), path, _use_new_zipfile_serialization=False)
    assert (read(path).format, read(path).family) == ("lora", "sd1")


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "trojan.pt"
    torch.save({**lf.lora(lf.UNET_K), "payload": files.RunsCode(marker)}, path)
    reason = _unsupported(path).reason
    assert "names posix.system" in reason and "use the .safetensors version of this LoRA" in reason
    assert not marker.exists()
