"""Prompts mean in a run what they mean in A1111: weights, BREAK, no 77-token limit, prompt editing, emphasis
modes and textual-inversion embeddings, end to end on the tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdlocal.engine import RequestError
from sdlocal.engine.conditioning import PromptEncoder
from sdlocal.engine.infotext import infotext_to_request_fields, parse_infotext
from sdlocal.engine.networks.embeddings import Embedding
from sdlocal.engine.request import RunControl

from .conftest import pixels

torch = pytest.importorskip("torch")

SDXL = "tiny-sdxl-diffusers"
INPAINTING = "tiny-sd1-inpainting"


def image(engine, request_for, **values):
    return pixels(engine.generate(request_for(**values)).images[0].image)


def same(a, b) -> bool:
    return bool(np.array_equal(a, b))


def long_prompt(words: int, change_at: int | None = None) -> str:
    """``words`` different words, one token each, with the word at token ``change_at`` swapped."""
    vocabulary = ["cat", "dog", "tree", "house", "red", "blue", "sky", "sea", "car", "road"]
    chosen = [vocabulary[i % len(vocabulary)] for i in range(words)]
    if change_at is not None:
        chosen[change_at] = "moon"
    return " ".join(chosen)


def run_with(engine, request, embeddings=None, on_progress=None):
    """What Engine.generate does, with textual-inversion embeddings passed to the run."""
    from sdlocal.engine.generate import run_generation

    entry = engine.find_model(request.model)
    loaded, _ = engine._load_entry(entry)
    scheduler = engine._scheduler_cache().get(loaded.key, request.sampler, request.schedule, loaded.scheduler_config)
    return run_generation(loaded, request, scheduler, RunControl(), entry.name, entry.short_hash, on_progress,
                          embeddings=embeddings)


def loaded_model(engine, name: str):
    return engine._load_entry(engine.find_model(name))[0]


# ----------------------------------------------------------------------------------------------- attention, length
@pytest.mark.parametrize("model", ["tiny-sd1-diffusers", SDXL])
def test_weight_one_is_the_plain_prompt(engine, request_for, model):
    assert same(image(engine, request_for, model=model, prompt="(cat:1.0)"),
                image(engine, request_for, model=model, prompt="cat"))


def test_brackets_are_weights_not_words(engine, request_for):
    assert not same(image(engine, request_for, prompt="(cat:1.5)"), image(engine, request_for, prompt="cat"))


@pytest.mark.parametrize("model", ["tiny-sd1-diffusers", SDXL])
def test_nothing_past_token_75_is_dropped(engine, request_for, model):
    """A change at token 100 (in the second chunk) changes the picture."""
    first = image(engine, request_for, model=model, prompt=long_prompt(120))
    changed = image(engine, request_for, model=model, prompt=long_prompt(120, change_at=100))
    assert not same(first, changed)


def test_break_starts_a_new_chunk(engine, request_for):
    encoder = PromptEncoder(loaded_model(engine, "tiny-sd1-diffusers"), 1, "Original")
    assert encoder.encode("a BREAK b").embeds.shape[1] == 154
    assert encoder.encode("a b").embeds.shape[1] == 77
    assert not same(image(engine, request_for, prompt="a BREAK b"), image(engine, request_for, prompt="a b"))


@pytest.mark.parametrize("model", ["tiny-sd1-diffusers", SDXL])
@pytest.mark.parametrize("longer", ["prompt", "negative_prompt"])
def test_prompt_and_negative_of_different_chunk_counts(engine, request_for, model, longer):
    values = {"prompt": "cat", "negative_prompt": "blurry", longer: long_prompt(160)}  # 3 chunks against 1
    result = engine.generate(request_for(model=model, **values))
    assert len(result.images) == 1
    assert not same(pixels(result.images[0].image), image(engine, request_for, model=model))


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_a_prompt_over_20_chunks_is_refused_before_any_step(engine, request_for, field):
    steps = []
    with pytest.raises(RequestError) as caught:
        engine.generate(request_for(**{field: long_prompt(21 * 75)}), on_progress=steps.append)
    assert caught.value.field == field and "20" in caught.value.allowed
    assert steps == []


def test_a_prompt_of_20_chunks_works(engine, request_for):
    assert len(engine.generate(request_for(prompt=long_prompt(20 * 75))).images) == 1


# ----------------------------------------------------------------------------------------------- prompt editing
@pytest.mark.parametrize("model", ["tiny-sd1-diffusers", SDXL, INPAINTING])
def test_prompt_editing_switches_the_conditioning_during_the_run(engine, request_for, model):
    """[cat:dog:0.5] at 4 steps: cat for steps 1-3, dog for the last; [cat:dog:0.0] is dog from the start."""
    cat = image(engine, request_for, model=model, prompt="cat", steps=4)
    dog = image(engine, request_for, model=model, prompt="dog", steps=4)
    edited = image(engine, request_for, model=model, prompt="[cat:dog:0.5]", steps=4)
    assert not same(edited, cat) and not same(edited, dog)
    assert same(image(engine, request_for, model=model, prompt="[cat:dog:0.0]", steps=4), dog)


def test_prompt_editing_in_the_negative_prompt(engine, request_for):
    plain = image(engine, request_for, negative_prompt="blurry", steps=4)
    edited = image(engine, request_for, negative_prompt="[blurry:ugly:2]", steps=4)
    assert not same(edited, plain)


def test_alternation_runs_and_differs_from_either_word(engine, request_for):
    alternating = image(engine, request_for, prompt="[cat|dog]", steps=4)
    assert not same(alternating, image(engine, request_for, prompt="cat", steps=4))
    assert not same(alternating, image(engine, request_for, prompt="dog", steps=4))


def test_each_distinct_text_is_encoded_once_per_request_never_per_step(engine, request_for, monkeypatch):
    calls = []
    real = PromptEncoder.encode_chunks
    monkeypatch.setattr(PromptEncoder, "encode_chunks", lambda self, chunks: calls.append(chunks) or real(self, chunks))
    engine.generate(request_for(prompt="[cat|dog]", negative_prompt="blurry", steps=6, batch_count=2))
    assert len(calls) == 3  # "cat", "dog", "blurry"


@pytest.mark.parametrize("model", ["tiny-sd1-diffusers", SDXL])
@pytest.mark.parametrize("masked", [False, True])
def test_img2img_and_inpainting_with_a_two_chunk_and_an_edited_prompt(engine, request_for, model, masked):
    source = {"images": [_init()], "denoising_strength": 0.75}
    if masked:
        source["mask"] = {"image": _mask()}
    two_chunks = engine.generate(request_for(model=model, prompt="cat BREAK dog", steps=4, source=source))
    assert len(two_chunks.images) == 1
    edited = image(engine, request_for, model=model, prompt="[cat:dog:0.5]", steps=8, source=source)
    assert not same(edited, image(engine, request_for, model=model, prompt="cat", steps=8, source=source))


def _init():
    x = np.linspace(0, 255, 64, dtype=np.uint8)[None, :]
    rgb = np.stack([np.broadcast_to(x, (64, 64)), np.full((64, 64), 60, np.uint8), np.broadcast_to(x.T, (64, 64))], -1)
    return Image.fromarray(np.ascontiguousarray(rgb), "RGB")


def _mask():
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    return mask


# ----------------------------------------------------------------------------------------------- emphasis modes
def test_emphasis_modes(engine, request_for):
    plain = image(engine, request_for, prompt="a cat")
    assert same(image(engine, request_for, prompt="a (cat:1.5)", emphasis="Ignore"), plain)
    original = image(engine, request_for, prompt="a (cat:1.5)", emphasis="Original")
    no_norm = image(engine, request_for, prompt="a (cat:1.5)", emphasis="No norm")
    assert not same(original, plain) and not same(no_norm, plain) and not same(original, no_norm)


# ----------------------------------------------------------------------------------------------- embeddings
class HashedEmbedding(Embedding):
    """A hand-built embedding with a fixed hash, as discovery's would have from its file."""

    shorthash = "0123456789ab"


