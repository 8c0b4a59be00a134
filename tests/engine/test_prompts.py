"""A1111's prompt language as A1111 documents it: attention, BREAK, prompt editing, chunks and the token counter."""

from __future__ import annotations

import pytest

from sdlocal.engine.prompts import BREAK, Fragment, parse_attention, schedules, text_at


def _pairs(text: str) -> list[tuple[str, float]]:
    return [(fragment.text, fragment.weight) for fragment in parse_attention(text)]


def _same(got: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    assert [text for text, _ in got] == [text for text, _ in expected]
    assert [weight for _, weight in got] == pytest.approx([weight for _, weight in expected])


# --- attention: A1111's documented examples ------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.573), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55), (", sun, ", 1.1),
      ("sky", 1.4641), (".", 1.1)]),
    ("a BREAK b", [("a", 1.0), ("BREAK", -1), ("b", 1.0)]),
])
def test_a1111_documented_examples(text: str, expected: list[tuple[str, float]]) -> None:
    _same(_pairs(text), expected)


def test_round_brackets_multiply_by_1_1_and_square_ones_divide() -> None:
    _same(_pairs("(a) [b] ((c)) [[d]]"), [("a", 1.1), (" ", 1.0), ("b", 1 / 1.1), (" ", 1.0), ("c", 1.21),
                                          (" ", 1.0), ("d", 1 / 1.21)])


def test_an_explicit_weight_may_be_signed_decimal_with_spaces_and_nests() -> None:
    _same(_pairs("(a:1.3)"), [("a", 1.3)])
    _same(_pairs("(a: 0.5 )"), [("a", 0.5)])
    _same(_pairs("(a:+2)"), [("a", 2.0)])
    _same(_pairs("(a:-1)"), [("a", -1.0)])
    _same(_pairs("(a:.5)"), [("a", 0.5)])
    _same(_pairs("((a:2):1.5)"), [("a", 3.0)])
    _same(_pairs("[(a:2)]"), [("a", 2 / 1.1)])


def test_escaped_brackets_and_backslash_are_literal_characters() -> None:
    _same(_pairs("\\(a\\) \\[b\\] c\\\\d"), [("(a) [b] c\\d", 1.0)])
    _same(_pairs("(\\(x\\))"), [("(x)", 1.1)])


def test_a_backslash_that_escapes_nothing_is_dropped_as_a1111_drops_it() -> None:
    _same(_pairs("a\\b"), [("ab", 1.0)])
    _same(_pairs("a\\:b"), [("a:b", 1.0)])
    _same(_pairs("end\\"), [("end", 1.0)])


def test_an_unclosed_bracket_applies_to_the_rest_of_the_prompt() -> None:
    _same(_pairs("a (b c"), [("a ", 1.0), ("b c", 1.1)])
    _same(_pairs("a [b c"), [("a ", 1.0), ("b c", 1 / 1.1)])
    _same(_pairs("((a) b"), [("a", 1.21), (" b", 1.1)])


def test_a_closing_bracket_with_no_open_one_of_its_kind_is_plain_text() -> None:
    _same(_pairs("a) b] c"), [("a) b] c", 1.0)])
    _same(_pairs("(a] b)"), [("a] b", 1.1)])
    _same(_pairs("[a) b]"), [("a) b", 1 / 1.1)])


def test_a_colon_is_plain_text_unless_it_sets_an_open_brackets_weight() -> None:
    _same(_pairs("a:1.2) b"), [("a:1.2) b", 1.0)])
    _same(_pairs("style: anime"), [("style: anime", 1.0)])
    _same(_pairs("(x:abc)"), [("x:abc", 1.1)])
    _same(_pairs("(x:1.2.3)"), [("x:1.2.3", 1.1)])


def test_break_is_the_upper_case_whole_word_and_drops_the_spaces_around_it() -> None:
    assert parse_attention("a  BREAK\nb") == [Fragment("a", 1.0), BREAK, Fragment("b", 1.0)]
    assert parse_attention("BREAK b") == [BREAK, Fragment("b", 1.0)]
    assert parse_attention("a,BREAK,b") == [Fragment("a,", 1.0), BREAK, Fragment(",b", 1.0)]
    assert parse_attention("break BREAKFAST xBREAK") == [Fragment("break BREAKFAST xBREAK", 1.0)]
    _same(_pairs("(a BREAK b)"), [("a", 1.1), ("BREAK", -1), ("b", 1.1)])


def test_runs_of_equal_weight_merge_and_an_empty_prompt_is_one_empty_fragment() -> None:
    assert parse_attention("(a)(b) (c)") == [Fragment("ab", 1.1), Fragment(" ", 1.0), Fragment("c", 1.1)]
    assert parse_attention("") == [Fragment("", 1.0)]
    assert parse_attention("()") == [Fragment("", 1.0)]
    assert parse_attention("a BREAK BREAK b") == [Fragment("a", 1.0), BREAK, BREAK, Fragment("b", 1.0)]


