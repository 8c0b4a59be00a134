"""``<lora:...>`` tags read as A1111 reads them: positional and named weights, ``<lyco:>``, several tags, and
the tags taken out of the text the encoder sees."""

from __future__ import annotations

import pytest

from sdlocal.engine.networks.extra_networks import NetworkUse, parse_networks, strip_networks
from sdlocal.engine.request import RequestError


def test_a_tag_with_one_weight_sets_both_multipliers_and_leaves_the_rest_of_the_prompt():
    text, uses, others = parse_networks("a castle, <lora:pixel-art:0.8> at night")
    assert text == "a castle,  at night"
    assert uses == [NetworkUse("lora", "pixel-art", te=0.8, unet=0.8, tag="<lora:pixel-art:0.8>")]
    assert others == []


@pytest.mark.parametrize(("tag", "te", "unet", "dyn"), [
    ("<lora:x>", 1.0, 1.0, None),
    ("<lora:x:0.5:0.25>", 0.5, 0.25, None),
    ("<lora:x:te=0.5>", 0.5, 0.5, None),  # A1111: the UNet multiplier defaults to the text encoder's
    ("<lora:x:unet=0.3>", 1.0, 0.3, None),
    ("<lora:x:0.7:unet=0>", 0.7, 0.0, None),
    ("<lora:x:te=0:unet=1.2>", 0.0, 1.2, None),
    ("<lora:x:1:1:8>", 1.0, 1.0, 8),
    ("<lora:x:0.6:dyn=16>", 0.6, 0.6, 16),
    ("<lora:x:-1>", -1.0, -1.0, None),  # negative weights are how people subtract a style
])
def test_positional_and_named_arguments_follow_a1111(tag, te, unet, dyn):
    _text, (use,), _others = parse_networks(tag)
    assert (use.name, use.te, use.unet, use.dyn) == ("x", te, unet, dyn)


def test_lyco_tags_are_loras_and_several_tags_keep_their_order():
    text, uses, _ = parse_networks("<lyco:hada-style:0.6> girl <lora:detail:1> <LORA:Detail:0.2>")
    assert [(u.kind, u.name, u.te) for u in uses] == [("lyco", "hada-style", 0.6), ("lora", "detail", 1.0),
                                                      ("lora", "Detail", 0.2)]
    assert text.split() == ["girl"]


def test_a_name_may_be_a_subfolder_path_with_spaces():
    _, (use,), _ = parse_networks("<lora:styles/Oil Painting v2:0.9>")
    assert use.name == "styles/Oil Painting v2"


def test_other_kinds_of_tag_are_taken_out_and_named_and_plain_brackets_are_text():
    text, uses, others = parse_networks("<hypernet:anime:1> a <b> (cat:1.2) <hypernet:x:1>")
    assert uses == [] and others == ["hypernet"]
    assert text == " a <b> (cat:1.2) "


@pytest.mark.parametrize(("tag", "says"), [
    ("<lora:x:abc>", "'abc' is not a number"),
    ("<lora:x:nan>", "not a number"),
    ("<lora:x:1:inf>", "not a number"),
    ("<lora::1>", "has no name"),
    ("<lora:x:strength=1>", "unknown argument 'strength'"),
    ("<lora:x:1:1:2.5>", "whole number"),
])
def test_a_bad_tag_is_an_error_that_names_the_field_and_shows_the_right_spelling(tag, says):
    with pytest.raises(RequestError) as raised:
        parse_networks(f"a cat {tag}", field="prompt")
    assert raised.value.field == "prompt"
    assert says in str(raised.value)
    assert tag in str(raised.value)


def test_a_prompt_without_tags_is_returned_unchanged():
    prompt = "a (red:1.2) [cat:dog:5] BREAK on a hill"
    assert parse_networks(prompt) == (prompt, [], [])
    assert strip_networks(prompt) == prompt


def test_the_token_counter_text_drops_even_a_malformed_tag():
    assert strip_networks("a <lora:x:abc> cat") == "a  cat"


def test_the_engine_refuses_a_malformed_tag_before_loading_anything(engine, request_for):
    request = request_for(prompt="a cat <lora:x:abc>")
    with pytest.raises(RequestError) as raised:
        engine.validate(request)
    assert raised.value.field == "prompt"
    assert engine.current_model is None
