"""A1111's scripts over the API (script_name/script_args, /scripts, /script-info), on the tiny models over HTTP."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from sdlocal.engine.infotext import parse_infotext
from sdlocal.scripts.axes import axes_for
from tests.api.conftest import MODEL_A, MODEL_B, Server, decode_png

XYZ = "x/y/z plot"
TXT2IMG_AXES = [axis.label for axis in axes_for(False)]
IMG2IMG_AXES = [axis.label for axis in axes_for(True)]
STEPS, SEED, PROMPT_SR = (TXT2IMG_AXES.index(label) for label in ("Steps", "Seed", "Prompt S/R"))


def small(**values: Any) -> dict[str, Any]:
    body = {"prompt": "a red cube", "negative_prompt": "blurry", "steps": 2, "width": 64, "height": 64,
            "seed": 1234, "sampler_name": "Euler", "cfg_scale": 7}
    body.update(values)
    return body


def xyz_args(x_type: Any = STEPS, x_values: str = "", y_type: Any = 0, y_values: str = "", *,
             lone: Any = True, **flags: Any) -> list[Any]:
    """All 18 positional arguments as A1111's UI sends them (its defaults), the axes and include_lone_images set."""
    tail = {"draw_legend": True, "include_lone_images": lone, "include_sub_grids": False, "no_fixed_seeds": False,
            "vary_seeds_x": False, "vary_seeds_y": False, "vary_seeds_z": False, "margin_size": 0,
            "csv_mode": False}
    tail.update(flags)
    return [x_type, x_values, [], y_type, y_values, [], 0, "", [], *tail.values()]


def post(client: httpx.Client, args: list[Any], route: str = "txt2img", **values: Any) -> httpx.Response:
    return client.post(f"/sdapi/v1/{route}", json=small(script_name=XYZ, script_args=args, **values))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def generated(api: Server) -> int:
    return api.services.queue.images_generated


# ---------------------------------------------------------------------------------------------- X/Y/Z plot
def test_a_2x2_plot_returns_the_grid_then_the_four_cells_with_their_own_parameters(client: httpx.Client) -> None:
    response = post(client, xyz_args(STEPS, "1, 2", SEED, "10, 11"))
    assert response.status_code == 200, response.text
    body = response.json()
    info = json.loads(body["info"])
    images = [decode_png(data) for data in body["images"]]
    assert len(images) == 5 and info["index_of_first_image"] == 1
    assert images[0].width > 2 * 64 and images[0].height > 2 * 64  # two columns and rows, with legends
    assert [image.size for image in images[1:]] == [(64, 64)] * 4
    assert [image.info["parameters"] for image in images] == info["infotexts"]
    grid = parse_infotext(info["infotexts"][0])
    assert grid["Script"] == "X/Y/Z plot" and grid["X Type"] == "Steps" and grid["X Values"] == "1, 2"
    assert grid["Y Type"] == "Seed" and grid["Y Values"] == "10, 11"
    cells = [parse_infotext(text) for text in info["infotexts"][1:]]
    assert [(cell["Steps"], cell["Seed"]) for cell in cells] == [("1", "10"), ("2", "10"), ("1", "11"), ("2", "11")]
    assert all("Script" not in cell for cell in cells)
    assert info["all_seeds"] == [10, 10, 10, 11, 11] and info["seed"] == 10
    assert info["all_prompts"] == ["a red cube"] * 5 and info["prompt"] == "a red cube"
    assert info["interrupted"] is False and info["warnings"] == []
    single = client.post("/sdapi/v1/txt2img", json=small(steps=2, seed=11))
    assert np.array_equal(pixels(decode_png(single.json()["images"][0])), pixels(images[4]))


