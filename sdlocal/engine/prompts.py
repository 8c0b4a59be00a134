"""A1111's prompt language, read as A1111 reads it: attention weights, BREAK, prompt editing, long prompts.

This module is plain Python (no torch, not even lazily): the UI's token counter uses it with only a tokenizer.
The text encoder's side (token ids and weights to embeddings) is ``conditioning.py``'s; prompt editing
(``[from:to:when]``, ``[a|b]``) is ``prompt_editing.py``'s, re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

from sdlocal.engine.prompt_editing import schedules, text_at
from sdlocal.engine.request import RequestError

__all__ = ["BREAK", "CHUNK_TOKENS", "COMMA_BACKTRACK", "MAX_CHUNKS", "Chunk", "Chunker", "EmbeddingUse", "Fragment",
           "counting_chunker", "parse_attention", "schedules", "text_at"]

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

    An embedding's slots hold placeholder id 0 (as in A1111); the encoder replaces their vectors.
    """

    tokens: tuple[int, ...]
    weights: tuple[float, ...]
    embeddings: tuple[EmbeddingUse, ...] = ()


BREAK = Fragment("BREAK", -1)
ROUND_MULTIPLIER = 1.1  # (x)
SQUARE_MULTIPLIER = 1 / 1.1  # [x]

_ESCAPABLE = "()[]\\"
_CLOSES = {")": "(", "]": "["}
_MULTIPLIERS = {")": ROUND_MULTIPLIER, "]": SQUARE_MULTIPLIER}
_WEIGHT = re.compile(r":\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)")  # the ":1.3)" that closes "(x:1.3)"
_PLAIN = re.compile(r"[^\\()\[\]:]+")
_BREAK_WORD = re.compile(r"\s*\bBREAK\b\s*")
_NO_EMBEDDINGS: Mapping[str, int] = MappingProxyType({})
_SD1_TOKENIZER = Path(__file__).parent / "configs" / "sd1" / "tokenizer"


def parse_attention(text: str) -> list[Fragment]:
    """The prompt as runs of text with A1111's attention weights.

    - ``(x)`` multiplies the weight of x by 1.1, ``[x]`` divides it by 1.1, ``(x:1.3)`` multiplies it by 1.3 (a
      signed decimal number, spaces around it allowed); nested brackets multiply.
    - ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are the literal characters; a backslash before anything else
      is dropped, as A1111 drops it (so ``\\:`` and ``\\|``, kept by prompt editing, reach CLIP as ``:`` and ``|``).
    - A bracket never closed applies its multiplier to everything after it. A ``)`` or ``]`` with no open bracket
      of its kind is plain text, as are a ``:1.2)`` with no open ``(`` and a ``:`` not followed by
      number-and-``)``.
    - ``BREAK`` (upper case, a whole word) starts a new chunk: ``Fragment("BREAK", -1)``, the whitespace around it
      dropped. Unlike A1111, a BREAK inside brackets still breaks (A1111 turns it into the word "BREAK").
    - Runs of equal weight are merged; an empty text is ``[Fragment("", 1.0)]``.

    >>> parse_attention("an (important) word")
    [Fragment(text='an ', weight=1.0), Fragment(text='important', weight=1.1), Fragment(text=' word', weight=1.0)]
    """
    runs: list[list] = []  # [text, weight]; weight None is a BREAK, which brackets do not scale
    opened: dict[str, list[int]] = {"(": [], "[": []}  # where each open bracket's range starts in ``runs``
    i = 0
    while i < len(text):
        char = text[i]
        weight = _WEIGHT.match(text, i) if char == ":" and opened["("] else None
        if char == "\\":
            escaped = text[i + 1:i + 2]
            if escaped and escaped in _ESCAPABLE:
                runs.append([escaped, 1.0])
                i += 1
            i += 1
        elif char in opened:
            opened[char].append(len(runs))
            i += 1
        elif weight is not None:
            _scale(runs, opened["("].pop(), float(weight.group(1)))
            i = weight.end()
        elif char in _CLOSES and opened[_CLOSES[char]]:
            _scale(runs, opened[_CLOSES[char]].pop(), _MULTIPLIERS[char])
            i += 1
        else:
            plain = _PLAIN.match(text, i)
            piece = plain.group(0) if plain else char
            _add_plain(runs, piece)
            i += len(piece)
    for start in opened["("]:
        _scale(runs, start, ROUND_MULTIPLIER)
    for start in opened["["]:
        _scale(runs, start, SQUARE_MULTIPLIER)
    return _merge(runs)


