"""Prompt chunks -> the text encoders' embeddings, as A1111 makes them (the torch side of ``prompts.py``).

Each chunk of up to 75 tokens is encoded on its own as 77 ids: the start token, the chunk, the end token, then
that tokenizer's padding (SD 1.x pads with the end token, SD 2.x and SDXL's second tokenizer with "!" = id 0).
Clip skip and emphasis apply per chunk; the chunks' outputs are joined along the token axis, so a prompt of n
chunks is [1, 77 x n, width] and nothing past token 75 is dropped. SDXL runs both encoders on the same ids,
joins their outputs along the feature axis, and takes the pooled embedding from the first chunk, as A1111
and Forge do.

A short plain prompt gives exactly what ``pipe.encode_prompt`` gives for the positive prompt (same ids, same
layers), so images made before long prompts existed come out the same.

Textual-inversion vectors are put in place of the token embeddings of their slots by a forward hook on the
encoder's token-embedding module, registered for that one call: transformers' ``CLIPTextModel`` takes only
``input_ids`` (it also finds the end token for pooling from them), so ``inputs_embeds`` cannot be passed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sdlocal.engine.prompts import CHUNK_TOKENS, Chunk
from sdlocal.engine.request import EMPHASIS_MODES, RequestError

EMPTY_CHUNK = Chunk(tokens=(), weights=())


@dataclass(frozen=True)
class Conditioning:
    """One text's embeddings: ``embeds`` [1, 77 x chunks, width]; ``pooled`` [1, width] for SDXL, else None."""

    embeds: Any
    pooled: Any | None
    chunks: int


class PromptEncoder:
    """Encodes a request's prompt texts with a loaded model's text encoder(s), each distinct text once.

    One instance serves one request: the cache is keyed by the text alone, since clip skip, emphasis and the
    embeddings are fixed for the request.
    """

    def __init__(self, loaded: Any, clip_skip: int, emphasis: str, embeddings: Mapping[str, Any] | None = None,
                 chunker: Any = None) -> None:
        if emphasis not in EMPHASIS_MODES:
            raise RequestError("emphasis", emphasis, f"use one of {', '.join(EMPHASIS_MODES)}")
        self.loaded = loaded
        self.pipe = loaded.pipe
        self.sdxl = loaded.family == "sdxl"
        self.clip_skip = max(1, int(clip_skip))
        self.emphasis = emphasis
        self.embeddings = dict(embeddings or {})
        self._chunker: Any = chunker  # None: made from the pipe's tokenizer when first needed
        self._chunks: dict[str, tuple[list[Chunk], list[str]]] = {}
        self._encoded: dict[str, Conditioning] = {}
        self.used: list[str] = []  # embeddings used by any text chunked so far, in order of first use

    # ---------------------------------------------------------------------------------------------- chunks
    def chunker(self) -> Any:
        """A Chunker over the pipe's (first) tokenizer; SDXL's second tokenizer gives the same ids."""
        if self._chunker is None:
            from sdlocal.engine.prompts import Chunker

            tokenizer = self.pipe.tokenizer
            comma = tokenizer(",", add_special_tokens=False, verbose=False).input_ids[-1]
            vectors = {name: int(embedding.vectors) for name, embedding in self.embeddings.items()}
            self._chunker = Chunker(self._tokenize, comma, vectors)
        return self._chunker

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        # verbose=False: a long prompt is chunked here, not truncated, so "longer than 77" warnings are noise.
        return self.pipe.tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False).input_ids

    def chunks(self, text: str, field: str = "prompt") -> list[Chunk]:
        """The text's chunks; too long a text raises the Chunker's RequestError naming ``field``."""
        cached = self._chunks.get(text)
        if cached is None:
            cached = self.chunker().chunks(text, field)
            self._chunks[text] = cached
        for name in cached[1]:
            if name not in self.used:
                self.used.append(name)
        return cached[0]

    # ---------------------------------------------------------------------------------------------- encoding
    def encode(self, text: str, field: str = "prompt") -> Conditioning:
        """The embeddings of ``text`` (cached for this request)."""
        cached = self._encoded.get(text)
        if cached is None:
            cached = self.encode_chunks(self.chunks(text, field))
            self._encoded[text] = cached
        return cached

    def encode_chunks(self, chunks: list[Chunk]) -> Conditioning:
        """Chunks -> embeddings: every chunk in one batch per encoder, then joined along the token axis."""
        import torch

        if not chunks:
            chunks = [EMPTY_CHUNK]
        pipe = self.pipe
        device = pipe._execution_device
        if not self.sdxl:
            z, _ = self._run_encoder(0, pipe.tokenizer, pipe.text_encoder, chunks, pooled=False)
            dtype = pipe.text_encoder.dtype
            pooled = None
        else:
            z1, _ = self._run_encoder(0, pipe.tokenizer, pipe.text_encoder, chunks, pooled=False)
            z2, pooled = self._run_encoder(1, pipe.tokenizer_2, pipe.text_encoder_2, chunks, pooled=True)
            dtype = pipe.text_encoder_2.dtype
            z = torch.cat([z1.to(z2.device), z2], dim=-1)
            pooled = pooled.to(device=device, dtype=dtype)
        z = z.reshape(1, -1, z.shape[-1]).to(device=device, dtype=dtype)
        return Conditioning(embeds=z, pooled=pooled, chunks=len(chunks))

    def _run_encoder(self, index: int, tokenizer: Any, encoder: Any, chunks: list[Chunk], pooled: bool
                     ) -> tuple[Any, Any]:
        """One encoder over all chunks: its clip-skipped, emphasised output [n, 77, width] (and pooled)."""
        import torch

        ids, weights = _ids_and_weights(tokenizer, chunks)
        replacements = self._replacements(index, chunks)
        with torch.no_grad(), _vectors_placed(encoder, replacements):
            out = encoder(ids.to(self.pipe._execution_device), output_hidden_states=True)
            z = self._skip(out, encoder)
            z = _emphasis(z, weights, self.emphasis)
        return z, (out.text_embeds[:1] if pooled else None)

    def _skip(self, out: Any, encoder: Any) -> Any:
        """Clip skip as diffusers' ``encode_prompt``: SD 1.x/2.x the k-th layer from the end through the final
        norm (k = 1: the last hidden state); SDXL one layer earlier than k, without the norm."""
        k = self.clip_skip
        if self.sdxl:
            return out.hidden_states[-(k + 1)]
        if k == 1:
            return out.last_hidden_state
        return _final_norm(encoder)(out.hidden_states[-k])

    def _replacements(self, index: int, chunks: list[Chunk]) -> list[tuple[int, int, Any]]:
        """(chunk row, first position, vectors) for every embedding placed in the chunks, for encoder ``index``."""
        found = []
        for row, chunk in enumerate(chunks):
            for use in chunk.embeddings:
                vectors = self.embeddings[use.name].tensors()[index][:use.vectors]
                found.append((row, 1 + use.offset, vectors))  # + 1: the start token
        return found

    # ---------------------------------------------------------------------------------------------- pairs
    def pair(self, prompt: str, negative: str) -> tuple[Conditioning, Conditioning]:
        """The prompt's and negative prompt's conditioning with the same number of chunks.

        The shorter one is extended with the empty prompt's encoding (one chunk each), as A1111 pads cond and
        uncond. SDXL with an empty negative prompt and ``force_zeros_for_empty_prompt``: zeros, as diffusers
        and A1111 do.
        """
        import torch

        cond = self.encode(prompt, "prompt")
        uncond = self.encode(negative, "negative_prompt")
        if cond.chunks != uncond.chunks:
            empty = self.encode("", "prompt")
            cond, uncond = _extended(cond, empty, uncond.chunks), _extended(uncond, empty, cond.chunks)
        if self.sdxl and negative == "" and self.pipe.config.get("force_zeros_for_empty_prompt", False):
            uncond = Conditioning(embeds=torch.zeros_like(uncond.embeds), pooled=torch.zeros_like(uncond.pooled),
                                  chunks=uncond.chunks)
        return cond, uncond


