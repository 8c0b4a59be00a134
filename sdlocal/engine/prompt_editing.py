"""A1111's prompt editing and alternation: which text the conditioning uses at each sampling step.

- ``[from:to:when]`` uses ``from`` up to step ``when`` and ``to`` after it; ``[to:when]`` is ``[:to:when]`` and
  ``[from::when]`` drops ``from`` at ``when``.
- ``[a|b|c]`` uses ``a`` at step 1, ``b`` at step 2, ``c`` at step 3, ``a`` again at step 4, and so on.
- The parts may hold ordinary text, emphasis such as ``(x:1.2)``, and further editing or alternation.

Everything else is left exactly as written: the emphasis brackets are ``parse_attention``'s to read once the
step's text is known, which is why this module works on the text, not on weights. Plain Python (no torch).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

# How deep brackets may nest and still be read as editing: deeper is not a prompt anyone writes, and it would
# exhaust Python's recursion; such a prompt is used as written (its emphasis still applies).
MAX_NESTING = 100

# An escape (kept as written: parse_attention reads it later), a lone trailing backslash, one syntax
# character, or a run of anything else.
_LEXEME = re.compile(r"\\.|\\$|[()\[\]:|]|[^\\()\[\]:|]+", re.S)
_WHEN = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*")
_CLOSER = {"(": ")", "[": "]"}


class _Sep(str):
    """A ``:`` or ``|`` as written: the place a ``[...]`` group may split into its parts."""


@dataclass
class _Group:
    """Brackets that are not editing (emphasis, or a ``[...]`` of neither kind): kept, their inside still read."""

    opener: str
    items: list


@dataclass
class _Edit:
    before: list
    after: list
    when: int  # the last step (1-based) that uses ``before``


@dataclass
class _Alternation:
    options: list[list]


def schedules(prompt: str, steps: int) -> list[tuple[int, str]]:
    """The prompt's texts over a run of ``steps`` steps, as A1111's ``(end_at_step, text)`` pairs, sorted.

    ``when`` written with a decimal point (``0.5``, ``1.0``) is a fraction of the steps (``int(when * steps)``),
    an integer (``10``) is a step number; either is clamped to ``steps``. The pairs end at every switch point
    (each ``when`` of at least 1), at every step when the prompt alternates, and at ``steps``. At end step ``t``
    an editing group gives ``from`` if ``t <= when``, else ``to``; an alternation gives option ``(t - 1) mod n``.
    Consecutive pairs with the same text are merged into the later one.

    A ``[...]`` that is neither editing (its last ``:`` part a number) nor alternation (a ``|`` in it) is left as
    it is; so are escaped characters (``\\[``, ``\\:``, ``\\|``) and brackets without a partner, and a
    ``[...]`` holding such a bracket is not read as editing. A prompt with no editing is ``[(steps, prompt)]``.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    tree = _parse(prompt, steps)
    ends = {steps}
    if tree is None or not _collect_ends(tree, steps, ends):
        return [(steps, prompt)]
    result: list[tuple[int, str]] = []
    for end in sorted(ends):
        text = _render(tree, end)
        if result and result[-1][1] == text:
            result[-1] = (end, text)
        else:
            result.append((end, text))
    return result


def text_at(schedule: list[tuple[int, str]], step_index: int) -> str:
    """The text used at 0-based sampling step ``step_index``: the first pair with ``step_index <= end_at_step``.

    That is A1111's rule, off-by-one included: ``[a:b:10]`` at 20 steps uses ``a`` for step indices 0 to 10.
    """
    for end, text in schedule:
        if step_index <= end:
            return text
    return schedule[-1][1]


def _parse(prompt: str, steps: int) -> list | None:
    """The prompt as a tree of text, groups, editing and alternation; None when it nests too deep to read."""
    lexemes = [m.group(0) for m in _LEXEME.finditer(prompt)]
    pairs, depth = _pair_brackets(lexemes)
    if depth > MAX_NESTING:
        return None
    partnered = set(pairs) | set(pairs.values())
    strays = [i for i, lex in enumerate(lexemes) if lex in "()[]" and len(lex) == 1 and i not in partnered]
    return _build(lexemes, 0, len(lexemes), pairs, strays, steps)


def _pair_brackets(lexemes: list[str]) -> tuple[dict[int, int], int]:
    """Opening index -> closing index for brackets that have a partner, and the deepest nesting seen.

    A closer pairs with the nearest open bracket of its kind; brackets opened after that one and not yet closed
    have no partner. Brackets without a partner are plain text.
    """
    pairs: dict[int, int] = {}
    stack: list[int] = []
    deepest = 0
    for i, lex in enumerate(lexemes):
        if lex in ("(", "["):
            stack.append(i)
            deepest = max(deepest, len(stack))
        elif lex in (")", "]"):
            for level in range(len(stack) - 1, -1, -1):
                if _CLOSER[lexemes[stack[level]]] == lex:
                    pairs[stack[level]] = i
                    del stack[level:]
                    break
    return pairs, deepest


def _build(lexemes: list[str], lo: int, hi: int, pairs: dict[int, int], strays: list[int], steps: int) -> list:
    items: list = []
    i = lo
    while i < hi:
        lex = lexemes[i]
        if i in pairs:
            close = pairs[i]
            inner = _build(lexemes, i + 1, close, pairs, strays, steps)
            has_stray = bisect_right(strays, close) > bisect_right(strays, i)
            items.append(_Group(lex, inner) if lex == "(" or has_stray else _bracket_group(inner, steps))
            i = close + 1
        else:
            items.append(_Sep(lex) if lex in (":", "|") else lex)
            i += 1
    return items


def _bracket_group(inner: list, steps: int) -> _Group | _Edit | _Alternation:
    """What a ``[...]`` is: alternation (``|`` and no ``:``), editing (2 or 3 ``:`` parts, the last a number)."""
    colons = [i for i, item in enumerate(inner) if isinstance(item, _Sep) and item == ":"]
    bars = [i for i, item in enumerate(inner) if isinstance(item, _Sep) and item == "|"]
    if bars and not colons:
        return _Alternation(_split(inner, bars))
    if colons and not bars and len(colons) <= 2:
        parts = _split(inner, colons)
        when = _when(parts[-1], steps)
        if when is not None:
            before, after = (parts[0], parts[1]) if len(parts) == 3 else ([], parts[0])
            return _Edit(before, after, when)
    return _Group("[", inner)


def _split(items: list, at: list[int]) -> list[list]:
    bounds = [-1, *at, len(items)]
    return [items[a + 1:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _when(part: list, steps: int) -> int | None:
    """The step an editing group switches after, or None when ``part`` is not a number."""
    if not all(type(item) is str and not item.startswith("\\") for item in part):
        return None
    match = _WHEN.fullmatch("".join(part))
    if match is None:
        return None
    written = match.group(1)
    value = float(written) * steps if "." in written else int(written)
    return min(steps, int(value))


def _collect_ends(items: list, steps: int, ends: set[int]) -> bool:
    """Add every switch point under ``items`` to ``ends``; True when there is any editing or alternation."""
    found = False
    for item in items:
        if isinstance(item, _Group):
            found |= _collect_ends(item.items, steps, ends)
        elif isinstance(item, _Edit):
            found = True
            if item.when >= 1:
                ends.add(item.when)
            _collect_ends(item.before, steps, ends)
            _collect_ends(item.after, steps, ends)
        elif isinstance(item, _Alternation):
            found = True
            ends.update(range(1, steps + 1))
            for option in item.options:
                _collect_ends(option, steps, ends)
    return found


def _render(items: list, end: int) -> str:
    """The text at end step ``end``: everything as written, each editing and alternation resolved."""
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, _Group):
            out += [item.opener, _render(item.items, end), _CLOSER[item.opener]]
        elif isinstance(item, _Edit):
            out.append(_render(item.before if end <= item.when else item.after, end))
        else:
            out.append(_render(item.options[(end - 1) % len(item.options)], end))
    return "".join(out)
