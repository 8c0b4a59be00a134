"""X/Y/Z plot: the same picture across up to three axes of settings, as one labelled grid (A1111's script).

The arguments come in A1111's order (``ARGS``), from the UI or an API client's ``script_args``; every cell
is planned and validated before the job is queued, so a bad value (an unknown sampler, steps 500, a Prompt
S/R word that is not in the prompt) is an error naming the argument and nothing runs.
"""

from __future__ import annotations

import random
from typing import Any

from sdlocal.engine.request import MAX_SEED, GenerationRequest, RequestError
from sdlocal.scripts.axes import Axis, find_axis
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
from sdlocal.scripts.values import join_values

NAME, TITLE = "x/y/z plot", "X/Y/Z plot"
# A1111's run() arguments, in order, with the UI's defaults (an API client may send fewer: the rest default).
ARGS: tuple[tuple[str, Any], ...] = (
    ("x_type", 1), ("x_values", ""), ("x_values_dropdown", []),
    ("y_type", 0), ("y_values", ""), ("y_values_dropdown", []),
    ("z_type", 0), ("z_values", ""), ("z_values_dropdown", []),
    ("draw_legend", True), ("include_lone_images", False), ("include_sub_grids", False),
    ("no_fixed_seeds", False), ("vary_seeds_x", False), ("vary_seeds_y", False), ("vary_seeds_z", False),
    ("margin_size", 0), ("csv_mode", False),
)
MAX_MARGIN = 500


def as_bool(name: str, value: Any) -> bool:
    """A checkbox argument: true/false, 1/0, or the strings "true"/"false" some clients send."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no", ""):
        return value.strip().lower() in ("true", "1", "yes")
    raise RequestError(name, value, "must be true or false")


def read_args(args: list[Any] | tuple[Any, ...] | None, names: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """Positional script arguments as a dict by A1111's names; missing ones take the defaults."""
    args = list(args or [])
    if len(args) > len(names):
        raise RequestError("script_args", f"<{len(args)} values>",
                           f"takes at most {len(names)}: {', '.join(name for name, _ in names)}")
    values = {name: (args[i] if i < len(args) else default) for i, (name, default) in enumerate(names)}
    return values


def _text(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise RequestError(name, value, "must be text: values separated by commas")
    return value


def _dropdown(name: str, value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, (str, int, float)) for item in value):
        raise RequestError(name, value, "must be a list of the axis's choices")
    return [str(item) for item in value]


class _Axis:
    """An axis as planned: which one, its values, and the text its infotext line keeps."""

    def __init__(self, letter: str, axis: Axis, values: list[Any], text: str) -> None:
        self.letter, self.axis, self.values, self.text = letter, axis, values, text

    @property
    def nothing(self) -> bool:
        return self.axis.kind == "nothing"

    def check_choices(self, ctx: ScriptContext) -> None:
        """A list axis's values must be its choices (any case); the right spelling is used from then on."""
        if self.axis.choices is None or self.axis.label in ("Checkpoint name", "Styles"):
            return  # checkpoints take A1111's looser names (found by the engine); styles may be "a, b"
        choices = self.axis.choices(ctx)
        by_lower = {choice.lower(): choice for choice in choices}
        for i, value in enumerate(self.values):
            wanted = str(value).strip().lower()
            found = by_lower.get(wanted)
            if found is None and self.axis.label == "VAE" and wanted:
                # A1111 takes a part of the file name here ("kl-f8" for kl-f8-anime2.ckpt): the shortest name
                # holding it, so the exact stem wins over longer names that contain it.
                found = next(iter(sorted((c for c in choices if wanted in c.lower()), key=len)), None)
            if found is None:
                raise RequestError(f"{self.letter}_values", value,
                                   f"is not a {self.axis.label} here; choose from {', '.join(choices)}")
            self.values[i] = found


def _read_axis(letter: str, values: dict[str, Any], img2img: bool, csv_mode: bool) -> _Axis:
    axis = find_axis(values[f"{letter}_type"], img2img, f"{letter}_type")
    text = _text(f"{letter}_values", values[f"{letter}_values"])
    dropdown = _dropdown(f"{letter}_values_dropdown", values[f"{letter}_values_dropdown"])
    use_dropdown = axis.choices is not None and not csv_mode and bool(dropdown)
    parsed = axis.values(text, dropdown if use_dropdown else None, f"{letter}_values")
    return _Axis(letter, axis, parsed, join_values(dropdown) if use_dropdown else text.strip())


def _fix_seeds(axis: _Axis) -> None:
    if axis.axis.label == "Seed":
        axis.values = [random.randint(0, MAX_SEED - 1) if value == -1 else value for value in axis.values]