def _extended(conditioning: Conditioning, empty: Conditioning, chunks: int) -> Conditioning:
    """``conditioning`` with the empty prompt's chunk appended until it has ``chunks`` chunks."""
    import torch

    missing = chunks - conditioning.chunks
    if missing <= 0:
        return conditioning
    embeds = torch.cat([conditioning.embeds, empty.embeds.repeat(1, missing, 1)], dim=1)
    return Conditioning(embeds=embeds, pooled=conditioning.pooled, chunks=chunks)


def _ids_and_weights(tokenizer: Any, chunks: list[Chunk]) -> tuple[Any, Any]:
    """[n, 77] ids (start, tokens, end, padding) and their weights (1.0 for start, end and padding)."""
    import torch

    length = CHUNK_TOKENS + 2
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids, weights = [], []
    for chunk in chunks:
        if len(chunk.tokens) > CHUNK_TOKENS or len(chunk.weights) != len(chunk.tokens):
            raise ValueError(f"a chunk holds at most {CHUNK_TOKENS} tokens, one weight each; got "
                             f"{len(chunk.tokens)} tokens and {len(chunk.weights)} weights")
        fill = length - 2 - len(chunk.tokens)
        ids.append([bos, *chunk.tokens, eos] + [pad] * fill)
        weights.append([1.0, *chunk.weights, 1.0] + [1.0] * fill)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(weights, dtype=torch.float32)


