"""The Script section under the txt2img and img2img settings: its controls read back in the script's ARGS order,
the axis dropdowns, the summary line, the confirmation of a large grid, errors naming the control, and a real
X/Y/Z plot on the tiny model through the handler (grid first, then the cells, saved where A1111 saves them)."""

from __future__ import annotations

import html
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr

from sdlocal.jobs import JobQueue
from sdlocal.outputs import OutputStore
from sdlocal.scripts import xyz
from sdlocal.scripts.axes import axes_for
from sdlocal.scripts.plan import CONFIRM_IMAGES
from sdlocal.ui.script_run import infotext_script_updates, run_script, script_restore_outputs, summary_text
from sdlocal.ui.scripts import (
    ScriptSection,
    axis_updates,
    fill_updates,
    read_prompts_file,
    script_section,
    swap_updates,
)
from tests.engine.conftest import engine, request_for, tiny_models_dir  # noqa: F401

ARG_NAMES = [name for name, _ in xyz.ARGS]


def fake_services(samplers: tuple[str, ...] = ("Euler a", "Euler", "DDIM")) -> Any:
    names = SimpleNamespace(samplers=lambda: list(samplers), schedules=lambda: ["Automatic", "Karras"],
                            models=lambda refresh=False: [], current_model=None)
    return SimpleNamespace(engine=names, styles=None)


def section(img2img: bool = False, services: Any = None) -> ScriptSection:
    with gr.Blocks():
        return script_section("t-", img2img, services or fake_services())


def values_of(part: ScriptSection, chosen: str, **by_name: Any) -> list[Any]:
    """The values Gradio would hand the handler: every control's own, the X/Y/Z ones by argument name."""
    controls = dict(zip(ARG_NAMES, part.args[xyz.NAME], strict=True))
    wanted = {controls[name]: value for name, value in by_name.items()}
    return [chosen, *[wanted.get(control, control.value) for control in part.inputs[1:]]]


def test_the_dropdown_offers_none_then_the_scripts_and_reads_args_in_a1111_order() -> None:
    part = section()
    titles = [value for _label, value in part.choice.choices]
    assert titles[0] == "None" and "X/Y/Z plot" in titles and part.choice.value == "None"
    assert part.read(values_of(part, "None")) == (None, [])
    name, args = part.read(values_of(part, "X/Y/Z plot", x_type="Steps", x_values="1,2", y_type="CFG Scale",
                                     y_values="5, 7", margin_size=4, draw_legend=False, csv_mode=True))
    assert name == "x/y/z plot" and len(args) == len(xyz.ARGS)
    named = dict(zip(ARG_NAMES, args, strict=True))
    assert named == {**dict(xyz.ARGS), "x_type": "Steps", "x_values": "1,2", "y_type": "CFG Scale",
                     "y_values": "5, 7", "z_type": "Nothing", "margin_size": 4, "draw_legend": False,
                     "csv_mode": True}


def test_type_dropdowns_list_only_the_plottable_axes_of_each_tab() -> None:
    for img2img in (False, True):
        part = section(img2img)
        listed = [value for _label, value in part.axes[0].type.choices]
        assert listed == [axis.label for axis in axes_for(img2img) if axis.supported]
        assert "Var. seed" not in listed and "Sigma Churn" not in listed  # A1111 has them; sdlocal cannot plot
        assert ("Hires steps" in listed) is not img2img and ("Cond. Image Mask Weight" in listed) is img2img
        assert part.axes[0].type.value == "Seed" and part.axes[1].type.value == "Nothing"  # A1111's defaults
        assert {"Steps", "Sampler", "Size", "Checkpoint name"} <= set(listed)


def test_a_list_axis_shows_its_choices_with_a_fill_button_and_text_in_csv_mode() -> None:
    services = fake_services()
    text, dropdown, fill = axis_updates(services, "Sampler", "euler, Euler, DDIM", [], False, False)
    assert text["visible"] is False and fill["visible"] is True
    assert dropdown["visible"] is True and dropdown["choices"] == ["Euler a", "Euler", "DDIM"]
    assert dropdown["value"] == ["Euler", "DDIM"]  # typed values that are choices move into the dropdown
    text, dropdown, fill = axis_updates(services, "Sampler", "", ["Euler a", "DDIM"], True, False)
    assert text["visible"] is True and text["value"] == "Euler a,DDIM" and dropdown["visible"] is False
    text, dropdown, fill = axis_updates(services, "Steps", "1-3", ["Euler"], False, False)
    # the text box is shown but not written: an update arriving after the user typed keeps what they typed
    assert text == {"__type__": "update", "visible": True} and fill["visible"] is False
    assert dropdown["visible"] is False
    assert fill_updates(services, "Sampler", False, False)[1]["value"] == ["Euler a", "Euler", "DDIM"]
    assert fill_updates(services, "Sampler", True, False)[0]["value"] == "Euler a,Euler,DDIM"