def test_arguments_as_clients_send_them_fewer_args_take_the_defaults(client: httpx.Client) -> None:
    only_x = post(client, [STEPS, "1, 2"])  # include_lone_images defaults to false: the grid alone
    assert only_x.status_code == 200, only_x.text
    info = json.loads(only_x.json()["info"])
    assert len(only_x.json()["images"]) == 1 and info["index_of_first_image"] == 1
    assert parse_infotext(info["infotexts"][0])["X Values"] == "1, 2" and len(info["all_seeds"]) == 1
    as_text = post(client, xyz_args(str(STEPS), "1-2", lone="true", draw_legend="false", csv_mode="false"))
    assert as_text.status_code == 200, as_text.text
    assert len(as_text.json()["images"]) == 3  # the grid and both cells
    by_label = post(client, xyz_args("steps", "1, 2", lone=False))
    assert by_label.status_code == 200 and len(by_label.json()["images"]) == 1


@pytest.mark.parametrize(("args", "prompt", "field", "words"), [
    (xyz_args(99, "1"), "a red cube", "script_args[0]", "x_type"),
    (xyz_args(STEPS, "1, 500"), "a red cube", "script_args[1]", "x_values"),
    (xyz_args(PROMPT_SR, "green, blue"), "a red cube", "script_args[1]", "must appear in the prompt"),
    (xyz_args(STEPS, "1", SEED, "ten"), "a red cube", "script_args[4]", "y_values"),
    (xyz_args(STEPS, "1", lone="maybe"), "a red cube", "script_args[10]", "include_lone_images"),
    (xyz_args(STEPS, "1", margin_size=-4), "a red cube", "script_args[16]", "margin_size"),
    (xyz_args(STEPS, "1") + [True], "a red cube", "script_args", "at most 18"),
])
def test_a_bad_argument_is_a_422_naming_its_position_and_nothing_runs(api: Server, client: httpx.Client, args: list,
                                                                     prompt: str, field: str, words: str) -> None:
    before = generated(api)
    response = post(client, args, prompt=prompt)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field and body["detail"].startswith(field) and words in body["detail"]
    if field != "script_args":
        index = int(field[len("script_args["):-1])
        assert body["errors"][0]["loc"] == ["body", "script_args", index]
    assert generated(api) == before


def test_a_bad_base_request_and_an_unknown_script_are_422s_naming_the_field(client: httpx.Client) -> None:
    unknown = client.post("/sdapi/v1/txt2img", json=small(script_name="loopback wave", script_args=[]))
    assert unknown.status_code == 422 and unknown.json()["field"] == "script_name"
    assert XYZ in unknown.json()["detail"]
    bad_steps = post(client, xyz_args(SEED, "1, 2"), steps=0)
    assert bad_steps.status_code == 422 and bad_steps.json()["field"] == "steps", bad_steps.text
    bad_sampler = post(client, xyz_args(SEED, "1, 2"), sampler_name="No Such Sampler")
    assert bad_sampler.status_code == 422 and bad_sampler.json()["field"] == "sampler_name", bad_sampler.text


@pytest.mark.parametrize("name", [None, "", "None", "none"])
def test_no_script_is_an_ordinary_generation(client: httpx.Client, name: str | None) -> None:
    response = client.post("/sdapi/v1/txt2img", json=small(script_name=name, script_args=[STEPS, "1, 2"]))
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert len(response.json()["images"]) == 1 and "Script" not in parse_infotext(info["infotexts"][0])
    assert info["warnings"] == []


