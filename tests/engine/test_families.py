"""Recognising a model from its header alone: the family rules on real key names and shapes, other kinds of
file named with where they belong, and damaged or hostile files turned into reasons, never exceptions."""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path

import pytest

from sdlocal.engine.families import (
    detect_file,
    detect_folder,
    detect_from_header,
    detect_from_shapes,
    family_of_folder,
    prediction_from_sidecars,
    unet_in_channels,
)
from sdlocal.engine.headers import read_ckpt_shapes, read_safetensors_header
from tests.engine.stripped import HEADERS, header_of, write_diffusers_folder, write_safetensors

SUPPORTED = {
    "sd1": ("sd1", False),
    "sd2": ("sd2", False),
    "sdxl": ("sdxl", False),
    "sd1-inpainting": ("sd1", True),
    "sdxl-inpainting": ("sdxl", True),
}
REFUSED = {
    "refiner": ("refiner", "SDXL refiner"),
    "sd3": ("sd3", "Stable Diffusion 3"),
    "flux": ("flux", "Flux"),
    "flux-prefixed": ("flux", "Flux"),
    "lora-kohya": ("lora", "belongs in models/Lora"),
    "lora-peft": ("lora", "belongs in models/Lora"),
    "vae": ("vae", "belongs in models/VAE"),
    "embedding-sd1": ("embedding", "belongs in embeddings/"),
    "embedding-sdxl": ("embedding", "belongs in embeddings/"),
    "controlnet": ("controlnet", "belongs in models/ControlNet"),
    "diffusers-unet": ("unet-only", "UNet alone"),
    "unknown-unet": ("unknown", "unknown architecture"),
    "pix2pix": ("channels", "8 input channels"),
}


# ------------------------------------------------------------------------------------------ header rules
@pytest.mark.parametrize("kind", list(SUPPORTED))
def test_supported_families_from_real_shapes(kind: str) -> None:
    header, _ = header_of(HEADERS[kind])
    found = detect_from_header(header)
    assert (found.family, found.inpainting, found.supported, found.reason) == (*SUPPORTED[kind], True, "")


@pytest.mark.parametrize("kind", list(REFUSED))
def test_other_kinds_are_refused_with_a_specific_reason(kind: str) -> None:
    header, _ = header_of(HEADERS[kind])
    found = detect_from_header(header)
    expected_kind, words = REFUSED[kind]
    assert not found.supported and found.kind == expected_kind
    assert words in found.reason, found.reason


def test_the_cross_attention_width_decides_not_the_names_around_it() -> None:
    # SD 1.x also has input_blocks.4.1 (640 x 768): the SDXL rule must not see it as a refiner or SDXL.
    shapes = dict(HEADERS["sd1"])
    shapes["model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"] = [320, 1024]
    assert detect_from_shapes(shapes).family == "sd2"
    shapes["model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"] = [320, 512]
    found = detect_from_shapes(shapes)
    assert not found.supported and "512" in found.reason


def test_empty_header_is_not_a_model() -> None:
    found = detect_from_header({"__metadata__": {"format": "pt"}})
    assert not found.supported and "no tensors" in found.reason


# ------------------------------------------------------------------------------------------ files on disk
def test_stripped_real_size_files_on_disk(tmp_path: Path) -> None:
    """Real shapes with the data a sparse hole: valid files, recognised from the header alone."""
    for kind, (family, inpainting) in SUPPORTED.items():
        path = write_safetensors(tmp_path / f"{kind}.safetensors", HEADERS[kind])
        found = detect_file(path)
        assert (found.family, found.inpainting, found.supported) == (family, inpainting, True), kind
    lora = detect_file(write_safetensors(tmp_path / "style.safetensors", HEADERS["lora-kohya"]))
    assert not lora.supported and "models/Lora" in lora.reason


def test_a_tiny_valid_file_is_read(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "tiny.safetensors", {"a": [2, 3], "b": [4]}, fill=b"\x01\x02")
    header = read_safetensors_header(path)
    assert header["a"]["shape"] == [2, 3] and header["b"]["data_offsets"] == [12, 20]
    assert path.stat().st_size == 8 + struct.unpack("<Q", path.read_bytes()[:8])[0] + 20


def test_header_only_file_claiming_real_shapes_is_truncated(tmp_path: Path) -> None:
    found = detect_file(write_safetensors(tmp_path / "sd15.safetensors", HEADERS["sd1"], header_only=True))
    assert not found.supported and "truncated" in found.reason and "interrupted download" in found.reason


