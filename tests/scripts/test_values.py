"""A1111's value syntax for X/Y/Z axes: lists, quoted values, integer and float ranges with a step or a count."""

from __future__ import annotations

import pytest

from sdlocal.engine.request import RequestError
from sdlocal.scripts.values import expand_floats, expand_ints, join_values, parse_size, split_values


@pytest.mark.parametrize(("text", "expected"), [
    ("1-5", [1, 2, 3, 4, 5]),
    ("1-10 (+2)", [1, 3, 5, 7, 9]),
    ("1-10 [5]", [1, 3, 5, 7, 10]),  # A1111's count: evenly spaced, truncated to whole numbers
    ("1, 5-7, 20", [1, 5, 6, 7, 20]),
    ("10-1 (-3)", [10, 7, 4, 1]),
    ("5-1", [5, 4, 3, 2, 1]),
    ("-3 - 1", [-3, -2, -1, 0, 1]),
    ("1,2,", [1, 2]),  # a trailing comma
    (" 20 , 30 ", [20, 30]),
])
def test_integer_values_and_ranges(text: str, expected: list[int]) -> None:
    assert expand_ints(split_values(text), "x_values") == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("0.5-1.5 (+0.5)", [0.5, 1.0, 1.5]),
    ("1-2 [3]", [1.0, 1.5, 2.0]),
    ("0.1-0.3 (+0.1)", [0.1, 0.2, 0.3]),  # no 0.30000000000000004, and the end is kept
    ("7, 7.5, 10", [7.0, 7.5, 10.0]),
    ("3-9 (+3)", [3.0, 6.0, 9.0]),
])
def test_float_values_and_ranges(text: str, expected: list[float]) -> None:
    assert expand_floats(split_values(text), "x_values") == expected


def test_quoted_values_keep_their_commas_and_join_back() -> None:
    values = split_values('"red, shiny", blue,  "green"')
    assert values == ["red, shiny", "blue", "green"]
    assert split_values(join_values(values)) == values


@pytest.mark.parametrize(("text", "expanding"), [
    ("1, two", expand_ints), ("1-10 (+0)", expand_ints), ("1-10 [0]", expand_ints), ("1.5", expand_ints),
    ("0.5, nan", expand_floats), ("1-2 (+0)", expand_floats), ("inf", expand_floats), ("1-100000", expand_ints),
])
def test_a_bad_value_names_the_field_and_the_value(text: str, expanding) -> None:
    with pytest.raises(RequestError) as caught:
        expanding(split_values(text), "y_values")
    assert caught.value.field == "y_values"


def test_sizes() -> None:
    assert parse_size("512x768", "x_values") == (512, 768)
    assert parse_size(" 640 X 480 ", "x_values") == (640, 480)
    with pytest.raises(RequestError, match="WIDTHxHEIGHT"):
        parse_size("512", "x_values")
