"""A1111's X/Y/Z value syntax: comma-separated values (quoted when they hold a comma) and number ranges.

``1-5`` is 1, 2, 3, 4, 5; ``1-10 (+2)`` steps by 2 (1, 3, 5, 7, 9); ``1-10 [5]`` gives 5 evenly spaced values
(1, 3, 5, 7, 10 for integers). Floats take the same forms: ``0.5-1.5 (+0.5)``, ``1-2 [3]``. Ranges and plain
values mix in one list: ``1, 5-7, 20``. A value that is neither a number nor a range is an error naming the
field and the value, before anything runs.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable

from sdlocal.engine.request import RequestError

_NUMBER = r"[+-]?\s*\d+(?:\.\d*)?"
_INT = r"[+-]?\s*\d+"
_STEP_RANGE = r"\s*({n})\s*-\s*({n})(?:\s*\(\s*([+-]\s*{u})\s*\))?\s*"  # filled in for ints and floats
_INT_STEP = re.compile(_STEP_RANGE.format(n=_INT, u=r"\d+"))
_INT_COUNT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*\[\s*(\d+)\s*\]\s*")
_FLOAT_STEP = re.compile(_STEP_RANGE.format(n=_NUMBER, u=r"\d+(?:\.\d*)?"))
_FLOAT_COUNT = re.compile(rf"\s*({_NUMBER})\s*-\s*({_NUMBER})\s*\[\s*(\d+)\s*\]\s*")
MAX_VALUES = 1000  # one axis; more is a typo (1-100000), refused before it is expanded


def split_values(text: str) -> list[str]:
    """Comma-separated values, each stripped; a value in double quotes may hold commas ("a, b", c)."""
    if not text or not text.strip():
        return []
    rows = csv.reader(io.StringIO(text.strip()), skipinitialspace=True)
    return [value.strip() for row in rows for value in row]


def join_values(values: Iterable[object]) -> str:
    """The inverse of ``split_values``: how the infotext's ``X Values`` and the UI's text box show a list."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([str(value) for value in values])
    return out.getvalue()


def _clean(number: str) -> str:
    return number.replace(" ", "")


def _check_count(field: str, text: str, count: int) -> None:
    if count > MAX_VALUES:
        raise RequestError(field, text, f"makes {count} values; an axis takes at most {MAX_VALUES}")


def expand_ints(values: Iterable[str], field: str) -> list[int]:
    """Whole numbers and integer ranges, in order; empty items are dropped (a trailing comma)."""
    out: list[int] = []
    for text in values:
        if not text.strip():
            continue
        step_match, count_match = _INT_STEP.fullmatch(text), _INT_COUNT.fullmatch(text)
        if step_match:
            start, end = int(_clean(step_match[1])), int(_clean(step_match[2]))
            step = int(_clean(step_match[3])) if step_match[3] else (1 if end >= start else -1)
            if step == 0:
                raise RequestError(field, text, "has a step of 0; use e.g. 1-10 (+2)")
            count = max(0, (end - start) // step + 1)
            _check_count(field, text, count)
            out += [start + i * step for i in range(count)]
        elif count_match:
            start, end, count = int(_clean(count_match[1])), int(_clean(count_match[2])), int(count_match[3])
            out += [int(value) for value in _spaced(field, text, start, end, count)]
        else:
            try:
                out.append(int(_clean(text)))
            except ValueError:
                raise RequestError(field, text, "must be whole numbers or ranges such as 1-5, 1-10 (+2) or "
                                                "1-10 [5], separated by commas") from None
        _check_count(field, text, len(out))
    return out


def expand_floats(values: Iterable[str], field: str) -> list[float]:
    """Numbers and number ranges, in order, rounded to 8 decimals (0.1 steps read 0.3, not 0.30000000000000004)."""
    out: list[float] = []
    for text in values:
        if not text.strip():
            continue
        step_match, count_match = _FLOAT_STEP.fullmatch(text), _FLOAT_COUNT.fullmatch(text)
        if step_match:
            start, end = float(_clean(step_match[1])), float(_clean(step_match[2]))
            step = float(_clean(step_match[3])) if step_match[3] else (1.0 if end >= start else -1.0)
            if step == 0:
                raise RequestError(field, text, "has a step of 0; use e.g. 0.5-1.5 (+0.25)")
            count = max(0, math.floor((end - start) / step + 1e-9) + 1)
            _check_count(field, text, count)
            out += [round(start + i * step, 8) for i in range(count)]
        elif count_match:
            start, end, count = float(_clean(count_match[1])), float(_clean(count_match[2])), int(count_match[3])
            out += [round(value, 8) for value in _spaced(field, text, start, end, count)]
        else:
            try:
                number = float(_clean(text))
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise RequestError(field, text, "must be numbers or ranges such as 0.5-1.5 (+0.5) or 1-2 [3], "
                                                "separated by commas")
            out.append(round(number, 8))
        _check_count(field, text, len(out))
    return out


def _spaced(field: str, text: str, start: float, end: float, count: int) -> list[float]:
    """``count`` evenly spaced values from start to end, both included (numpy's linspace)."""
    if count < 1:
        raise RequestError(field, text, "asks for 0 values; the count in [ ] must be at least 1")
    _check_count(field, text, count)
    if count == 1:
        return [start]
    return [start + (end - start) * i / (count - 1) for i in range(count)]


def parse_size(text: str, field: str) -> tuple[int, int]:
    """A Size axis value, "512x768" (width x height)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise RequestError(field, text, "must be sizes written WIDTHxHEIGHT, e.g. 512x768")
    return int(match[1]), int(match[2])
