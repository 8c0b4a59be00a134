"""The prompt encoder: chunks of token ids and weights -> text-encoder embeddings, as A1111 builds them.

These tests use hand-made chunks on tiny random pipelines (the chunker's rules are ``test_prompts.py``'s).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from sdlocal.engine.conditioning import EMPTY_CHUNK, PromptEncoder, _ids_and_weights  # noqa: E402
from sdlocal.engine.networks.embeddings import Embedding  # noqa: E402
from sdlocal.engine.prompts import Chunk, EmbeddingUse  # noqa: E402
from sdlocal.engine.request import RequestError  # noqa: E402


@pytest.fixture(scope="module")
def loaded_models():
    """Tiny sd1, sd2 and sdxl pipelines, as a LoadedModel exposes them (pipe, family)."""
    from sdlocal.engine.loader import clip_skip_compat
    from sdlocal.engine.synthetic import build_tiny_pipeline

    models = {}
    for family in ("sd1", "sd2", "sdxl"):
        pipe = build_tiny_pipeline(family)
        clip_skip_compat(pipe)  # what the loader does, so diffusers' own clip-skip path runs for comparison
        models[family] = SimpleNamespace(pipe=pipe, family=family)
    return models


def plain_chunk(pipe, text: str, weight: float = 1.0) -> Chunk:
    ids = pipe.tokenizer(text, add_special_tokens=False).input_ids
    return Chunk(tokens=tuple(ids), weights=(weight,) * len(ids))


class FixedChunker:
    """A stand-in for prompts.Chunker: each text maps to the chunks a test gives it."""

    def __init__(self, table: dict[str, list[Chunk]]) -> None:
        self.table = table

    def chunks(self, text: str, field: str = "prompt"):
        if text == "too long":
            raise RequestError(field, text, "is 21 chunks of 75 tokens; at most 20")
        return self.table.get(text, [EMPTY_CHUNK]), [use.name for c in self.table.get(text, []) for use in c.embeddings]


# ----------------------------------------------------------------------------------------------- token ids
def test_each_chunk_is_start_tokens_end_then_the_tokenizers_padding(loaded_models):
    """SD 1.x pads with the end token; SD 2.x and SDXL's second tokenizer pad with "!" (id 0)."""
    chunk = Chunk(tokens=(320, 2368), weights=(1.3, 0.9))
    ids, weights = _ids_and_weights(loaded_models["sd1"].pipe.tokenizer, [chunk])
    assert ids.shape == (1, 77)
    assert ids[0, :4].tolist() == [49406, 320, 2368, 49407] and set(ids[0, 4:].tolist()) == {49407}
    assert weights[0, :4].tolist() == pytest.approx([1.0, 1.3, 0.9, 1.0]) and set(weights[0, 4:].tolist()) == {1.0}
    ids2, _ = _ids_and_weights(loaded_models["sd2"].pipe.tokenizer, [chunk])
    assert ids2[0, :4].tolist() == [49406, 320, 2368, 49407] and set(ids2[0, 4:].tolist()) == {0}
    ids_g, _ = _ids_and_weights(loaded_models["sdxl"].pipe.tokenizer_2, [chunk])
    assert set(ids_g[0, 4:].tolist()) == {0}


# ----------------------------------------------------------------------------------------------- same as diffusers
@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
@pytest.mark.parametrize("clip_skip", [1, 2])
def test_a_short_plain_prompt_encodes_exactly_as_diffusers_encode_prompt(loaded_models, family, clip_skip):
    """So images made before long prompts existed come out the same."""
    loaded = loaded_models[family]
    pipe = loaded.pipe
    text = "a red cube on a table"
    ours = PromptEncoder(loaded, clip_skip, "Original").encode_chunks([plain_chunk(pipe, text)])
    skip = clip_skip - 1 if clip_skip > 1 else None
    if family == "sdxl":
        theirs, _neg, pooled, _neg_pooled = pipe.encode_prompt(text, device="cpu", do_classifier_free_guidance=False,
                                                               clip_skip=skip)
        assert torch.equal(ours.pooled, pooled)
    else:
        theirs, _neg = pipe.encode_prompt(text, "cpu", 1, False, clip_skip=skip)
        assert ours.pooled is None
    assert ours.embeds.shape == theirs.shape == (1, 77, theirs.shape[-1])
    assert torch.allclose(ours.embeds, theirs, atol=1e-6, rtol=0)


def test_clip_skip_changes_the_embeddings(loaded_models):
    loaded = loaded_models["sd1"]
    chunk = plain_chunk(loaded.pipe, "a cat")
    one = PromptEncoder(loaded, 1, "Original").encode_chunks([chunk]).embeds
    two = PromptEncoder(loaded, 2, "Original").encode_chunks([chunk]).embeds
    assert not torch.allclose(one, two)


