"""Prompt matrix: every combination of a prompt's optional ``|`` parts, as one labelled grid (A1111's script).

``a photo|red hat|blue background`` is the base ``a photo`` and two optional parts, so four cells: the base
alone, with the hat, with the background, with both. Combination ``c`` takes part ``i`` when bit ``i`` of ``c``
is set, which is why the first half of the parts label the columns and the rest the rows: a column or a row
is one choice of its parts, and a part a cell leaves out is drawn struck through in its legend. Every cell is
planned and validated before the job is queued, so a bad prompt is an error naming it and nothing runs.
"""

from __future__ import annotations

import random
from typing import Any

from sdlocal.engine.request import MAX_SEED, GenerationRequest, RequestError
from sdlocal.scripts.plan import (
    MAX_CELLS,
    MAX_GRID_MEGAPIXELS,
    Cell,
    GridLayout,
    Label,
    ScriptContext,
    ScriptPlan,
    clone,
)
from sdlocal.scripts.xyz import as_bool, read_args

NAME, TITLE = "prompt matrix", "Prompt matrix"
# A1111's run() arguments, in order, with the UI's defaults.
ARGS: tuple[tuple[str, Any], ...] = (
    ("put_at_start", False), ("different_seeds", False), ("prompt_type", "positive"),
    ("variations_delimiter", "comma"), ("margin_size", 0),
)
PROMPT_TYPES = ("positive", "negative")
DELIMITERS = {"comma": ", ", "space": " "}
MAX_MARGIN = 500


def _choice(name: str, value: Any, choices: tuple[str, ...] | list[str]) -> str:
    if isinstance(value, str) and value.strip().lower() in choices:
        return value.strip().lower()
    raise RequestError(name, value, f"must be one of {', '.join(choices)}")


def _margin(value: Any) -> int:
    try:
        margin = int(value or 0)
    except (TypeError, ValueError):
        margin = -1
    if isinstance(value, bool) or not 0 <= margin <= MAX_MARGIN or (isinstance(value, float) and value != margin):
        raise RequestError("margin_size", value, f"must be a whole number of pixels from 0 to {MAX_MARGIN}")
    return margin


def split_parts(text: str, field: str) -> tuple[str, list[str]]:
    """The base and the optional parts of ``text``: the optional ones stripped of spaces and commas at their
    ends (as A1111 strips them, so "red hat," joins as "red hat"), the base kept as written, as A1111 keeps it."""
    pieces = text.split("|")
    if len(pieces) < 2:
        raise RequestError(field, text, "needs optional parts after '|', e.g. 'a photo|red hat|blue background' "
                                        "(the first part is always used, every combination of the others is a cell)")
    parts = [piece.strip().strip(",").strip() for piece in pieces[1:]]
    for number, part in enumerate(parts, start=1):
        if not part.strip():
            raise RequestError(field, text, f"optional part {number} is empty: remove the extra '|'")
    return pieces[0], parts


def combine(base: str, parts: list[str], combination: int, delimiter: str, at_start: bool) -> str:
    """The prompt of cell ``combination``: the parts whose bit is set, after the base (before it ``at_start``)."""
    chosen = [part for i, part in enumerate(parts) if combination & (1 << i)]
    return delimiter.join(chosen + [base] if at_start else [base] + chosen)