def test_swapping_two_axes_swaps_their_types_and_values() -> None:
    services = fake_services()
    updates = swap_updates(services, ("Steps", "1,2", []), ("Sampler", "", ["Euler", "DDIM"]), False, False)
    first_type, first_text, first_dropdown, _fill, second_type, second_text, _dropdown, _fill2 = updates
    assert first_type["value"] == "Sampler" and first_dropdown["value"] == ["Euler", "DDIM"]
    assert first_text["visible"] is False
    assert second_type["value"] == "Steps" and second_text["value"] == "1,2"


def test_a_prompts_file_fills_the_text_box_and_a_bad_file_says_why(tmp_path: Path) -> None:
    good = tmp_path / "prompts.txt"
    good.write_text("a cat\n\n--prompt \"a dog\" --steps 3\n", encoding="utf-8")
    update, note = read_prompts_file(str(good))
    assert update["value"].startswith("a cat") and note == "Read 2 lines from prompts.txt."
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait".encode("latin-1"))
    update, note = read_prompts_file(str(bad))
    assert "value" not in update and "latin1.txt is not UTF-8" in note
    binary = tmp_path / "picture.txt"
    binary.write_bytes(b"PNG\x00\x00IHDR")
    assert "not a text file" in read_prompts_file(str(binary))[1]


# ---------------------------------------------------------------------------------------------- on the tiny model
def xyz_args(**named: Any) -> list[Any]:
    return [named.get(name, default) for name, default in xyz.ARGS]


class CapturingQueue:
    """Takes the plans the handler submits, and runs none of them."""

    def __init__(self) -> None:
        self.plans: list[Any] = []

    def submit_script(self, plan: Any, save: bool = True, source: str = "ui") -> Any:
        self.plans.append(plan)
        raise RuntimeError("not running jobs in this test")


def test_the_summary_line_plans_with_the_tabs_settings_or_names_the_bad_field(engine, request_for) -> None:  # noqa: F811
    services = SimpleNamespace(engine=engine, styles=None)
    build = lambda: request_for(steps=4)  # noqa: E731
    args = xyz_args(x_type="Steps", x_values="1-3", y_type="Seed", y_values="1, 2, 3")
    assert summary_text(services, build, "x/y/z plot", args) == \
        "X/Y/Z plot will create 9 images on 1 3x3 grid. (Total steps to process: 18)"
    assert summary_text(services, build, None, args) == ""
    bad = summary_text(services, build, "x/y/z plot", xyz_args(x_type="Steps", x_values="1, lots"))
    assert bad.startswith("⚠ X/Y/Z plot: X values:") and "'lots'" in bad
    sr = summary_text(services, lambda: request_for(prompt="a cube"), "x/y/z plot",
                      xyz_args(x_type="Prompt S/R", x_values="red, blue"))
    assert sr.startswith("⚠ X/Y/Z plot: X values:") and "must appear in the prompt" in sr
    big = summary_text(services, build, "x/y/z plot", xyz_args(x_type="Seed", x_values=f"1-{CONFIRM_IMAGES + 1}"))
    assert f"create {CONFIRM_IMAGES + 1} images" in big and "asks once more" in big


def test_a_large_grid_starts_only_on_a_second_press_with_the_same_settings(engine, request_for) -> None:  # noqa: F811
    queue = CapturingQueue()
    services = SimpleNamespace(engine=engine, styles=None, queue=queue)
    build = lambda: request_for(steps=1)  # noqa: E731
    args = xyz_args(x_type="Seed", x_values=f"1-{CONFIRM_IMAGES + 1}")
    first = list(run_script(services, build, "x/y/z plot", args, None))
    assert len(first) == 1 and "press Generate again" in first[0][1] and str(CONFIRM_IMAGES + 1) in first[0][1]
    pending = first[0][-1]
    assert queue.plans == [] and isinstance(pending, str)
    other = xyz_args(x_type="Seed", x_values=f"1-{CONFIRM_IMAGES + 2}")
    changed = list(run_script(services, build, "x/y/z plot", other, pending))
    assert "press Generate again" in changed[0][1] and queue.plans == []  # other settings: asked again
    second = list(run_script(services, build, "x/y/z plot", args, pending))
    assert len(queue.plans) == 1 and queue.plans[0].images == CONFIRM_IMAGES + 1
    assert "not running jobs" in second[-1][1]  # the queue's refusal is shown, not raised
    small = list(run_script(services, build, "x/y/z plot", xyz_args(x_type="Steps", x_values="1,2"), None))
    assert len(queue.plans) == 2 and "press Generate again" not in small[-1][1]  # small grids just start


def test_an_invalid_script_argument_is_an_error_next_to_the_controls(engine, request_for) -> None:  # noqa: F811
    queue = CapturingQueue()
    services = SimpleNamespace(engine=engine, styles=None, queue=queue)
    out = list(run_script(services, lambda: request_for(), "x/y/z plot",
                          xyz_args(x_type="Sampler", x_values="Euler, No Such Sampler"), None))
    assert len(out) == 1 and queue.plans == []
    assert "X/Y/Z plot: X values: 'No Such Sampler' is not allowed" in html.unescape(out[0][1])
    assert 'role="alert"' in out[0][1]