def _emphasis(z: Any, weights: Any, mode: str) -> Any:
    """A1111's emphasis on [n, 77, width]: "Original" multiplies each token by its weight, then scales each chunk
    back to its mean before; "No norm" only multiplies; "Ignore" leaves the weights out."""
    if mode == "Ignore" or bool((weights == 1.0).all()):
        return z  # all-1 weights would give z back anyway; skipping keeps plain prompts bit-identical
    zf = z.float()
    weighted = zf * weights.to(zf.device).unsqueeze(-1)
    if mode == "Original":
        before = zf.mean(dim=(1, 2), keepdim=True)
        after = weighted.mean(dim=(1, 2), keepdim=True)
        weighted = weighted * (before / after)
    return weighted.to(z.dtype)


@contextlib.contextmanager
def _vectors_placed(encoder: Any, replacements: list[tuple[int, int, Any]]) -> Iterator[None]:
    """For the duration of one call: the token embeddings at the given slots replaced by embedding vectors."""
    if not replacements:
        yield
        return

    def hook(_module: Any, _inputs: Any, output: Any) -> Any:
        output = output.clone()
        for row, start, vectors in replacements:
            output[row, start:start + vectors.shape[0]] = vectors.to(device=output.device, dtype=output.dtype)
        return output

    handle = encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _final_norm(encoder: Any) -> Any:
    """The encoder's final LayerNorm: transformers 5 has it on ``CLIPTextModel`` itself, 4 under ``text_model``."""
    norm = encoder._modules.get("final_layer_norm") if hasattr(encoder, "_modules") else None
    return norm if norm is not None else encoder.text_model.final_layer_norm


class PromptPlan:
    """A request's conditioning for every step: prompt editing and alternation as a schedule of text pairs.

    Every schedule text is chunked (so a too-long one fails before any step runs) and encoded once, up front;
    the step callback then only swaps ready tensors in when the pair of texts for the next step differs.
    Steps count as A1111 counts them: by the request's steps, from the first step that runs (also in img2img).
    """

    def __init__(self, encoder: PromptEncoder, prompt: str, negative: str, steps: int) -> None:
        from sdlocal.engine.prompts import schedules

        self.encoder = encoder
        self.positive = schedules(prompt, steps)
        self.negative = schedules(negative, steps)
        for _end, text in self.positive:
            encoder.encode(text, "prompt")
        for _end, text in self.negative:
            encoder.encode(text, "negative_prompt")
        self._batched: dict[tuple[str, str, int], tuple[Conditioning, Conditioning]] = {}

    @property
    def edits(self) -> bool:
        """True when the conditioning changes during the run."""
        return len(self.positive) > 1 or len(self.negative) > 1

    def texts_at(self, step_index: int) -> tuple[str, str]:
        from sdlocal.engine.prompts import text_at

        return text_at(self.positive, step_index), text_at(self.negative, step_index)

    def _pair(self, step_index: int, batch: int) -> tuple[Conditioning, Conditioning]:
        prompt, negative = self.texts_at(step_index)
        key = (prompt, negative, batch)
        if key not in self._batched:
            cond, uncond = self.encoder.pair(prompt, negative)
            self._batched[key] = (_repeated(cond, batch), _repeated(uncond, batch))
        return self._batched[key]

    def pipe_kwargs(self, batch: int) -> dict[str, Any]:
        """The pipeline's embedding arguments for the first step, for ``batch`` images."""
        cond, uncond = self._pair(0, batch)
        kwargs = {"prompt_embeds": cond.embeds, "negative_prompt_embeds": uncond.embeds}
        if self.encoder.sdxl:
            kwargs.update(pooled_prompt_embeds=cond.pooled, negative_pooled_prompt_embeds=uncond.pooled)
        return kwargs

    def tensor_inputs(self) -> list[str]:
        """The callback tensors the plan replaces (none without prompt editing)."""
        if not self.edits:
            return []
        return ["prompt_embeds", "add_text_embeds"] if self.encoder.sdxl else ["prompt_embeds"]

    def step_tensors(self, pipeline: Any, next_index: int, batch: int) -> dict[str, Any]:
        """The tensors to hand back from the callback before step ``next_index``, as the pipeline holds them
        (negative and positive stacked under classifier-free guidance); {} when the texts do not change."""
        import torch

        if not self.edits or self.texts_at(next_index) == self.texts_at(next_index - 1):
            return {}
        cond, uncond = self._pair(next_index, batch)
        guided = bool(getattr(pipeline, "do_classifier_free_guidance", True))
        tensors = {"prompt_embeds": torch.cat([uncond.embeds, cond.embeds]) if guided else cond.embeds}
        if self.encoder.sdxl:
            tensors["add_text_embeds"] = torch.cat([uncond.pooled, cond.pooled]) if guided else cond.pooled
        return tensors


def _repeated(conditioning: Conditioning, batch: int) -> Conditioning:
    pooled = conditioning.pooled.repeat(batch, 1) if conditioning.pooled is not None else None
    return Conditioning(embeds=conditioning.embeds.repeat(batch, 1, 1), pooled=pooled, chunks=conditioning.chunks)