def test_file_cut_short_is_truncated(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "cut.safetensors", {"a": [64, 64]}, fill=b"\x00\x3c")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    assert "truncated" in detect_file(path).reason
    path.write_bytes(data[:20])  # cut inside the header itself
    assert "truncated" in detect_file(path).reason


@pytest.mark.parametrize("content, words", [
    (b"", "empty"),
    (b"\x01\x02\x03", "too short"),
    (b"this is not a model, just some text that happens to end in .safetensors", "claims"),
    (struct.pack("<Q", 12) + b"not json!!!!", "not JSON"),
    (struct.pack("<Q", 4) + b"[1] ", "not a JSON object"),
    (struct.pack("<Q", 40) + json.dumps({"x": {"dtype": "F16", "shape": "big"}}).encode().ljust(40), "damaged"),
])
def test_garbage_safetensors_give_reasons(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    found = detect_file(path)
    assert not found.supported and found.kind == "unreadable" and words in found.reason, found.reason


def test_an_absurd_header_size_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    found = detect_file(path)
    assert not found.supported and "not a safetensors file" in found.reason


def test_unreadable_file_is_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    path = write_safetensors(tmp_path / "locked.safetensors", HEADERS["sd1"])
    real_open = builtins.open

    def deny(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    found = detect_file(path)
    assert not found.supported and "permission denied" in found.reason


# ------------------------------------------------------------------------------------------ .ckpt without torch
def _torch_save(path: Path, obj: object) -> Path:
    import torch

    torch.save(obj, path)
    return path


def _ldm_state(shapes: dict[str, list[int]]) -> dict:
    import torch

    return {name: torch.zeros(shape, dtype=torch.float16) for name, shape in shapes.items()}


def test_ckpt_shapes_are_read_without_torch_objects(tmp_path: Path) -> None:
    import collections

    import torch

    state = collections.OrderedDict(a=torch.zeros(2, 3), b=torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16)),
                                    c=torch.zeros(5, dtype=torch.int64)[1:3])
    path = _torch_save(tmp_path / "m.ckpt", {"state_dict": state, "global_step": 7, "epoch": 1})
    assert read_ckpt_shapes(path) == {"a": [2, 3], "b": [4], "c": [2]}
    bare = _torch_save(tmp_path / "bare.ckpt", dict(state))  # no state_dict wrapper
    assert read_ckpt_shapes(bare) == {"a": [2, 3], "b": [4], "c": [2]}


def test_ckpt_families_from_real_key_names(tmp_path: Path) -> None:
    shapes = {k: v for k, v in HEADERS["sd1-inpainting"].items() if "transformer_blocks" in k or "input_blocks.0" in k}
    path = _torch_save(tmp_path / "inpaint.ckpt", {"state_dict": _ldm_state(shapes)})
    found = detect_file(path)
    assert (found.family, found.inpainting, found.supported) == ("sd1", True, True)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, (f"touch {self.marker}",))


def test_ckpt_with_code_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "pwned"
    path = _torch_save(tmp_path / "evil.ckpt", {"state_dict": {"x": torch.zeros(1)}, "payload": _Payload(marker)})
    found = detect_file(path)
    assert not found.supported and "contains code, refused" in found.reason and "system" in found.reason
    assert not marker.exists()


def test_legacy_ckpt_is_read_too(tmp_path: Path) -> None:
    import torch

    shapes = {k: v for k, v in HEADERS["sd2"].items() if "to_k" in k}
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": _ldm_state(shapes)}, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    found = detect_file(path)
    assert (found.family, found.supported) == ("sd2", True), found.reason
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    assert "truncated" in detect_file(path).reason


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(b"hello, world"), "neither a zip nor a pickle"),
    (lambda p: p.write_bytes(pickle.dumps({"a": 1})), "not one torch wrote"),
    (lambda p: zipfile.ZipFile(p, "w").writestr("x/readme.txt", "hi"), "without data.pkl"),
])
def test_garbage_ckpt_give_reasons(tmp_path: Path, make, words: str) -> None:
    path = tmp_path / "bad.ckpt"
    make(path)
    found = detect_file(path)
    assert not found.supported and words in found.reason, found.reason


