"""A1111's prompt language, read as A1111 reads it: attention weights, BREAK, prompt editing, long prompts.

This module is plain Python (no torch, not even lazily): the UI's token counter uses it with only a tokenizer.
The text encoder's side (token ids and weights to embeddings) is ``conditioning.py``'s; prompt editing
(``[from:to:when]``, ``[a|b]``) is ``prompt_editing.py``'s, re-exported here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sdlocal.engine.prompt_editing import schedules, text_at

__all__ = ["CHUNK_TOKENS", "COMMA_BACKTRACK", "MAX_CHUNKS", "Chunk", "EmbeddingUse", "Fragment", "parse_attention",
           "schedules", "text_at"]

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

