"""What a script is: many ordinary requests and how their pictures make one grid.

A script (X/Y/Z plot, prompt matrix, prompts from file) never generates anything itself. It turns one request
and its arguments into a ``ScriptPlan``: the cells (each a complete ``GenerationRequest``, validated like any
other), the order to run them in, and the grid's layout and infotext. The queue's worker runs the plan with
``runner.run_plan`` on the same engine as any generation, so the engine never knows a grid exists and every
cell is exactly the single run its request describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdlocal.engine.request import GenerationRequest, GenerationResult

# A grid past this many megapixels is refused (A1111's img_max_size_mp default); past CONFIRM_IMAGES the UI asks.
MAX_GRID_MEGAPIXELS = 200
CONFIRM_IMAGES = 100
MAX_CELLS = 10_000  # a typo such as 1-100000 is refused before anything is planned


@dataclass(frozen=True)
class Label:
    """One line of a grid legend; an inactive one is drawn struck through (the prompt matrix's unused parts)."""

    text: str
    active: bool = True


@dataclass
class Cell:
    """One request of the plan and where its first picture goes: ``index`` = ix + iy*columns + iz*columns*rows."""

    request: GenerationRequest
    index: int
    position: tuple[int, int, int] = (0, 0, 0)  # (ix, iy, iz)


@dataclass
class GridLayout:
    """How the cells' first pictures are laid out and labelled.

    ``x_labels[i]`` are the lines above column i, ``y_labels[j]`` those left of row j; ``z_labels`` title each
    sub-grid when there is more than one (one sub-grid per Z value, side by side).
    """

    columns: int
    rows: int
    x_labels: list[list[Label]] = field(default_factory=list)
    y_labels: list[list[Label]] = field(default_factory=list)
    z_labels: list[str] = field(default_factory=list)
    margin: int = 0
    draw_legend: bool = True
    sub_grids: bool = False  # also save and return each Z sub-grid on its own

    @property
    def per_grid(self) -> int:
        return self.columns * self.rows

    @property
    def grids(self) -> int:
        return max(1, len(self.z_labels))


@dataclass
class ScriptPlan:
    """Everything the worker needs to run a script; made (and fully validated) when the job is submitted.

    ``run_order`` lists cell positions in ``cells`` in the order they run (the slowest change, a checkpoint or
    a VAE, changes least often); ``grid`` is None for a script that makes no grid. ``grid_infotext`` holds the
    pairs added to the grid's parameters (``Script``, ``X Type``, ``X Values``...), after the first cell's own.
    """

    script: str  # A1111's API name: "x/y/z plot", "prompt matrix", "prompts from file or textbox"
    title: str  # as people read it: "X/Y/Z plot"
    base: GenerationRequest
    cells: list[Cell]
    run_order: list[int]
    grid: GridLayout | None = None
    grid_infotext: dict[str, str] = field(default_factory=dict)
    save_cells: bool = True  # save each cell's pictures to the usual txt2img/img2img folder
    return_cells: bool = True  # hand the cells' pictures back (UI gallery, API images) after the grid
    summary: str = ""  # one line for people: what will run, shown before the run

    @property
    def output_kind(self) -> str:
        """Where the cells go ("txt2img" or "img2img"); grids go to f"{output_kind}-grids" (A1111's folders)."""
        return self.base.output_kind

    @property
    def grid_kind(self) -> str:
        return f"{self.output_kind}-grids"

    @property
    def images(self) -> int:
        """Pictures the plan makes (every cell's batch_size x batch_count)."""
        return sum(cell.request.batch_size * cell.request.batch_count for cell in self.cells)

    @property
    def total_steps(self) -> int:
        return sum(cell.request.denoising_steps() * cell.request.batch_count for cell in self.cells)


@dataclass
class GridImage:
    """A drawn grid and its parameters text (the first finished cell's, plus the plan's ``grid_infotext``)."""

    image: Any  # PIL.Image.Image
    infotext: str
    seed: int | None = None
    path: Any = None  # where it was saved, when it was


@dataclass
class ScriptResult:
    """What a script job gives back: the grids first, then the cells (by grid index, None where not run)."""

    plan: ScriptPlan
    grids: list[GridImage] = field(default_factory=list)
    cells: list[GenerationResult | None] = field(default_factory=list)
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: generate (all cells), grid, total
    cell_paths: list[list[Any]] = field(default_factory=list)  # by grid index: where each cell's pictures went

    @property
    def cells_done(self) -> int:
        return sum(1 for cell in self.cells if cell is not None and cell.images)

    def outputs(self) -> list[tuple[Any, str, int | None]]:
        """(picture, parameters, seed) as the UI's gallery and the API's ``images`` show them: the grids, then,
        when the plan returns them, every picture of every cell in grid order."""
        return [(picture, parameters, seed) for picture, parameters, seed, _ in self.output_items()]

    def output_items(self) -> list[tuple[Any, str, int | None, GenerationRequest]]:
        """``outputs()`` with the request behind each picture (a grid's is its first finished cell's, whose
        parameters it carries): the API's ``all_prompts`` line up with its ``images`` from this one list."""
        first = next((cell for cell in self.cells if cell is not None and cell.images), None)
        items: list[tuple[Any, str, int | None, GenerationRequest]] = [
            (grid.image, grid.infotext, grid.seed, first.request if first is not None else self.plan.base)
            for grid in self.grids]
        if self.plan.return_cells or not self.grids:
            for cell in self.cells:
                for image in (cell.images if cell is not None else []):
                    items.append((image.image, image.infotext, image.seed, cell.request))
        return items


@dataclass
class ScriptContext:
    """What a script may look up while it plans: the engine's names (models, samplers, VAEs, upscalers), the
    styles, and the model loaded now. Nothing here loads a model."""

    engine: Any  # sdlocal.engine.Engine: validate, find_model, models, samplers, schedules, vaes, upscalers
    styles: Any = None  # sdlocal.styles.StyleLibrary
    current_model: str = ""  # the loaded model's name ("" before the first load)

    @classmethod
    def of(cls, services: Any) -> ScriptContext:
        """The context of a running app (``sdlocal.services.Services``)."""
        current = getattr(services.engine, "current_model", None)
        return cls(engine=services.engine, styles=getattr(services, "styles", None),
                   current_model=getattr(current, "name", "") or "")


def clone(request: GenerationRequest) -> GenerationRequest:
    """A copy a cell may change: its own hires, source and mask parts; the source's pictures are shared (read
    only), so a 100-cell img2img grid holds its init image once."""
    from dataclasses import replace

    source = request.source
    if source is not None:
        source = replace(source, images=list(source.images),
                         mask=replace(source.mask) if source.mask is not None else None)
    hires = replace(request.hires) if request.hires is not None else None
    return replace(request, source=source, hires=hires)