def test_truncated_and_damaged_ckpt(tmp_path: Path) -> None:
    shapes = {k: v for k, v in HEADERS["sd1"].items() if "to_k" in k}
    path = _torch_save(tmp_path / "m.ckpt", {"state_dict": _ldm_state(shapes)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    assert "truncated" in detect_file(path).reason
    # a zip whose data file for one tensor is missing: the archive opens, the weights are not all there
    _torch_save(tmp_path / "full.ckpt", {"state_dict": _ldm_state(shapes)})
    with zipfile.ZipFile(tmp_path / "full.ckpt") as source, zipfile.ZipFile(tmp_path / "m2.ckpt", "w") as out:
        for info in source.infolist():
            if not info.filename.endswith("data/0"):
                out.writestr(info, source.read(info))
    found = detect_file(tmp_path / "m2.ckpt")
    assert not found.supported and "missing or short" in found.reason


def test_a_pickle_that_is_not_a_state_dict(tmp_path: Path) -> None:
    path = _torch_save(tmp_path / "list.ckpt", [1, 2, 3])
    found = detect_file(path)
    assert not found.supported and "no state dict" in found.reason


# ------------------------------------------------------------------------------------------ folders
def test_diffusers_folders_by_their_configs(tmp_path: Path) -> None:
    cases = {
        "sd15": ("StableDiffusionPipeline", 768, 4, ("sd1", False)),
        "sd21": ("StableDiffusionPipeline", 1024, 4, ("sd2", False)),
        "xl": ("StableDiffusionXLPipeline", 2048, 4, ("sdxl", False)),
        "xl-inpaint": ("StableDiffusionXLInpaintPipeline", 2048, 9, ("sdxl", True)),
        "sd-inpaint": ("StableDiffusionInpaintPipeline", 768, 9, ("sd1", True)),
    }
    for name, (pipeline, width, channels, expected) in cases.items():
        folder = write_diffusers_folder(tmp_path / name, pipeline, width, channels)
        found = detect_folder(folder)
        assert (found.family, found.inpainting, found.supported) == (*expected, True), name
        assert family_of_folder(folder) == expected[0] and unet_in_channels(folder) == channels
    refiner = detect_folder(write_diffusers_folder(tmp_path / "refiner", "StableDiffusionXLImg2ImgPipeline", 1280))
    assert not refiner.supported and "refiner" in refiner.reason
    sd3 = detect_folder(write_diffusers_folder(tmp_path / "sd3", "StableDiffusion3Pipeline", 4096))
    assert not sd3.supported and "Stable Diffusion 3" in sd3.reason
    other = detect_folder(write_diffusers_folder(tmp_path / "k", "KandinskyV22Pipeline", 768))
    assert not other.supported and "KandinskyV22Pipeline" in other.reason


def test_diffusers_folder_without_unet_weights_is_incomplete(tmp_path: Path) -> None:
    folder = write_diffusers_folder(tmp_path / "half", weights=None)
    found = detect_folder(folder)
    assert not found.supported and "incomplete" in found.reason
    assert detect_folder(folder, need_weights=False).supported  # a single file's config sidecar has no weights
    (folder / "model_index.json").write_text("{", encoding="utf-8")
    assert "model_index.json cannot be read" in detect_folder(folder).reason


# ------------------------------------------------------------------------------------------ prediction type
def test_prediction_type_from_sidecars(tmp_path: Path) -> None:
    model = tmp_path / "v2-1_768.safetensors"
    assert prediction_from_sidecars(model) is None
    (tmp_path / "v2-1_768.yaml").write_text('model:\n  params:\n    parameterization: "v"\n', encoding="utf-8")
    assert prediction_from_sidecars(model) == "v_prediction"
    (tmp_path / "v2-1_768.yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n", encoding="utf-8")
    assert prediction_from_sidecars(model) == "epsilon"
    (tmp_path / "v2-1_768.yaml").unlink()
    (tmp_path / "v2-1_768.json").write_text(json.dumps({"prediction_type": "v_prediction"}), encoding="utf-8")
    assert prediction_from_sidecars(model) == "v_prediction"
    (tmp_path / "v2-1_768.json").write_text(json.dumps({"description": "user notes"}), encoding="utf-8")
    assert prediction_from_sidecars(model) is None  # A1111's user-metadata json says nothing about prediction
    (tmp_path / "v2-1_768.yaml").write_text("model: [unclosed", encoding="utf-8")
    assert prediction_from_sidecars(model) is None  # a broken yaml is a warning, not a crash