def plan(base: GenerationRequest, args: list[Any] | None, ctx: ScriptContext) -> ScriptPlan:
    """The prompt matrix of ``base`` (an already validated request; img2img when it has a source)."""
    values = read_args(args, ARGS)
    at_start = as_bool("put_at_start", values["put_at_start"])
    different_seeds = as_bool("different_seeds", values["different_seeds"])
    prompt_type = _choice("prompt_type", values["prompt_type"], PROMPT_TYPES)
    delimiter_name = _choice("variations_delimiter", values["variations_delimiter"], list(DELIMITERS))
    margin = _margin(values["margin_size"])
    field = "prompt" if prompt_type == "positive" else "negative_prompt"
    text = getattr(base, field)
    head, parts = split_parts(text, field)
    count = 2 ** len(parts)
    _check_size(base, count, field)
    base = clone(base)
    if base.seed == -1:
        base.seed = random.randint(0, MAX_SEED - 1)
    columns, rows = 2 ** ((len(parts) + 1) // 2), 2 ** (len(parts) // 2)
    cells = []
    for combination in range(count):
        request = clone(base)
        request.batch_size = request.batch_count = 1  # one picture per combination, as A1111 makes
        setattr(request, field, combine(head, parts, combination, DELIMITERS[delimiter_name], at_start))
        if different_seeds:
            request.seed = (base.seed + combination) % (MAX_SEED + 1)
        _validate(request, ctx, field, combination)
        cells.append(Cell(request=request, index=combination, position=(combination % columns,
                                                                         combination // columns, 0)))
    split = (len(parts) + 1) // 2
    layout = GridLayout(columns=columns, rows=rows, x_labels=_legends(parts[:split], columns),
                        y_labels=_legends(parts[split:], rows) if len(parts) > 1 else [], margin=margin)
    script_plan = ScriptPlan(script=NAME, title=TITLE, base=base, cells=cells, run_order=list(range(count)),
                             grid=layout, grid_infotext=_grid_infotext(text, prompt_type, at_start, different_seeds,
                                                                       delimiter_name, margin),
                             save_cells=True, return_cells=True)
    script_plan.summary = (f"Prompt matrix will create {count} images on a {columns}x{rows} grid, one per "
                           f"combination of {len(parts)} optional part{'s' if len(parts) > 1 else ''}. "
                           f"(Total steps to process: {script_plan.total_steps})")
    return script_plan


def _legends(parts: list[str], count: int) -> list[list[Label]]:
    """For column (or row) ``n``: every one of its parts, active when bit i of ``n`` takes part i."""
    return [[Label(part, bool(n & (1 << i))) for i, part in enumerate(parts)] for n in range(count)]


def _check_size(base: GenerationRequest, count: int, field: str) -> None:
    parts = count.bit_length() - 1
    if count > MAX_CELLS:
        raise RequestError(field, f"<{parts} optional parts>",
                           f"make {count} cells; a matrix takes at most {MAX_CELLS}: use fewer '|' parts")
    width, height = base.width, base.height
    if base.hires is not None:
        sizes = base.hires.sizes(width, height)
        width, height = sizes.final_width, sizes.final_height
    megapixels = count * width * height / 1e6
    if megapixels > MAX_GRID_MEGAPIXELS:
        raise RequestError(field, f"<{parts} optional parts>",
                           f"make a {megapixels:.0f}-megapixel grid of {count} {width}x{height} cells; the most is "
                           f"{MAX_GRID_MEGAPIXELS}: use fewer '|' parts or a smaller size")


def _validate(request: GenerationRequest, ctx: ScriptContext, field: str, combination: int) -> None:
    try:
        ctx.engine.validate(request)
    except RequestError as exc:
        raise RequestError(field, exc.value, f"makes cell {combination + 1} ({getattr(request, field)!r}) invalid: "
                                             f"{exc.field} {exc.allowed}") from None


def _grid_infotext(text: str, prompt_type: str, at_start: bool, different_seeds: bool, delimiter: str,
                   margin: int) -> dict[str, str]:
    """What PNG Info needs to run the matrix again: the whole ``|`` prompt (the grid's own Prompt line is the
    first cell's, the base alone) and the arguments that differ from A1111's defaults."""
    pairs = {"Script": TITLE, "Prompt matrix": text}
    if prompt_type != "positive":
        pairs["Prompt matrix type"] = prompt_type
    if at_start:
        pairs["Prompt matrix at start"] = "True"
    if different_seeds:
        pairs["Prompt matrix different seeds"] = "True"
    if delimiter != "comma":
        pairs["Prompt matrix delimiter"] = delimiter
    if margin:
        pairs["Prompt matrix margin"] = str(margin)
    return pairs


def args_from_infotext(params: dict[str, str], img2img: bool = False) -> list[Any] | None:
    """A matrix grid's parameters (``parse_infotext`` of its PNG) back into A1111's 5 arguments, as
    ``xyz.args_from_infotext`` does for a plot; None when the text is not a prompt matrix grid's. The grid's own
    Prompt is its first cell's (the base alone): ``prompt_from_infotext`` gives the ``|`` prompt to put back."""
    if params.get("Script", "").strip().lower() != TITLE.lower() or not params.get("Prompt matrix"):
        return None
    margin = params.get("Prompt matrix margin", "0")
    prompt_type = params.get("Prompt matrix type", "positive")
    delimiter = params.get("Prompt matrix delimiter", "comma")
    return [params.get("Prompt matrix at start") == "True", params.get("Prompt matrix different seeds") == "True",
            prompt_type if prompt_type in PROMPT_TYPES else "positive", delimiter if delimiter in DELIMITERS
            else "comma", min(int(margin), MAX_MARGIN) if margin.isdigit() else 0]


def prompt_from_infotext(params: dict[str, str]) -> tuple[str, str] | None:
    """(the field, the whole ``|`` prompt) of a matrix grid: ("prompt", ...) or ("negative_prompt", ...)."""
    if args_from_infotext(params) is None:
        return None
    field = "negative_prompt" if params.get("Prompt matrix type") == "negative" else "prompt"
    return field, params["Prompt matrix"]


def describe(img2img: bool, ctx: ScriptContext) -> list[Any]:
    """The arguments as A1111's UI labels them (``/sdapi/v1/script-info``)."""
    from sdlocal.scripts import ScriptArg

    return [
        ScriptArg("Put variable parts at start of prompt", False),
        ScriptArg("Use different seed for each picture", False),
        ScriptArg("Select prompt", "positive", choices=list(PROMPT_TYPES)),
        ScriptArg("Select joining char", "comma", choices=list(DELIMITERS)),
        ScriptArg("Grid margins (px)", 0, minimum=0, maximum=MAX_MARGIN, step=2),
    ]