def _add_plain(runs: list[list], piece: str) -> None:
    for n, part in enumerate(_BREAK_WORD.split(piece)):
        if n:
            runs.append(["BREAK", None])
        runs.append([part, 1.0])


def _scale(runs: list[list], start: int, factor: float) -> None:
    for run in runs[start:]:
        if run[1] is not None:
            run[1] *= factor


def _merge(runs: list[list]) -> list[Fragment]:
    fragments: list[Fragment] = []
    for text, weight in runs:
        if weight is None:
            fragments.append(BREAK)
        elif text and fragments and fragments[-1] != BREAK and fragments[-1].weight == weight:
            fragments[-1] = Fragment(fragments[-1].text + text, weight)
        elif text:
            fragments.append(Fragment(text, weight))
    return fragments or [Fragment("", 1.0)]


class _ChunkBuilder:
    """Fills chunks of 75 token slots one token at a time, as A1111 does."""

    def __init__(self, comma_token: int) -> None:
        self.comma_token = comma_token
        self.chunks: list[Chunk] = []
        self.tokens: list[int] = []
        self.weights: list[float] = []
        self.uses: list[EmbeddingUse] = []
        self.last_comma = -1  # index of the last comma in the open chunk

    def close(self) -> None:
        """End the open chunk, however short (a BREAK closes even an empty one); the comma rule starts over."""
        self.chunks.append(Chunk(tuple(self.tokens), tuple(self.weights), tuple(self.uses)))
        self.tokens, self.weights, self.uses, self.last_comma = [], [], [], -1

    def make_room(self, token: int) -> None:
        """Before ``token`` goes in: note a comma; close a full chunk, moving the words after a near comma on.

        A comma is near when ``75 - its index <= 20`` (A1111's test: at most 19 tokens follow it). The check
        is made only when the next token is not itself a comma.
        """
        if token == self.comma_token:
            self.last_comma = len(self.tokens)
        elif (len(self.tokens) == CHUNK_TOKENS and self.last_comma >= 0
              and CHUNK_TOKENS - self.last_comma <= COMMA_BACKTRACK):
            cut = self.last_comma + 1
            tokens, weights = self.tokens[cut:], self.weights[cut:]
            uses = [EmbeddingUse(u.name, u.offset - cut, u.vectors) for u in self.uses if u.offset >= cut]
            del self.tokens[cut:], self.weights[cut:]
            self.uses = [u for u in self.uses if u.offset < cut]
            self.close()
            self.tokens, self.weights, self.uses = tokens, weights, uses
        if len(self.tokens) >= CHUNK_TOKENS:
            self.close()

    def add_token(self, token: int, weight: float) -> None:
        self.tokens.append(token)
        self.weights.append(weight)

    def add_embedding(self, name: str, vectors: int, weight: float) -> None:
        """An embedding's vectors take ``vectors`` slots (id 0), in the next chunk when they do not fit here."""
        if self.tokens and len(self.tokens) + vectors > CHUNK_TOKENS:
            self.close()
        self.uses.append(EmbeddingUse(name, len(self.tokens), vectors))
        self.tokens += [0] * vectors
        self.weights += [weight] * vectors

    def finish(self) -> list[Chunk]:
        """The chunks: the open one is kept if it has tokens, or if it would be the only one."""
        if self.tokens or not self.chunks:
            self.close()
        return self.chunks


