"""A1111's prompt language as A1111 documents it: attention, BREAK, prompt editing, chunks and the token counter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sdlocal.engine.prompts import (
    BREAK,
    Chunk,
    Chunker,
    EmbeddingUse,
    Fragment,
    counting_chunker,
    parse_attention,
    schedules,
    text_at,
)
from sdlocal.engine.request import RequestError


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


# --- chunks of 75 tokens ---------------------------------------------------------------------------------------
# The fake tokenizer makes every character but whitespace one token (its code point): "," is 44, "a" is 97.

COMMA = ord(",")
A, B, C = ord("a"), ord("b"), ord("c")


def _char_tokens(texts: list[str]) -> list[list[int]]:
    return [[ord(char) for char in text if not char.isspace()] for text in texts]


def _chunker(embeddings: dict[str, int] | None = None, **kwargs) -> Chunker:
    return Chunker(_char_tokens, COMMA, embeddings or {}, **kwargs)


def _chunks(text: str, embeddings: dict[str, int] | None = None) -> list[Chunk]:
    return _chunker(embeddings).chunks(text)[0]


def _lengths(text: str, embeddings: dict[str, int] | None = None) -> list[int]:
    return [len(chunk.tokens) for chunk in _chunks(text, embeddings)]


def test_a_chunk_holds_75_tokens_and_the_76th_starts_the_next() -> None:
    assert _lengths("a" * 75) == [75]
    chunks = _chunks("a" * 75 + "(b)")
    assert [len(chunk.tokens) for chunk in chunks] == [75, 1]
    assert chunks[1] == Chunk((B,), (pytest.approx(1.1),))


def test_each_token_carries_its_fragments_weight() -> None:
    (chunk,) = _chunks("(ab) [c] d")
    assert chunk.tokens == (A, B, C, ord("d"))
    assert chunk.weights == pytest.approx((1.1, 1.1, 1 / 1.1, 1.0))


def test_the_words_after_a_comma_20_tokens_from_the_end_move_to_the_next_chunk() -> None:
    # The comma is at index 55: 75 - 55 = 20, so the 19 tokens after it move on, with their weights.
    chunks = _chunks("a" * 55 + ",(" + "b" * 19 + ")c")
    assert [len(chunk.tokens) for chunk in chunks] == [56, 20]
    assert chunks[0].tokens[-1] == COMMA
    assert chunks[1].tokens == (B,) * 19 + (C,)
    assert chunks[1].weights == pytest.approx((1.1,) * 19 + (1.0,))


def test_a_comma_21_tokens_from_the_end_stays_and_the_chunk_simply_closes() -> None:
    assert _lengths("a" * 54 + "," + "b" * 20 + "c") == [75, 1]


def test_without_a_comma_a_full_chunk_simply_closes() -> None:
    assert _lengths("a" * 150 + "b") == [75, 75, 1]


def test_the_comma_rule_starts_over_in_each_chunk() -> None:
    # A comma near the end of the chunk before a BREAK does not cut the next chunk.
    assert _lengths("a" * 60 + ", BREAK " + "b" * 76) == [61, 75, 1]


def test_a_comma_arriving_at_a_full_chunk_opens_the_next_one() -> None:
    chunks = _chunks("a" * 75 + ",b")
    assert [chunk.tokens for chunk in chunks] == [(A,) * 75, (COMMA, B)]


def test_break_closes_the_chunk_even_when_short_or_empty() -> None:
    assert [chunk.tokens for chunk in _chunks("a BREAK b")] == [(A,), (B,)]
    assert [chunk.tokens for chunk in _chunks("BREAK b")] == [(), (B,)]
    assert [chunk.tokens for chunk in _chunks("a BREAK")] == [(A,)]
    assert [chunk.tokens for chunk in _chunks("a BREAK BREAK b")] == [(A,), (), (B,)]


def test_an_empty_prompt_is_one_empty_chunk() -> None:
    assert _chunks("") == [Chunk((), ())]
    assert _chunks("   ") == [Chunk((), ())]


def test_an_embedding_takes_one_slot_per_vector_with_its_triggers_weight() -> None:
    chunks, used = _chunker({"emb": 3}).chunks("x (emb:1.5) y")
    assert used == ["emb"]
    (chunk,) = chunks
    assert chunk.tokens == (ord("x"), 0, 0, 0, ord("y"))
    assert chunk.weights == pytest.approx((1.0, 1.5, 1.5, 1.5, 1.0))
    assert chunk.embeddings == (EmbeddingUse("emb", 1, 3),)


def test_the_longest_trigger_that_matches_wins() -> None:
    chunks, used = _chunker({"em": 1, "emb": 2, "embx": 4}).chunks("emb em")
    assert used == ["emb", "em"]
    assert chunks[0].embeddings == (EmbeddingUse("emb", 0, 2), EmbeddingUse("em", 2, 1))
    assert chunks[0].tokens == (0, 0, 0)


def test_an_embedding_that_fits_stays_and_one_that_does_not_starts_the_next_chunk() -> None:
    assert _lengths("a" * 73 + "emb", {"emb": 2}) == [75]
    chunks = _chunks("a" * 74 + "emb", {"emb": 2})
    assert [len(chunk.tokens) for chunk in chunks] == [74, 2]
    assert chunks[0].embeddings == ()
    assert chunks[1].embeddings == (EmbeddingUse("emb", 0, 2),)


def test_an_embedding_after_a_near_comma_moves_with_the_words_around_it() -> None:
    chunks = _chunks("a" * 55 + "," + "b" * 5 + "emb" + "b" * 12 + "c", {"emb": 2})
    assert [len(chunk.tokens) for chunk in chunks] == [56, 20]
    assert chunks[0].embeddings == ()
    assert chunks[1].embeddings == (EmbeddingUse("emb", 5, 2),)
    assert chunks[1].tokens[5:7] == (0, 0)


def test_the_names_of_embeddings_used_are_listed_once_in_order() -> None:
    _, used = _chunker({"foo": 1, "bar": 1, "baz": 1}).chunks("bar, foo, bar")
    assert used == ["bar", "foo"]


def test_trigger_names_are_tokenized_once_per_chunker() -> None:
    calls: list[list[str]] = []

    def tokenize(texts: list[str]) -> list[list[int]]:
        calls.append(texts)
        return _char_tokens(texts)

    chunker = Chunker(tokenize, COMMA, {"emb": 1, "other": 2})
    chunker.chunks("emb")
    chunker.chunks("other emb")
    assert calls.count(["emb", "other"]) == 1


def test_an_embedding_wider_than_a_chunk_is_refused_naming_it() -> None:
    with pytest.raises(RequestError) as caught:
        _chunker({"huge": 80}).chunks("a huge", field="negative_prompt")
    assert caught.value.field == "negative_prompt"
    assert caught.value.value == "huge"
    assert "80 vectors" in str(caught.value)


def test_up_to_20_chunks_work_and_more_are_refused_naming_the_field() -> None:
    assert len(_chunks("a" * 75 * 20)) == 20
    with pytest.raises(RequestError) as caught:
        _chunks("a" * (75 * 20 + 1))
    assert caught.value.field == "prompt"
    assert "it is 21 chunks of 75 tokens; at most 20 chunks (1500 tokens) are allowed; shorten it" in str(caught.value)
    with pytest.raises(RequestError, match="^negative_prompt: "):
        _chunker().chunks("a BREAK " * 20 + "b", field="negative_prompt")


def test_max_chunks_sets_the_limit() -> None:
    with pytest.raises(RequestError, match="it is 3 chunks of 75 tokens; at most 2 chunks \\(150 tokens\\)"):
        _chunker(max_chunks=2).chunks("a BREAK b BREAK c")


# --- the token counter -----------------------------------------------------------------------------------------

def test_count_is_tokens_used_and_75_per_chunk() -> None:
    chunker = _chunker({"emb": 4})
    assert chunker.count("", 20) == (0, 75)
    assert chunker.count("(ab), c", 20) == (4, 75)
    assert chunker.count("a" * 80, 20) == (80, 150)
    assert chunker.count("a BREAK b", 20) == (2, 150)
    assert chunker.count("x emb", 20) == (5, 75)  # an embedding counts its vectors


def test_count_takes_the_longest_text_of_the_prompt_editing_schedule() -> None:
    chunker = _chunker()
    assert chunker.count("[aaaa:bb:0.5]", 20) == (4, 75)
    assert chunker.count("[bb:" + "a" * 80 + ":0.5]", 20) == (80, 150)
    assert chunker.count("[a|bbb|cc]", 20) == (3, 75)


def test_count_does_not_refuse_a_prompt_too_long_to_generate() -> None:
    assert _chunker().count("a" * 1600, 20) == (1600, 75 * 22)


# --- the bundled CLIP tokenizer ----------------------------------------------------------------------------------

def test_counting_chunker_reads_text_with_clips_vocabulary() -> None:
    chunks, used = counting_chunker().chunks("a photo of a cat")
    assert chunks == [Chunk((320, 1125, 539, 320, 2368), (1.0,) * 5)]
    assert used == []
    assert counting_chunker().count("a photo of a cat", 20) == (5, 75)
    assert counting_chunker().comma_token == 267


def test_counting_chunker_splits_a_100_word_prompt_into_two_chunks() -> None:
    chunks, _ = counting_chunker().chunks(" ".join(["cat"] * 100))
    assert [len(chunk.tokens) for chunk in chunks] == [75, 25]
    assert counting_chunker().count(" ".join(["cat"] * 100), 20) == (100, 150)


def test_counting_chunker_counts_an_embeddings_vectors() -> None:
    chunker = counting_chunker({"EasyNegative": 8})
    assert chunker.count("a cat, EasyNegative", 20) == (3 + 8, 75)
    assert chunker.chunks("EasyNegative")[1] == ["EasyNegative"]


def test_the_token_counter_does_not_import_torch() -> None:
    code = ("import sys, sdlocal.engine.prompts as p; p.counting_chunker().count('a cat ' * 60, 20); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr
    assert "sequence length is longer" not in result.stderr
