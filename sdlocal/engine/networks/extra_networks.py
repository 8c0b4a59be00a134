"""A1111's extra-network tags in a prompt: ``<lora:name:te[:unet[:dyn]]>``, the named ``te=``, ``unet=``,
``dyn=``, and ``<lyco:...>`` (the LyCORIS extension's spelling, the same thing since A1111 1.5).

The tags are taken out of the text the text encoder reads (replaced by nothing, as A1111 does; CLIP's tokenizer
ignores the spaces left around them) and kept in the request's own prompt, so the infotext and "Reuse all
parameters" still have them.
A tag of another kind (``<hypernet:...>``) is taken out too, as A1111 does, with a warning: sdlocal does not run
hypernetworks, and reading one as words would only add noise to the prompt.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sdlocal.engine.request import RequestError

# A1111's rule: a word, a colon, then anything up to the next ">".
TAG = re.compile(r"<(\w+):([^>]+)>")
LORA_KINDS = ("lora", "lyco")


@dataclass(frozen=True)
class NetworkUse:
    """One ``<lora:...>`` tag: the name as written, the text-encoder and UNet multipliers, A1111's ``dyn`` (a
    LyCORIS rank limit, which sdlocal reads but does not apply: it warns), and the tag itself for messages."""

    kind: str
    name: str
    te: float = 1.0
    unet: float = 1.0
    dyn: int | None = None
    tag: str = ""


def _number(value: str, tag: str, field: str, what: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise RequestError(field, tag, f"the {what} {value.strip()!r} is not a number: write it as "
                                       "<lora:name:0.8> or <lora:name:te=0.8:unet=0.5>")
    return number


def _use(kind: str, body: str, tag: str, field: str) -> NetworkUse:
    """A1111's reading of the arguments: positional ``name:te:unet:dyn``, then named ones override; the UNet
    multiplier defaults to the text encoder's."""
    positional: list[str] = []
    named: dict[str, str] = {}
    for part in body.split(":"):
        key, equals, value = part.partition("=")
        if equals and key.strip():
            named[key.strip()] = value
        else:
            positional.append(part)
    name = positional[0].strip() if positional else ""
    if not name:
        raise RequestError(field, tag, "the tag has no name: write <lora:name:1>, with the LoRA's file name")
    unknown = sorted(set(named) - {"te", "unet", "dyn"})
    if unknown:
        raise RequestError(field, tag, f"unknown argument {unknown[0]!r}: a LoRA tag takes te=, unet= and dyn=")
    te = _number(positional[1], tag, field, "weight") if len(positional) > 1 else 1.0
    te = _number(named["te"], tag, field, "te weight") if "te" in named else te
    unet = _number(positional[2], tag, field, "unet weight") if len(positional) > 2 else te
    unet = _number(named["unet"], tag, field, "unet weight") if "unet" in named else unet
    dyn_text = named.get("dyn", positional[3] if len(positional) > 3 else None)
    dyn = None
    if dyn_text is not None and dyn_text.strip():
        dyn_value = _number(dyn_text, tag, field, "dyn")
        if dyn_value != int(dyn_value) or dyn_value < 0:
            raise RequestError(field, tag, "dyn= must be a whole number (a rank), or left out")
        dyn = int(dyn_value)
    return NetworkUse(kind=kind, name=name, te=te, unet=unet, dyn=dyn, tag=tag)


def parse_networks(text: str, field: str = "prompt") -> tuple[str, list[NetworkUse], list[str]]:
    """(the text without tags, the LoRA tags in order, the kinds of other tags taken out).

    A tag with a bad argument is a ``RequestError`` on ``field`` that quotes the tag and says how to write it.
    """
    uses: list[NetworkUse] = []
    others: list[str] = []

    def take(match: re.Match[str]) -> str:
        kind = match.group(1)
        if kind.lower() in LORA_KINDS:
            uses.append(_use(kind.lower(), match.group(2), match.group(0), field))
        elif kind not in others:
            others.append(kind)
        return ""

    return TAG.sub(take, text or ""), uses, others


def strip_networks(text: str) -> str:
    """The text the encoder reads (for token counters); never raises: a malformed tag is simply taken out."""
    return TAG.sub("", text or "")