def _embedding(name: str, widths: tuple[int, ...], vectors: int = 2, seed: int = 7) -> Embedding:
    generator = torch.Generator().manual_seed(seed)
    tensors = {i: torch.randn(vectors, width, generator=generator) * 0.5 for i, width in enumerate(widths)}
    return HashedEmbedding(name=name, path=Path(f"/nowhere/{name}.pt"), widths=widths, vectors=vectors,
                           _tensors=tensors)


@pytest.mark.parametrize(("model", "widths"), [("tiny-sd1-diffusers", (32,)), (SDXL, (32, 48))])
def test_an_embedding_changes_the_image_only_where_its_trigger_is_used(engine, request_for, model, widths):
    embeddings = {"mystyle": _embedding("mystyle", widths)}
    with_trigger = request_for(model=model, prompt="a photo of mystyle")
    without = request_for(model=model, prompt="a photo of a cat")

    def first(request, embeddings=None):
        return pixels(run_with(engine, request, embeddings).images[0].image)

    assert not same(first(with_trigger, embeddings), first(with_trigger))
    assert same(first(without, embeddings), first(without))


def test_ti_hashes_and_emphasis_in_the_infotext_and_read_back(engine, request_for):
    embeddings = {"easyneg": _embedding("easyneg", (32,)), "mystyle": _embedding("mystyle", (32,), seed=8),
                  "unused": _embedding("unused", (32,), seed=9)}
    request = request_for(prompt="[mystyle:a cat:2]", negative_prompt="easyneg, mystyle", emphasis="No norm")
    text = run_with(engine, request, embeddings).images[0].infotext
    assert 'TI hashes: "mystyle: 0123456789ab, easyneg: 0123456789ab"' in text
    assert "Emphasis: No norm" in text
    params = parse_infotext(text)
    assert params["TI hashes"] == "mystyle: 0123456789ab, easyneg: 0123456789ab"
    assert infotext_to_request_fields(params)["emphasis"] == "No norm"
    plain = run_with(engine, request_for(), embeddings).images[0].infotext
    assert "TI hashes" not in plain and "Emphasis" not in plain
