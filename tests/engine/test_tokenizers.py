"""The bundled tokenizers are the real CLIP vocabulary: known ids, the right padding per family, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdlocal.engine.loader import BUNDLED_CONFIGS

TOKENIZERS = [("sd1", "tokenizer", "<|endoftext|>"), ("sd2", "tokenizer", "!"),
              ("sdxl", "tokenizer", "<|endoftext|>"), ("sdxl", "tokenizer_2", "!")]


def _load(family: str, sub: str):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(BUNDLED_CONFIGS / family / sub), local_files_only=True)


@pytest.mark.parametrize(("family", "sub", "pad"), TOKENIZERS)
def test_known_token_ids(family: str, sub: str, pad: str, no_network) -> None:
    tokenizer = _load(family, sub)
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    # Byte-level fallback, lower-casing and end-of-word merges behave as CLIP's own tokenizer.
    assert tokenizer("A PHOTO of a Cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer.convert_ids_to_tokens([320, 2368]) == ["a</w>", "cat</w>"]
    ids = tokenizer("café, 東京!").input_ids  # bytes outside the merges round-trip through the byte alphabet
    assert tokenizer.decode(ids[1:-1]).replace(" ", "") == "café,東京!"
    assert tokenizer.model_max_length == 77
    assert tokenizer.pad_token == pad
    padded = tokenizer("a cat", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[-1] == tokenizer.convert_tokens_to_ids(pad)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_every_component_of_the_bundled_folder_is_there(family: str) -> None:
    """A model_index.json naming a component whose folder is missing makes from_single_file fail."""
    folder = BUNDLED_CONFIGS / family
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    for name, value in index.items():
        if isinstance(value, list) and value[0] is not None:
            assert (folder / name).is_dir(), f"{family}: {name} is listed but missing"
            assert any((folder / name).iterdir())
    assert not list(Path(folder).rglob("*.safetensors")), "bundled configs must hold no weights"


def test_regenerating_gives_the_same_files(tmp_path: Path) -> None:
    """tools/make_tokenizers.py rebuilds the committed files exactly from the vocabulary it converts."""
    import gzip
    import importlib.util
    import zipfile

    spec = importlib.util.spec_from_file_location("make_tokenizers", BUNDLED_CONFIGS.parents[2] / "tools" /
                                                  "make_tokenizers.py")
    tool = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(tool)
    # Rebuild the BPE source from the committed merges (the wheel is not needed to test the conversion).
    merges = (BUNDLED_CONFIGS / "sd1" / "tokenizer" / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    wheel = tmp_path / "open_clip_torch-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(tool.VOCAB_MEMBER, gzip.compress(("bpe\n" + "\n".join(merges) + "\n").encode()))
    assert tool.main(["--wheel", str(wheel), "--out", str(tmp_path / "out")]) == 0
    for family, sub, _pad in TOKENIZERS:
        for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
            assert (tmp_path / "out" / family / sub / name).read_bytes() == \
                (BUNDLED_CONFIGS / family / sub / name).read_bytes(), f"{family}/{sub}/{name}"