# ----------------------------------------------------------------------------------------------- chunks
@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_chunks_are_encoded_separately_and_joined_along_the_token_axis(loaded_models, family):
    loaded = loaded_models[family]
    encoder = PromptEncoder(loaded, 1, "Original")
    a, b = plain_chunk(loaded.pipe, "a"), plain_chunk(loaded.pipe, "b")
    both = encoder.encode_chunks([a, b])
    assert both.embeds.shape[1] == 154 and both.chunks == 2
    assert torch.allclose(both.embeds[:, :77], encoder.encode_chunks([a]).embeds, atol=1e-6, rtol=0)
    assert torch.allclose(both.embeds[:, 77:], encoder.encode_chunks([b]).embeds, atol=1e-6, rtol=0)
    if family == "sdxl":  # the pooled embedding is the first chunk's
        assert torch.allclose(both.pooled, encoder.encode_chunks([a]).pooled, atol=1e-6, rtol=0)
        assert not torch.allclose(both.pooled, encoder.encode_chunks([b]).pooled)


def test_a_full_chunk_of_75_tokens_fits_and_76_is_refused(loaded_models):
    loaded = loaded_models["sd1"]
    encoder = PromptEncoder(loaded, 1, "Original")
    assert encoder.encode_chunks([Chunk(tokens=(320,) * 75, weights=(1.0,) * 75)]).embeds.shape[1] == 77
    with pytest.raises(ValueError, match="at most 75 tokens"):
        encoder.encode_chunks([Chunk(tokens=(320,) * 76, weights=(1.0,) * 76)])


# ----------------------------------------------------------------------------------------------- emphasis
def _emphasised(loaded, mode: str, weight: float):
    return PromptEncoder(loaded, 1, mode).encode_chunks([plain_chunk(loaded.pipe, "a cat on a mat", weight)]).embeds


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_emphasis_modes(loaded_models, family):
    """Ignore drops the weights; No norm multiplies; Original multiplies then restores the chunk's mean."""
    loaded = loaded_models[family]
    plain = _emphasised(loaded, "Original", 1.0)
    assert torch.equal(_emphasised(loaded, "Ignore", 1.5), plain)
    no_norm = _emphasised(loaded, "No norm", 1.5)
    original = _emphasised(loaded, "Original", 1.5)
    assert not torch.allclose(no_norm, plain) and not torch.allclose(original, plain)
    assert not torch.allclose(original, no_norm)
    assert torch.allclose(original.mean(), plain.mean(), atol=1e-5)  # the mean is restored
    # No norm: each weighted token (positions 1..5 here) is exactly the unweighted one times its weight
    count = len(plain_chunk(loaded.pipe, "a cat on a mat").tokens)
    assert torch.allclose(no_norm[:, 1:1 + count], plain[:, 1:1 + count] * 1.5, atol=1e-6)
    assert torch.equal(no_norm[:, 0], plain[:, 0])


def test_a_weight_of_one_gives_the_plain_tensors_in_every_mode(loaded_models):
    loaded = loaded_models["sd1"]
    plain = _emphasised(loaded, "Ignore", 1.0)
    for mode in ("Original", "No norm"):
        assert torch.equal(_emphasised(loaded, mode, 1.0), plain)


def test_an_unknown_emphasis_mode_is_an_error_naming_the_field(loaded_models):
    with pytest.raises(RequestError) as info:
        PromptEncoder(loaded_models["sd1"], 1, "Louder")
    assert info.value.field == "emphasis" and "No norm" in str(info.value)


# ----------------------------------------------------------------------------------------------- embeddings
def _embedding(name: str, tensors: dict[int, object]) -> Embedding:
    first = next(iter(tensors.values()))
    widths = tuple(int(t.shape[1]) for t in tensors.values())
    return Embedding(name=name, path=Path(f"/nowhere/{name}.pt"), widths=widths, vectors=int(first.shape[0]),
                     _tensors=tensors)


def _with_embedding(pipe, vectors: int = 2):
    placeholder = pipe.tokenizer("cat", add_special_tokens=False).input_ids[0]
    tokens = (320, *([placeholder] * vectors), 267)  # "a <emb> ,"
    uses = (EmbeddingUse("emb", 1, vectors),)
    return Chunk(tokens=tokens, weights=(1.0,) * len(tokens), embeddings=uses), placeholder


def test_embedding_vectors_replace_the_token_embeddings_of_their_slots(loaded_models):
    """The text encoder is causal: positions before the slots are unchanged, the slots and after change; and
    vectors equal to the placeholder's own token embedding change nothing (they land exactly on the slots)."""
    loaded = loaded_models["sd1"]
    pipe = loaded.pipe
    chunk, placeholder = _with_embedding(pipe)
    table = pipe.text_encoder.get_input_embeddings().weight.detach()
    same = _embedding("emb", {0: table[placeholder].repeat(2, 1).clone()})
    other = _embedding("emb", {0: torch.randn(2, 32, generator=torch.Generator().manual_seed(3))})
    bare = Chunk(tokens=chunk.tokens, weights=chunk.weights)  # the placeholder tokens only
    plain = PromptEncoder(loaded, 1, "Original").encode_chunks([bare]).embeds
    assert torch.allclose(PromptEncoder(loaded, 1, "Original", {"emb": same}).encode_chunks([chunk]).embeds, plain,
                          atol=1e-6)
    placed = PromptEncoder(loaded, 1, "Original", {"emb": other}).encode_chunks([chunk]).embeds
    assert torch.allclose(placed[:, :2], plain[:, :2], atol=1e-6)  # start token and "a"
    assert not torch.allclose(placed[:, 2:4], plain[:, 2:4])
    # the hook is only there for that call
    assert torch.equal(PromptEncoder(loaded, 1, "Original").encode_chunks([bare]).embeds, plain)