def test_the_title_and_any_case_name_the_script(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/txt2img", json=small(script_name="X/Y/Z Plot", script_args=[STEPS, "1, 2"]))
    assert response.status_code == 200, response.text
    assert parse_infotext(json.loads(response.json()["info"])["infotexts"][0])["Script"] == "X/Y/Z plot"


def test_an_interrupted_plot_returns_what_was_made_and_says_so(api: Server, client: httpx.Client,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    engine, calls = api.services.engine, []
    real = engine.generate

    def then_interrupt(request: Any, on_progress: Any = None, control: Any = None) -> Any:
        result = real(request, on_progress=on_progress, control=control)
        calls.append(request.steps)
        control.interrupt()  # as the Interrupt button does once the first cell is done
        return result

    monkeypatch.setattr(engine, "generate", then_interrupt)
    response = post(client, xyz_args(STEPS, "1, 2", SEED, "10, 11"))
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert calls == [1] and info["interrupted"] is True
    assert len(response.json()["images"]) == 2  # the grid (one cell drawn, three empty) and that cell
    assert any("Interrupted: 1 of 4 cells" in warning for warning in info["warnings"])


def test_a_model_override_plots_on_that_model_and_switches_back(api: Server, client: httpx.Client) -> None:
    response = post(client, xyz_args(SEED, "1, 2", lone=False),
                    override_settings={"sd_model_checkpoint": MODEL_B})
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert parse_infotext(info["infotexts"][0])["Model"] == MODEL_B and info["sd_model_name"] == MODEL_B
    assert api.services.engine.current_model.name == MODEL_A


def test_a_full_queue_is_a_503_with_retry_after(api: Server, client: httpx.Client,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from sdlocal.jobs import QueueFullError

    def full(*_args: Any, **_kwargs: Any) -> Any:
        raise QueueFullError(2, 2, 7)

    monkeypatch.setattr(api.services.queue, "submit_script", full)
    response = post(client, xyz_args(STEPS, "1, 2"))
    assert response.status_code == 503 and response.headers["Retry-After"] == "7", response.text


def test_img2img_runs_a_plot_over_its_source(client: httpx.Client) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(buffer, format="PNG")
    source = base64.b64encode(buffer.getvalue()).decode()
    denoising = IMG2IMG_AXES.index("Denoising")
    response = post(client, xyz_args(denoising, "0.5, 1.0"), route="img2img", init_images=[source])
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert len(response.json()["images"]) == 3 and info["index_of_first_image"] == 1
    grid = parse_infotext(info["infotexts"][0])
    assert grid["Script"] == "X/Y/Z plot" and grid["X Type"] == "Denoising"
    assert [float(parse_infotext(text)["Denoising strength"]) for text in info["infotexts"][1:]] == [0.5, 1.0]
    assert info["denoising_strength"] == 0.5  # the first cell's, as the other fields are
    bad = post(client, xyz_args(denoising, "0.5, 7"), route="img2img", init_images=[source])
    assert bad.status_code == 422 and bad.json()["field"] == "script_args[1]", bad.text


# ---------------------------------------------------------------------------------------------- listings
def test_scripts_lists_the_names_script_name_takes(client: httpx.Client) -> None:
    response = client.get("/sdapi/v1/scripts")
    assert response.status_code == 200
    listed = response.json()
    assert set(listed) == {"txt2img", "img2img"} and XYZ in listed["txt2img"] and XYZ in listed["img2img"]


def test_script_info_describes_each_argument_in_order(client: httpx.Client) -> None:
    response = client.get("/sdapi/v1/script-info")
    assert response.status_code == 200
    entries = {(entry["name"], entry["is_img2img"]): entry for entry in response.json()}
    for img2img, labels in ((False, TXT2IMG_AXES), (True, IMG2IMG_AXES)):
        entry = entries[(XYZ, img2img)]
        assert entry["is_alwayson"] is False and len(entry["args"]) == 18
        assert all(set(arg) == {"label", "value", "minimum", "maximum", "step", "choices"} for arg in entry["args"])
        x_type = entry["args"][0]
        assert x_type["choices"] == labels and x_type["value"] == labels[1]
    assert len(entries) == len(response.json())  # one entry per script and tab


# ---------------------------------------------------------------------------------------------- A1111 clients
def test_the_webuiapi_client_drives_a_plot(api: Server) -> None:
    import webuiapi

    client = webuiapi.WebUIApi(baseurl=f"{api.url}/sdapi/v1", sampler="Euler", steps=2)
    result = client.txt2img(prompt="a red cube", width=64, height=64, seed=5, cfg_scale=7,
                            script_name="X/Y/Z plot", script_args=xyz_args(STEPS, "1, 2", SEED, "5, 6"))
    assert len(result.images) == 5 and result.images[0].width > 128
    assert [image.size for image in result.images[1:]] == [(64, 64)] * 4
    assert result.info["all_seeds"] == [5, 5, 5, 6, 6]
    assert parse_infotext(result.info["infotexts"][0])["Script"] == "X/Y/Z plot"
    assert result.info["infotexts"][1:] == [image.info["parameters"] for image in result.images[1:]]


def test_alwayson_scripts_are_named_as_ignored_beside_a_plot(client: httpx.Client) -> None:
    response = post(client, [STEPS, "1"], alwayson_scripts={"ADetailer": {"args": [True]}})
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["info"])["warnings"] == [
        "alwayson_scripts is not supported by sdlocal and was ignored"]


# ---------------------------------------------------------------------------------------------- the other scripts
def test_a_prompt_matrix_returns_its_grid_then_every_combination(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/txt2img", json=small(prompt="a red cube|blue sky|grass", steps=1,
                                                           script_name="prompt matrix", script_args=[]))
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    images = [decode_png(data) for data in response.json()["images"]]
    assert len(images) == 5 and info["index_of_first_image"] == 1 and images[0].width > 2 * 64
    assert [image.info["parameters"] for image in images] == info["infotexts"]
    assert parse_infotext(info["infotexts"][0])["Script"] == "Prompt matrix"
    assert info["all_prompts"][1:] == ["a red cube", "a red cube, blue sky", "a red cube, grass",
                                       "a red cube, blue sky, grass"]
    no_parts = client.post("/sdapi/v1/txt2img", json=small(script_name="prompt matrix"))
    assert no_parts.status_code == 422 and no_parts.json()["field"] == "prompt", no_parts.text
    bad_type = client.post("/sdapi/v1/txt2img", json=small(prompt="a|b", script_name="prompt matrix",
                                                           script_args=[False, False, "sideways"]))
    assert bad_type.status_code == 422 and bad_type.json()["field"] == "script_args[2]", bad_type.text
    assert "(prompt_type)" in bad_type.json()["detail"]


def test_prompts_from_a_textbox_run_one_cell_per_line_and_a_bad_line_runs_nothing(api: Server,
                                                                                  client: httpx.Client) -> None:
    lines = 'a red cube\n--prompt "a blue ball" --steps 1 --seed 7'
    response = client.post("/sdapi/v1/txt2img", json=small(prompt="", script_name="prompts from file or textbox",
                                                           script_args=[False, False, "start", lines]))
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert len(response.json()["images"]) == 2 and info["index_of_first_image"] == 0
    assert info["all_prompts"] == ["a red cube", "a blue ball"] and info["all_seeds"] == [1234, 7]
    assert [parse_infotext(text)["Steps"] for text in info["infotexts"]] == ["2", "1"]
    before = generated(api)
    bad = client.post("/sdapi/v1/txt2img", json=small(prompt="", script_name="prompts from file or textbox",
                                                      script_args=[False, False, "start", "a cube\n--steps 900"]))
    assert bad.status_code == 422 and bad.json()["field"] == "script_args[3]", bad.text
    assert bad.json()["detail"].startswith("script_args[3] (prompt_txt)") and "line 2" in bad.json()["detail"]
    assert generated(api) == before


def test_save_images_saves_the_grid_to_its_grids_folder_and_the_cells_as_single_runs(client: httpx.Client) -> None:
    response = post(client, xyz_args(STEPS, "1, 2"), save_images=True)
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    saved = [Path(path) for path in info["saved_paths"]]
    assert [path.parent.parent.name for path in saved].count("txt2img-grids") == 1
    assert [path.parent.parent.name for path in saved].count("txt2img") == 2
    assert all(path.is_file() for path in saved) and info["warnings"] == []
    no_grid = json.loads(post(client, xyz_args(STEPS, "1, 2"), save_images=True,
                              do_not_save_grid=True).json()["info"])
    assert [Path(path).parent.parent.name for path in no_grid["saved_paths"]] == ["txt2img", "txt2img"]
    no_cells = json.loads(post(client, xyz_args(STEPS, "1, 2"), save_images=True,
                               do_not_save_samples=True).json()["info"])
    assert [Path(path).parent.parent.name for path in no_cells["saved_paths"]] == ["txt2img-grids"]