class Chunker:
    """Turns a prompt into A1111's chunks of 75 weighted tokens, with a tokenizer and nothing else.

    ``tokenize`` maps texts to token ids without start/end tokens; ``comma_token`` is the id of ","; ``embeddings``
    maps each textual-inversion trigger (the file name) to its vector count.
    """

    def __init__(self, tokenize: Callable[[list[str]], list[list[int]]], comma_token: int,
                 embeddings: Mapping[str, int] = _NO_EMBEDDINGS, max_chunks: int = MAX_CHUNKS) -> None:
        self.tokenize = tokenize
        self.comma_token = comma_token
        self.embeddings = dict(embeddings)
        self.max_chunks = max_chunks
        self._triggers: dict[int, list[tuple[tuple[int, ...], str]]] | None = None

    def chunks(self, text: str, field: str = "prompt") -> tuple[list[Chunk], list[str]]:
        """The chunks of ``text`` and the names of the embeddings used, in order of first use.

        A1111's rules: tokens go in one at a time with their fragment's weight; a chunk holds 75. When a chunk is
        full and its last comma is within 20 tokens of its end, the tokens after that comma move to the next
        chunk. ``BREAK`` closes the chunk even if it is short or empty (``BREAK b`` is two chunks, the first
        empty). Where the tokens start with a trigger's tokens (the longest trigger first), the embedding takes
        its vector count of slots, starting a new chunk if they do not fit. An empty prompt is one empty chunk.
        A prompt of more than ``max_chunks`` chunks is a ``RequestError`` naming ``field``.
        """
        found = self._build(text)
        for chunk in found:
            for use in chunk.embeddings:
                if use.vectors > CHUNK_TOKENS:
                    raise RequestError(field, use.name, f"it is an embedding of {use.vectors} vectors; at most "
                                       f"{CHUNK_TOKENS} fit in a chunk; remove it from the {field}")
        if len(found) > self.max_chunks:
            raise RequestError(field, _shorten(text), f"it is {len(found)} chunks of {CHUNK_TOKENS} tokens; at most "
                               f"{self.max_chunks} chunks ({self.max_chunks * CHUNK_TOKENS} tokens) are allowed; "
                               "shorten it")
        names = [use.name for chunk in found for use in chunk.embeddings]
        return found, list(dict.fromkeys(names))

    def count(self, text: str, steps: int) -> tuple[int, int]:
        """A1111's token counter: (tokens used, 75 x chunks), for the longest of the prompt's texts over ``steps``.

        An embedding counts as its vector count; padding does not count. A prompt too long to generate is
        counted all the same (the counter shows it; generating it is what fails).
        """
        best = (0, CHUNK_TOKENS)
        for step_text in dict.fromkeys(text for _, text in schedules(text, max(steps, 1))):
            found = self._build(step_text)
            used = (sum(len(chunk.tokens) for chunk in found), CHUNK_TOKENS * len(found))
            if used[0] > best[0]:
                best = used
        return best

    def _build(self, text: str) -> list[Chunk]:
        fragments = parse_attention(text)
        words = [fragment.text for fragment in fragments if fragment != BREAK]
        ids = iter(self.tokenize(words) if words else [])
        builder = _ChunkBuilder(self.comma_token)
        for fragment in fragments:
            if fragment == BREAK:
                builder.close()
                continue
            tokens = list(next(ids))
            position = 0
            while position < len(tokens):
                builder.make_room(tokens[position])
                trigger = self._trigger_at(tokens, position)
                if trigger is None:
                    builder.add_token(tokens[position], fragment.weight)
                    position += 1
                else:
                    builder.add_embedding(trigger[1], self.embeddings[trigger[1]], fragment.weight)
                    position += len(trigger[0])
        return builder.finish()

    def _trigger_at(self, tokens: list[int], position: int) -> tuple[tuple[int, ...], str] | None:
        """The trigger whose tokens start at ``position`` (the longest when several do), or None."""
        if self._triggers is None:
            self._triggers = self._index_triggers()
        for ids, name in self._triggers.get(tokens[position], ()):
            if tuple(tokens[position:position + len(ids)]) == ids:
                return ids, name
        return None

    def _index_triggers(self) -> dict[int, list[tuple[tuple[int, ...], str]]]:
        """Each trigger's tokens, by first token, longest first: tokenized once per chunker."""
        names = sorted(self.embeddings)
        index: dict[int, list[tuple[tuple[int, ...], str]]] = {}
        for name, ids in zip(names, self.tokenize(names) if names else [], strict=True):
            if ids:
                index.setdefault(ids[0], []).append((tuple(ids), name))
        for candidates in index.values():
            candidates.sort(key=lambda candidate: -len(candidate[0]))
        return index


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


@lru_cache(maxsize=1)
def _clip_tokenizer():
    """The bundled SD 1.x CLIP tokenizer, loaded once; transformers' CLIPTokenizer needs no torch."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(_SD1_TOKENIZER), local_files_only=True)


@lru_cache(maxsize=4096)
def _clip_ids(text: str) -> tuple[int, ...]:
    """One text's CLIP token ids, without start/end tokens; cached (the counter re-reads the prompt per key)."""
    return tuple(_clip_tokenizer()(text, add_special_tokens=False, verbose=False)["input_ids"])


def _clip_tokenize(texts: list[str]) -> list[list[int]]:
    return [list(_clip_ids(text)) for text in texts]


def counting_chunker(embeddings: Mapping[str, int] = _NO_EMBEDDINGS) -> Chunker:
    """A ``Chunker`` over the bundled SD 1.x CLIP tokenizer, for the UI's token counter (no torch imported).

    SD 2.x and SDXL use the same vocabulary, so the count holds for every family.
    """
    return Chunker(_clip_tokenize, _clip_ids(",")[0], embeddings)