def test_an_sdxl_embedding_puts_each_of_its_tensors_in_its_encoder(loaded_models):
    loaded = loaded_models["sdxl"]
    chunk, _ = _with_embedding(loaded.pipe)
    gen = torch.Generator().manual_seed(5)
    both = {0: torch.randn(2, 32, generator=gen), 1: torch.randn(2, 48, generator=gen)}
    plain = PromptEncoder(loaded, 1, "Original").encode_chunks([Chunk(tokens=chunk.tokens, weights=chunk.weights)])
    placed = PromptEncoder(loaded, 1, "Original", {"emb": _embedding("emb", both)}).encode_chunks([chunk])
    assert placed.embeds.shape == plain.embeds.shape == (1, 77, 80)
    assert not torch.allclose(placed.embeds[..., :32], plain.embeds[..., :32])  # clip_l part
    assert not torch.allclose(placed.embeds[..., 32:], plain.embeds[..., 32:])  # clip_g part
    assert not torch.allclose(placed.pooled, plain.pooled)


# ----------------------------------------------------------------------------------------------- pairs and cache
@pytest.mark.parametrize("long_side", ["prompt", "negative"])
def test_prompt_and_negative_are_padded_to_the_same_chunk_count_with_the_empty_prompt(loaded_models, long_side):
    loaded = loaded_models["sd1"]
    pipe = loaded.pipe
    table = {"long": [plain_chunk(pipe, "a"), plain_chunk(pipe, "b"), plain_chunk(pipe, "c")],
             "short": [plain_chunk(pipe, "d")]}
    encoder = PromptEncoder(loaded, 1, "Original", chunker=FixedChunker(table))
    prompt, negative = ("long", "short") if long_side == "prompt" else ("short", "long")
    cond, uncond = encoder.pair(prompt, negative)
    assert cond.embeds.shape == uncond.embeds.shape == (1, 231, 32)
    short = uncond if long_side == "prompt" else cond
    empty = encoder.encode_chunks([EMPTY_CHUNK]).embeds
    assert torch.equal(short.embeds[:, :77], encoder.encode("short").embeds)
    assert torch.equal(short.embeds[:, 77:154], empty) and torch.equal(short.embeds[:, 154:], empty)


def test_sdxl_empty_negative_prompt_is_zeros_when_the_model_says_so(loaded_models):
    loaded = loaded_models["sdxl"]
    assert loaded.pipe.config.force_zeros_for_empty_prompt
    table = {"cat": [plain_chunk(loaded.pipe, "cat")], "blurry": [plain_chunk(loaded.pipe, "blurry")]}
    encoder = PromptEncoder(loaded, 1, "Original", chunker=FixedChunker(table))
    cond, uncond = encoder.pair("cat", "")
    assert not uncond.embeds.any() and not uncond.pooled.any() and uncond.embeds.shape == cond.embeds.shape
    _, uncond = encoder.pair("cat", "blurry")
    assert uncond.embeds.any()


def test_each_distinct_text_is_encoded_once_per_request(loaded_models, monkeypatch):
    loaded = loaded_models["sd1"]
    encoder = PromptEncoder(loaded, 1, "Original", chunker=FixedChunker({"cat": [plain_chunk(loaded.pipe, "cat")]}))
    calls = []
    real = encoder.encode_chunks
    monkeypatch.setattr(encoder, "encode_chunks", lambda chunks: calls.append(1) or real(chunks))
    first = encoder.encode("cat")
    assert encoder.encode("cat") is first
    encoder.pair("cat", "")
    assert len(calls) == 2  # "cat" and ""


def test_a_too_long_text_is_a_request_error_naming_its_field(loaded_models):
    encoder = PromptEncoder(loaded_models["sd1"], 1, "Original", chunker=FixedChunker({}))
    with pytest.raises(RequestError, match="negative_prompt"):
        encoder.pair("cat", "too long")


def test_used_embeddings_are_listed_in_order_of_first_use(loaded_models):
    loaded = loaded_models["sd1"]
    use = lambda name: Chunk(tokens=(320,), weights=(1.0,), embeddings=(EmbeddingUse(name, 0, 1),))  # noqa: E731
    encoder = PromptEncoder(loaded, 1, "Original", chunker=FixedChunker({"p": [use("b"), use("a")], "n": [use("c")]}))
    encoder.chunks("p")
    encoder.chunks("n", "negative_prompt")
    encoder.chunks("p")
    assert encoder.used == ["b", "a", "c"]
