"""Prompts from file or textbox: one generation per line, each line a prompt or A1111's ``--option`` list.

Every line becomes a complete request, built and validated before the job is queued, so a typo on line 40
(bad quoting, an unknown option, ``--steps abc``, a sampler that does not exist) is an error naming that line
and nothing runs: a long list is never half done because of its last line. There is no grid; each line's
pictures are saved to txt2img (or img2img) as an ordinary generation with its own parameters.
"""

from __future__ import annotations

import random
import shlex
from collections.abc import Callable
from typing import Any

from sdlocal.engine.request import MAX_SEED, GenerationRequest, ModelNotFoundError, RequestError
from sdlocal.scripts.plan import MAX_CELLS, Cell, ScriptContext, ScriptPlan, clone
from sdlocal.scripts.xyz import as_bool, read_args

NAME, TITLE = "prompts from file or textbox", "Prompts from file or textbox"
# A1111's run() arguments, in order, with the UI's defaults (the file upload only fills prompt_txt).
ARGS: tuple[tuple[str, Any], ...] = (
    ("checkbox_iterate", False), ("checkbox_iterate_batch", False), ("prompt_position", "start"),
    ("prompt_txt", ""),
)
POSITIONS = ("start", "end")
FIELD = "prompt_txt"
MAX_LINE_SHOWN = 80


def _whole(text: str) -> int:
    return int(text)


def _number(text: str) -> float:
    return float(text)


# The options A1111 reads that sdlocal has: option -> (request field, how the value is read, what it needs).
OPTIONS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "prompt": ("prompt", str, "text"),
    "negative_prompt": ("negative_prompt", str, "text"),
    "steps": ("steps", _whole, "a whole number"),
    "cfg_scale": ("cfg_scale", _number, "a number"),
    "seed": ("seed", _whole, "a whole number"),
    "sampler_name": ("sampler", str, "a sampler name"),
    "width": ("width", _whole, "a whole number"),
    "height": ("height", _whole, "a whole number"),
    "batch_size": ("batch_size", _whole, "a whole number"),
    "n_iter": ("batch_count", _whole, "a whole number"),
    "clip_skip": ("clip_skip", _whole, "a whole number"),
    "sd_model": ("model", str, "a checkpoint name"),
    "styles": ("styles", str, "style names separated by commas"),
}
# A1111's other options: settings sdlocal does not have (or that only A1111's own saving reads).
NOT_HERE = ("outpath_samples", "outpath_grids", "prompt_for_display", "subseed", "subseed_strength",
            "seed_resize_from_h", "seed_resize_from_w", "sampler_index", "restore_faces", "tiling",
            "do_not_save_samples", "do_not_save_grid")


class LineError(ValueError):
    """What is wrong with one line, in words; ``plan`` turns it into the RequestError naming the line."""


def parse_options(line: str) -> dict[str, Any]:
    """A1111's reading of an options line: ``--name value`` pairs; the words after ``--prompt`` or
    ``--negative_prompt`` up to the next ``--`` option are joined with spaces."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise LineError(f"cannot be read ({exc}): close every quote, or escape a quote inside one") from None
    options: dict[str, Any] = {}
    at = 0
    while at < len(words):
        word = words[at]
        if not word.startswith("--"):
            raise LineError(f"{word!r} is not an option: options start with '--', e.g. --steps 20")
        name = word[2:]
        if name in NOT_HERE:
            raise LineError(f"{word} is an A1111 option sdlocal does not have; options here are "
                            f"{', '.join('--' + known for known in OPTIONS)}")
        if name not in OPTIONS:
            raise LineError(f"{word} is not an option; options are {', '.join('--' + known for known in OPTIONS)}")
        if at + 1 >= len(words):
            raise LineError(f"{word} needs a value after it ({OPTIONS[name][2]})")
        at += 1
        if name in ("prompt", "negative_prompt"):
            text = [words[at]]
            at += 1
            while at < len(words) and not words[at].startswith("--"):
                text.append(words[at])
                at += 1
            options[name] = " ".join(text)
            continue
        _, read, needs = OPTIONS[name]
        try:
            options[name] = read(words[at])
        except ValueError:
            raise LineError(f"{word} needs {needs}, not {words[at]!r}") from None
        at += 1
    return options


def read_lines(text: Any) -> list[tuple[int, dict[str, Any]]]:
    """(line number, options) for every non-empty line; a plain line is ``{"prompt": line}``."""
    if not isinstance(text, str):
        raise RequestError(FIELD, text, "must be text: one prompt per line")
    found = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            found.append((number, parse_options(line) if line.startswith("--") else {"prompt": line}))
        except LineError as exc:
            raise RequestError(FIELD, _shown(line), f"line {number}: {exc}") from None
    if not found:
        raise RequestError(FIELD, text, "has no prompts: write one prompt per line, or upload a text file")
    if len(found) > MAX_CELLS:
        raise RequestError(FIELD, f"<{len(found)} lines>", f"holds too many lines; at most {MAX_CELLS}")
    return found


def _shown(line: str) -> str:
    return line if len(line) <= MAX_LINE_SHOWN else line[:MAX_LINE_SHOWN - 3] + "..."


def _joined(line_text: str, ui_text: str, position: str) -> str:
    """A1111's rule: both given -> joined with a space, the line's first at "start"; else the line's."""
    if line_text and ui_text:
        return f"{line_text} {ui_text}" if position == "start" else f"{ui_text} {line_text}"
    return line_text