def test_an_xyz_plot_through_the_handler_shows_the_grid_then_the_cells(engine, request_for,  # noqa: F811
                                                                         tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "outputs")
    queue = JobQueue(engine, store)
    services = SimpleNamespace(engine=engine, styles=None, queue=queue)
    try:
        updates = list(run_script(services, lambda: request_for(steps=2, seed=77), "x/y/z plot",
                                  xyz_args(x_type="Steps", x_values="1,2", include_lone_images=True), None))
    finally:
        queue.close()
    progress, error, _preview, gallery, rows, selected, info, _pending = updates[-1]
    assert error == "" and "Done: 3 images" in progress and selected == 0
    assert [Path(path).parent.parent.name for _seed, _text, path in rows] == ["txt2img-grids", "txt2img",
                                                                             "txt2img"]
    assert all(Path(path).is_file() for _seed, _text, path in rows)
    assert [caption for _picture, caption in gallery] == ["Grid", "Seed 77", "Seed 77"]
    assert "Script: X/Y/Z plot" in rows[0][1] and "X Type: Steps" in rows[0][1] and info == rows[0][1]
    assert "Steps: 1," in rows[1][1] and "Steps: 2," in rows[2][1]  # each cell has its own parameters

    # PNG Info / Reuse all parameters of the grid choose the plot again and fill its axes; a cell's text does not
    part = section(services=services)
    updates = dict(zip(script_restore_outputs(part), infotext_script_updates(services, part, rows[0][1]),
                       strict=True))
    assert updates[part.choice]["value"] == "X/Y/Z plot" and updates[part.groups[xyz.NAME]]["visible"] is True
    x_axis = part.axes[0]
    assert updates[x_axis.type]["value"] == "Steps" and updates[x_axis.text]["value"] == "1,2"
    assert updates[part.axes[1].type]["value"] == "Nothing"
    assert all("value" not in update for update in infotext_script_updates(services, part, rows[1][1]))


def test_the_section_sits_in_both_tabs_of_the_app(tmp_path: Path) -> None:
    from sdlocal.services import build_services
    from sdlocal.settings import Settings
    from sdlocal.ui.app import build_ui

    services = build_services(Settings(data_dir=tmp_path))
    try:
        blocks = build_ui(services)
        ids = {getattr(block, "elem_id", None) for block in blocks.blocks.values()}
        named = {fn.api_name: fn for fn in blocks.fns.values() if fn.api_name}
        for prefix, api_name in (("sd-", "generate"), ("sd-i2i-", "img2img")):
            assert {f"{prefix}script", f"{prefix}xyz-x-type", f"{prefix}script-summary"} <= ids
            assert any(getattr(block, "elem_id", None) == f"{prefix}script" for block in named[api_name].inputs)
    finally:
        services.close()


def test_a_registered_script_without_a_layout_gets_controls_from_its_args(monkeypatch, tmp_path: Path) -> None:
    """Prompts from file (A1111's argument names): checkboxes, a radio, the text box and its upload, in order."""
    import sys
    import types

    from sdlocal.scripts import SCRIPT_MODULES

    fake = types.ModuleType("fake_prompts_file")
    fake.NAME, fake.TITLE = "prompts from file or textbox", "Prompts from file or textbox"
    fake.ARGS = (("checkbox_iterate", False), ("checkbox_iterate_batch", False), ("prompt_position", "start"),
                 ("prompt_txt", ""))
    fake.describe = lambda img2img, ctx: []
    monkeypatch.setitem(sys.modules, "fake_prompts_file", fake)
    monkeypatch.setitem(SCRIPT_MODULES, fake.NAME, "fake_prompts_file")
    part = section()
    controls = part.args[fake.NAME]
    assert [type(c).__name__ for c in controls] == ["Checkbox", "Checkbox", "Radio", "Textbox"]
    assert [c.label for c in controls] == ["Iterate seed every line", "Use same random seed for all lines",
                                          "Insert prompts at the", "List of prompt inputs"]
    assert [value for _label, value in controls[2].choices] == ["start", "end"]
    assert part.upload is not None and part.prompt_text is controls[3]
    values = [c.value for c in part.inputs]
    start = part.inputs.index(controls[0])
    values[0], values[start:start + 4] = fake.TITLE, [True, False, "end", "a cat\na dog"]
    assert part.read(values) == (fake.NAME, [True, False, "end", "a cat\na dog"])


def test_an_error_on_a_simpler_scripts_argument_names_its_control() -> None:
    from sdlocal.engine.request import RequestError
    from sdlocal.ui.script_run import script_error

    error = RequestError("prompt_txt", "--steps x", "line 1: --steps needs a whole number, not 'x'")
    assert script_error("x/y/z plot", error) == ("X/Y/Z plot: List of prompt inputs: '--steps x' is not allowed; "
                                                 "line 1: --steps needs a whole number, not 'x'.")
    assert script_error("x/y/z plot", RequestError("margin_size", 501, "must be at most 500")).startswith(
        "X/Y/Z plot: Grid margins (px): 501 is not allowed")