def plan(base: GenerationRequest, args: list[Any] | None, ctx: ScriptContext) -> ScriptPlan:
    """The X/Y/Z plot of ``base`` (an already validated request; img2img when it has a source)."""
    values = read_args(args, ARGS)
    img2img = base.source is not None
    csv_mode = as_bool("csv_mode", values["csv_mode"])
    axes = [_read_axis(letter, values, img2img, csv_mode) for letter in "xyz"]
    flags = {name: as_bool(name, values[name]) for name in ("draw_legend", "include_lone_images",
                                                            "include_sub_grids", "no_fixed_seeds", "vary_seeds_x",
                                                            "vary_seeds_y", "vary_seeds_z")}
    margin = _margin(values["margin_size"])
    for axis in axes:
        axis.check_choices(ctx)
    base = clone(base)
    if not flags["no_fixed_seeds"]:
        if base.seed == -1:
            base.seed = random.randint(0, MAX_SEED - 1)
        for axis in axes:
            _fix_seeds(axis)
    x, y, z = axes
    _check_size(base, x, y, z)
    cells = _cells(base, x, y, z, flags, ctx)
    layout = GridLayout(
        columns=len(x.values), rows=len(y.values),
        x_labels=[[Label(x.axis.format(value))] for value in x.values] if not x.nothing else [],
        y_labels=[[Label(y.axis.format(value))] for value in y.values] if not y.nothing else [],
        z_labels=[z.axis.format(value) for value in z.values] if not z.nothing else [],
        margin=margin, draw_legend=flags["draw_legend"], sub_grids=flags["include_sub_grids"],
    )
    script_plan = ScriptPlan(script=NAME, title=TITLE, base=base, cells=cells,
                             run_order=_run_order(cells, axes, ctx), grid=layout,
                             grid_infotext=_grid_infotext(axes, flags["no_fixed_seeds"]),
                             save_cells=flags["include_lone_images"], return_cells=flags["include_lone_images"])
    script_plan.summary = _summary(script_plan, layout)
    return script_plan


def _margin(value: Any) -> int:
    try:
        margin = int(value or 0)
    except (TypeError, ValueError):
        raise RequestError("margin_size", value, f"must be a whole number of pixels from 0 to {MAX_MARGIN}") from None
    if not 0 <= margin <= MAX_MARGIN:
        raise RequestError("margin_size", value, f"must be a whole number of pixels from 0 to {MAX_MARGIN}")
    return margin


def _check_size(base: GenerationRequest, x: _Axis, y: _Axis, z: _Axis) -> None:
    count = len(x.values) * len(y.values) * len(z.values)
    if count > MAX_CELLS:
        raise RequestError("x_values", f"{len(x.values)}x{len(y.values)}x{len(z.values)}",
                           f"makes {count} cells; a plot takes at most {MAX_CELLS}")
    width, height = base.width, base.height
    if base.hires is not None:
        sizes = base.hires.sizes(width, height)
        width, height = sizes.final_width, sizes.final_height
    for axis in (x, y, z):
        if axis.axis.kind == "size":
            width, height = max(w for w, _ in axis.values), max(h for _, h in axis.values)
    megapixels = count * width * height / 1e6
    if megapixels > MAX_GRID_MEGAPIXELS:
        raise RequestError("x_values", f"{count} cells of {width}x{height}",
                           f"make a {megapixels:.0f}-megapixel grid; the most is {MAX_GRID_MEGAPIXELS}: use fewer "
                           "values or a smaller size")


def _cells(base: GenerationRequest, x: _Axis, y: _Axis, z: _Axis, flags: dict[str, bool],
           ctx: ScriptContext) -> list[Cell]:
    cells = []
    columns, rows = len(x.values), len(y.values)
    for iz, z_value in enumerate(z.values):
        for iy, y_value in enumerate(y.values):
            for ix, x_value in enumerate(x.values):
                request = clone(base)
                for axis, value in ((x, x_value), (y, y_value), (z, z_value)):
                    axis.axis.apply(request, value, axis.values, ctx, f"{axis.letter}_values")
                if flags["vary_seeds_x"] or flags["vary_seeds_y"] or flags["vary_seeds_z"]:
                    if request.seed != -1:
                        request.seed = (request.seed + ix * flags["vary_seeds_x"]
                                        + iy * columns * flags["vary_seeds_y"]
                                        + iz * columns * rows * flags["vary_seeds_z"]) % (MAX_SEED + 1)
                _validate(request, ctx, base, ((x, x_value), (y, y_value), (z, z_value)))
                cells.append(Cell(request=request, index=len(cells), position=(ix, iy, iz)))
    return cells


