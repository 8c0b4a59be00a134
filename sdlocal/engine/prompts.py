"""A1111's prompt language, read as A1111 reads it: attention weights, BREAK, prompt editing, long prompts.

This module is plain Python (no torch): the UI's token counter uses it with only a tokenizer. The text
encoder's side (token ids and weights to embeddings) is ``conditioning.py``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

CHUNK_TOKENS = 75  # tokens per chunk, without the start and end tokens A1111 adds around each
COMMA_BACKTRACK = 20  # A1111's comma_padding_backtrack: the words after a comma this near the end move on
MAX_CHUNKS = 20  # a longer prompt is refused (1500 tokens: far past anything a model was trained on)


@dataclass(frozen=True)
class Fragment:
    """A run of prompt text with one weight; ``text == "BREAK"`` with weight -1 marks a BREAK."""

    text: str
    weight: float


@dataclass(frozen=True)
class EmbeddingUse:
    """A textual-inversion trigger found in a chunk: its vectors fill ``vectors`` token slots from ``offset``.

    ``offset`` counts from the chunk's first token (0), not counting the start token the encoder adds.
    """

    name: str
    offset: int
    vectors: int


@dataclass(frozen=True)
class Chunk:
    """Up to 75 token ids and their weights (no start/end/padding tokens), and the embeddings placed in it.

    An embedding's slots hold placeholder ids (the trigger's first token, repeated); the encoder replaces
    their vectors.
    """

    tokens: tuple[int, ...]
    weights: tuple[float, ...]
    embeddings: tuple[EmbeddingUse, ...] = ()