# --- prompt editing and alternation ---------------------------------------------------------------------------

def test_a_prompt_without_editing_is_one_schedule_entry() -> None:
    assert schedules("a (cat:1.2), [blurry]", 20) == [(20, "a (cat:1.2), [blurry]")]
    assert schedules("", 20) == [(20, "")]


def test_from_to_when_with_a_fraction_switches_at_that_share_of_the_steps() -> None:
    assert schedules("a [cat:dog:0.5]", 10) == [(5, "a cat"), (10, "a dog")]
    assert schedules("a [cat:dog:0.25]", 10) == [(2, "a cat"), (10, "a dog")]  # int(2.5)
    assert schedules("a [cat:dog:1.0]", 10) == [(10, "a cat")]


def test_from_to_when_with_an_integer_switches_after_that_step() -> None:
    assert schedules("[cat:dog:3]", 10) == [(3, "cat"), (10, "dog")]
    assert schedules("[cat:dog: 3 ]", 10) == [(3, "cat"), (10, "dog")]


def test_to_when_adds_and_from_when_removes_text() -> None:
    assert schedules("[cat::2]", 4) == [(2, "cat"), (4, "")]
    assert schedules("[dog:2]", 4) == [(2, ""), (4, "dog")]
    assert schedules("a [:dog:2]", 4) == [(2, "a "), (4, "a dog")]


def test_when_zero_uses_to_from_the_first_step_and_past_the_steps_uses_from_throughout() -> None:
    assert schedules("[cat:dog:0]", 10) == [(10, "dog")]
    assert schedules("[cat:dog:0.0]", 10) == [(10, "dog")]
    assert schedules("[cat:dog:30]", 10) == [(10, "cat")]


def test_alternation_changes_option_every_step() -> None:
    assert schedules("[cat|dog]", 4) == [(1, "cat"), (2, "dog"), (3, "cat"), (4, "dog")]
    assert schedules("a [x|y|z]", 4) == [(1, "a x"), (2, "a y"), (3, "a z"), (4, "a x")]
    assert schedules("[cat|]", 3) == [(1, "cat"), (2, ""), (3, "cat")]


def test_editing_and_alternation_nest() -> None:
    assert schedules("[[a|b]:c:0.5]", 4) == [(1, "a"), (2, "b"), (4, "c")]
    assert schedules("[x:[y:z:4]:2]", 6) == [(2, "x"), (4, "y"), (6, "z")]


def test_emphasis_is_kept_as_text_for_parse_attention() -> None:
    assert schedules("(x:1.2) [y:z:0.5]", 10) == [(5, "(x:1.2) y"), (10, "(x:1.2) z")]
    assert schedules("([y:z:0.5]:1.2), [blurry]", 10) == [(5, "(y:1.2), [blurry]"), (10, "(z:1.2), [blurry]")]
    assert schedules("[(cat:1.2):dog:5]", 10) == [(5, "(cat:1.2)"), (10, "dog")]


def test_escaped_syntax_is_literal_and_kept_as_written() -> None:
    assert schedules("\\[not:edit:1\\]", 10) == [(10, "\\[not:edit:1\\]")]
    assert schedules("[a\\:b:c:5]", 10) == [(5, "a\\:b"), (10, "c")]
    assert schedules("[a\\|b]", 10) == [(10, "[a\\|b]")]


def test_brackets_that_are_not_editing_are_left_as_they_are() -> None:
    assert schedules("[unbalanced:x:1", 10) == [(10, "[unbalanced:x:1")]
    assert schedules("[a:b:c:0.5]", 10) == [(10, "[a:b:c:0.5]")]  # three parts before the number
    assert schedules("[a:b:soon]", 10) == [(10, "[a:b:soon]")]
    assert schedules("[a|b:0.5]", 10) == [(10, "[a|b:0.5]")]
    assert schedules("[a (b:c:5]", 10) == [(10, "[a (b:c:5]")]  # a bracket without a partner inside


def test_a_stray_bracket_outside_an_editing_group_does_not_stop_it() -> None:
    assert schedules("(masterpiece, [cat:dog:5]", 10) == [(5, "(masterpiece, cat"), (10, "(masterpiece, dog")]
    assert schedules("a) [cat:dog:5]", 10) == [(5, "a) cat"), (10, "a) dog")]


def test_brackets_nested_too_deep_are_used_as_written() -> None:
    deep = "(" * 5000 + "[a:b:5]" + ")" * 5000
    assert schedules(deep, 10) == [(10, deep)]


def test_text_at_uses_the_first_entry_that_ends_at_or_after_the_step_index() -> None:
    schedule = schedules("[a:b:10]", 20)
    assert [text_at(schedule, i) for i in range(20)] == ["a"] * 11 + ["b"] * 9
    alternating = schedules("[cat|dog]", 4)
    assert [text_at(alternating, i) for i in range(4)] == ["cat", "cat", "dog", "cat"]


def test_steps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="steps"):
        schedules("a", 0)