def _validate(request: GenerationRequest, ctx: ScriptContext, base: GenerationRequest,
              cell: tuple[tuple[_Axis, Any], ...]) -> None:
    """The engine's own checks on a cell; an error names the axis whose value made the request bad (the first
    one that fails on its own) and the cell's values."""
    try:
        ctx.engine.validate(request)
    except RequestError as exc:
        where = ", ".join(axis.axis.format(value) or axis.axis.label for axis, value in cell if not axis.nothing)
        culprit = next((axis for axis, value in cell if not axis.nothing and _fails_alone(base, axis, value, ctx)),
                       next((axis for axis, _ in cell if not axis.nothing), None))
        name = f"{culprit.letter}_values" if culprit is not None else "script_args"
        raise RequestError(name, exc.value, f"makes the cell ({where}) invalid: {exc.field} {exc.allowed}") \
            from None


def _fails_alone(base: GenerationRequest, axis: _Axis, value: Any, ctx: ScriptContext) -> bool:
    request = clone(base)
    try:
        axis.axis.apply(request, value, axis.values, ctx, f"{axis.letter}_values")
        ctx.engine.validate(request)
    except RequestError:
        return True
    return False


def _run_order(cells: list[Cell], axes: list[_Axis], ctx: ScriptContext) -> list[int]:
    """A1111's order: the costliest axis (checkpoint, then VAE) outermost, so its change happens least often.
    A checkpoint axis runs the model already loaded last: no load for it, and no reload when the grid ends."""
    costs = [axis.axis.cost for axis in axes]
    order = sorted(range(3), key=lambda i: (-costs[i], -i))  # ties: z outermost, then y, then x (A1111's)
    keys: list[list[int]] = [list(range(len(axis.values))) for axis in axes]
    for i, axis in enumerate(axes):
        if axis.axis.label == "Checkpoint name" and ctx.current_model:
            for position in range(len(axis.values)):
                cell = next(c for c in cells if c.position[i] == position)
                if cell.request.model == ctx.current_model:
                    keys[i][position] = len(axis.values)  # after every other value
    return sorted(range(len(cells)),
                  key=lambda n: tuple(keys[i][cells[n].position[i]] for i in order) + (cells[n].index,))


def _grid_infotext(axes: list[_Axis], no_fixed_seeds: bool) -> dict[str, str]:
    pairs = {"Script": TITLE}
    for axis in axes:
        if axis.nothing:
            continue
        letter = axis.letter.upper()
        pairs[f"{letter} Type"] = axis.axis.label
        pairs[f"{letter} Values"] = axis.text
        if axis.axis.label == "Seed" and not no_fixed_seeds:
            pairs[f"Fixed {letter} Values"] = ", ".join(str(value) for value in axis.values)
    return pairs


def _summary(script_plan: ScriptPlan, layout: GridLayout) -> str:
    per_cell = script_plan.base.batch_size * script_plan.base.batch_count
    grids = layout.grids
    text = (f"X/Y/Z plot will create {script_plan.images} images on {grids} {layout.columns}x{layout.rows} "
            f"grid{'s' if grids > 1 else ''}")
    if per_cell > 1:
        text += f"; {per_cell} images per cell"
    return text + f". (Total steps to process: {script_plan.total_steps})"


def describe(img2img: bool, ctx: ScriptContext) -> list[Any]:
    """The arguments as ``/sdapi/v1/script-info`` lists them: an axis argument's choices are the axis labels
    (the API sends the index into that list); a values dropdown lists nothing until an axis is chosen."""
    from sdlocal.scripts import ScriptArg
    from sdlocal.scripts.axes import axes_for

    labels = [axis.label for axis in axes_for(img2img)]
    described = []
    for name, default in ARGS:
        label = name.replace("_", " ").capitalize()
        if name.endswith("_type"):
            described.append(ScriptArg(label, labels[default], choices=labels))
        elif name == "margin_size":
            described.append(ScriptArg("Grid margins (px)", default, minimum=0, maximum=MAX_MARGIN, step=2))
        else:
            described.append(ScriptArg(label, default))
    return described


def args_from_infotext(params: dict[str, str], img2img: bool) -> list[Any] | None:
    """A grid's parameters (``parse_infotext`` of its PNG) back into the 18 arguments, so PNG Info and "Send to"
    set the plot up again; None when the text is not an X/Y/Z grid's. An axis this side cannot plot (an img2img
    axis sent to txt2img, say) becomes Nothing rather than an error: the rest of the picture's settings still apply.
    """
    from sdlocal.scripts.axes import axes_for
    from sdlocal.scripts.values import split_values

    if params.get("Script", "").strip().lower() != TITLE.lower():
        return None
    values = dict(ARGS)
    labels = {axis.label.lower(): axis for axis in axes_for(img2img) if axis.supported}
    for letter in "xyz":
        axis = labels.get(params.get(f"{letter.upper()} Type", "").strip().lower())
        text = params.get(f"{letter.upper()} Values", "")
        values[f"{letter}_type"] = axis.label if axis is not None else "Nothing"
        values[f"{letter}_values"] = text if axis is not None else ""
        values[f"{letter}_values_dropdown"] = split_values(text) if axis is not None and axis.choices else []
    return [values[name] for name, _ in ARGS]