def build_request(base: GenerationRequest, options: dict[str, Any], position: str,
                  ctx: ScriptContext) -> GenerationRequest:
    """``base`` with one line's options applied, then its styles; validated by the engine."""
    request = clone(base)
    styles: list[str] = []
    for name, value in options.items():
        target = OPTIONS[name][0]
        if name in ("prompt", "negative_prompt"):
            setattr(request, target, _joined(value, getattr(base, target), position))
        elif name == "sd_model":
            request.model = _model(value, ctx)
        elif name == "styles":
            styles = [style.strip() for style in value.split(",") if style.strip()]
        elif name == "sampler_name":
            request.sampler = _sampler(value, ctx)
        else:
            setattr(request, target, value)
    if styles:
        from sdlocal.styles import apply_styles

        request.prompt, request.negative_prompt = apply_styles(request.prompt, request.negative_prompt, styles,
                                                               ctx.styles)
    ctx.engine.validate(request)
    return request


def _model(name: str, ctx: ScriptContext) -> str:
    try:
        entry = ctx.engine.find_model(name)
    except ModelNotFoundError as exc:
        raise RequestError("model", name, f"is not a checkpoint here; {exc.hint or 'see GET /sdapi/v1/sd-models'}") \
            from None
    if not getattr(entry, "supported", True):
        raise RequestError("model", name, f"cannot be loaded: {entry.reason}")
    return str(entry.name)


def _sampler(name: str, ctx: ScriptContext) -> str:
    """A1111 looks the sampler up in any case; the engine's own check then refuses an unknown one."""
    samplers = getattr(ctx.engine, "samplers", None)
    known = samplers() if callable(samplers) else []
    return next((sampler for sampler in known if sampler.lower() == name.strip().lower()), name)


def plan(base: GenerationRequest, args: list[Any] | None, ctx: ScriptContext) -> ScriptPlan:
    """One cell per line of ``prompt_txt`` over ``base`` (an already validated request)."""
    values = read_args(args, ARGS)
    iterate = as_bool("checkbox_iterate", values["checkbox_iterate"])
    same_seed = as_bool("checkbox_iterate_batch", values["checkbox_iterate_batch"])
    position = values["prompt_position"]
    if not isinstance(position, str) or position.strip().lower() not in POSITIONS:
        raise RequestError("prompt_position", position, f"must be one of {', '.join(POSITIONS)}")
    position = position.strip().lower()
    lines = read_lines(values["prompt_txt"])
    lines_text = values["prompt_txt"].splitlines()
    base = clone(base)
    if (iterate or same_seed) and base.seed == -1:
        base.seed = random.randint(0, MAX_SEED - 1)
    seed, cells = base.seed, []
    for number, options in lines:
        line_base = clone(base)
        line_base.seed = seed
        try:
            request = build_request(line_base, options, position, ctx)
        except RequestError as exc:
            raise _line_error(number, lines_text[number - 1].strip(), options, exc) from None
        cells.append(Cell(request=request, index=len(cells), position=(len(cells), 0, 0)))
        if iterate:  # the next line starts after this line's own pictures (A1111 adds the UI's batch x count)
            seed = (seed + request.batch_size * request.batch_count) % (MAX_SEED + 1)
    script_plan = ScriptPlan(script=NAME, title=TITLE, base=base, cells=cells, run_order=list(range(len(cells))),
                             grid=None, save_cells=True, return_cells=True)
    script_plan.summary = (f"Prompts from file will create {script_plan.images} images from {len(cells)} "
                           f"line{'s' if len(cells) > 1 else ''}. (Total steps to process: {script_plan.total_steps})")
    return script_plan


def _line_error(number: int, line: str, options: dict[str, Any], exc: RequestError) -> RequestError:
    """The request's complaint about line ``number``, in the line's terms: the option that set the field."""
    option = exc.field
    if line.startswith("--"):
        option = next((f"--{name}" for name, (target, _, _) in OPTIONS.items()
                       if target == exc.field and name in options), exc.field)
    return RequestError(FIELD, _shown(line), f"line {number}: {option} {exc.value!r} is not allowed; {exc.allowed}")


def describe(img2img: bool, ctx: ScriptContext) -> list[Any]:
    """The arguments as A1111's UI labels them (``/sdapi/v1/script-info``)."""
    from sdlocal.scripts import ScriptArg

    return [
        ScriptArg("Iterate seed every line", False),
        ScriptArg("Use same random seed for all lines", False),
        ScriptArg("Insert prompts at the", "start", choices=list(POSITIONS)),
        ScriptArg("List of prompt inputs", ""),
    ]
