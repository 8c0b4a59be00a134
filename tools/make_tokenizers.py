"""Regenerate the bundled CLIP tokenizers from the real BPE vocabulary, offline once the wheel is here.

Stable Diffusion's text encoders (OpenAI CLIP ViT-L/14 for SD 1.x and SDXL, OpenCLIP ViT-H and bigG for SD 2.x
and SDXL's second encoder) all use one byte-level BPE vocabulary of 49,408 tokens. It is published, MIT-licensed,
as ``open_clip/bpe_simple_vocab_16e6.txt.gz`` inside the ``open_clip_torch`` wheel; we read that file from the
wheel (never installing it: it pulls torchvision and timm) and write Hugging Face ``vocab.json``/``merges.txt``
folders, so loading any model needs no download. SD 1.x pads with ``<|endoftext|>``; SD 2.x and SDXL's second
tokenizer pad with ``!`` (token 0), as their text encoders were trained.

    python tools/make_tokenizers.py                  # pip download open_clip_torch into a temp dir, then write
    python tools/make_tokenizers.py --wheel X.whl    # use a wheel already on disk

Afterwards run ``pytest tests/engine/test_tokenizers.py``: it checks known token ids.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VOCAB_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
CONFIGS = Path(__file__).resolve().parent.parent / "sdlocal" / "engine" / "configs"
# (family folder, tokenizer subfolder, pad token)
TARGETS = [
    ("sd1", "tokenizer", "<|endoftext|>"),
    ("sd2", "tokenizer", "!"),
    ("sdxl", "tokenizer", "<|endoftext|>"),
    ("sdxl", "tokenizer_2", "!"),
]
MERGE_COUNT = 49152 - 256 - 2  # CLIP keeps the first 48,894 merges of the file


def byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-level alphabet, in vocabulary order: each of the 256 bytes as a printable character.

    Printable Latin-1 bytes stand for themselves and come first (that order fixes the token ids); the other
    bytes follow, shifted past 255 in byte order, so no byte maps to whitespace or a control character.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    others = [b for b in range(256) if b not in set(printable)]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def build_vocab(bpe_text: str) -> tuple[dict[str, int], list[str]]:
    """Token -> id in CLIP's order: bytes, bytes with end-of-word, merges, then the two special tokens."""
    merges = bpe_text.split("\n")[1 : MERGE_COUNT + 1]  # line 0 is a version header
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, merges


def tokenizer_config(pad: str) -> dict:
    return {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad,
        "clean_up_tokenization_spaces": True,
    }


def write_tokenizer(folder: Path, vocab: dict[str, int], merges: list[str], pad: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("tokenizer.json", "special_tokens_map.json"):
        (folder / stale).unlink(missing_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(pad), indent=2) + "\n",
                                                  encoding="utf-8")


def read_bpe(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive, archive.open(VOCAB_MEMBER) as fh:
        return gzip.decompress(fh.read()).decode("utf-8")


def download_wheel(dest: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest),
                    "open_clip_torch"], check=True)
    return next(dest.glob("open_clip_torch-*.whl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, help="an open_clip_torch wheel already downloaded")
    parser.add_argument("--out", type=Path, default=CONFIGS, help="the configs folder (default: the bundled one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        vocab, merges = build_vocab(read_bpe(wheel))
    if len(vocab) != 49408:
        print(f"unexpected vocabulary size {len(vocab)} (CLIP has 49408): is this the right wheel?", file=sys.stderr)
        return 1
    for family, sub, pad in TARGETS:
        write_tokenizer(args.out / family / sub, vocab, merges, pad)
        print(f"wrote {args.out / family / sub} (pad {pad!r})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
