"""The Extras tab's handlers: where the pictures come from, the request, the output folder, the run's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdlocal.engine.request import RequestError
from sdlocal.outputs import read_image_info
from sdlocal.ui.common import FormError, error_text
from sdlocal.ui.extras import build_request, output_store, run, source_images
from sdlocal.ui.extras_layout import SOURCES


def picture(path: Path, size: tuple[int, int] = (40, 24), parameters: str | None = None) -> Path:
    info = PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    Image.new("RGB", size, (200, 40, 10)).save(path, pnginfo=info)
    return path


def test_each_source_tab_gives_its_pictures_with_their_own_parameters(tmp_path: Path) -> None:
    single = picture(tmp_path / "one.png", parameters="a fox\nSteps: 4, Sampler: Euler, Seed: 7")
    [item] = source_images(SOURCES[0], str(single), None, "")
    assert item.image.size == (40, 24) and item.parameters.startswith("a fox") and item.name == "one.png"
    batch = source_images(SOURCES[1], None, [str(single), str(picture(tmp_path / "two.png"))], "")
    assert [item.name for item in batch] == ["one.png", "two.png"] and batch[1].parameters is None
    folder = tmp_path / "in"
    folder.mkdir()
    picture(folder / "b.png"), picture(folder / "a.png")
    (folder / "notes.txt").write_text("not a picture")
    assert [item.name for item in source_images(SOURCES[2], None, None, str(folder))] == ["a.png", "b.png"]


def test_a_missing_source_is_a_message_naming_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FormError, match="Single Image: drop a picture"):
        source_images(SOURCES[0], None, None, "")
    with pytest.raises(FormError, match="Batch Process"):
        source_images(SOURCES[1], None, [], "")
    with pytest.raises(RequestError) as missing:
        source_images(SOURCES[2], None, None, str(tmp_path / "nowhere"))
    assert error_text(missing.value).startswith("Input directory:") and "existing folder" in error_text(missing.value)


def test_the_form_becomes_the_engines_extras_request(tmp_path: Path) -> None:
    source = str(picture(tmp_path / "one.png"))
    request = build_request(SOURCES[0], source, None, "", "Scale to", 2.0, 128.0, 96.0, False, "Lanczos", "Nearest",
                            0.25)
    assert (request.resize_mode, request.width, request.height, request.crop) == ("Scale to", 128, 96, False)
    assert (request.upscaler_1, request.upscaler_2, request.upscaler_2_visibility) == ("Lanczos", "Nearest", 0.25)
    request = build_request(SOURCES[0], source, None, "", "odd", 3.0, 512, 512, True, "", None, 0)
    assert (request.resize_mode, request.scale, request.upscaler_1, request.upscaler_2) == ("Scale by", 3.0, "None",
                                                                                           "None")


def test_output_folder_blank_is_the_outputs_folder_else_made_or_refused(tmp_path: Path) -> None:
    assert output_store("  ") is None
    store = output_store(str(tmp_path / "new" / "place"))
    assert (tmp_path / "new" / "place").is_dir() and Path(store.root) == tmp_path / "new" / "place"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FormError, match="is a file"):
        output_store(str(tmp_path / "file"))


class DoneJob:
    """A job the fake queue ran at once (the real queue runs it on its worker)."""

    def __init__(self, result: Any, saved_paths: list[Path]) -> None:
        self.result, self.error, self.saved_paths = result, None, saved_paths

    def done(self) -> bool:
        return True

    def join(self, timeout: float | None = None) -> None:
        return None


class RunningQueue:
    """Runs the request with Pillow's Lanczos as the upscaler, saving as the queue does when asked to."""

    def __init__(self, store: Any) -> None:
        self.store, self.saves, self.stores = store, [], []

    def submit_extras(self, request: Any, save: bool = True, source: str = "ui", store: Any = None) -> DoneJob:
        from sdlocal.engine.extras import run_extras

        if request.upscaler_1 not in ("None", "Lanczos"):
            raise RequestError("upscaler_1", request.upscaler_1, "must be one of None, Lanczos")
        request.validate()

        def upscale(image: Any, name: str, width: int, height: int, **_: Any) -> Any:
            return image.resize((width, height), Image.Resampling.LANCZOS)

        result = run_extras(request, upscale)
        self.saves.append(save)
        self.stores.append(store)
        paths = [(store or self.store).save(out.image, out.parameters or "", None, kind="extras-images",
                                 extra_text={"postprocessing": out.infotext}) for out in result.images] if save else []
        return DoneJob(result, paths)


def form(source: str = SOURCES[0], image: Any = None, files: Any = None, input_dir: str = "", output_dir: str = "",
         resize_mode: str = "Scale by", scale: float = 2.0, upscaler_1: str = "Lanczos") -> list[Any]:
    return [source, image, files, input_dir, output_dir, resize_mode, scale, 512, 512, True, upscaler_1, "None", 0]


def test_a_run_shows_the_saved_pictures_and_their_postprocessing_text(tmp_path: Path) -> None:
    from sdlocal.outputs import OutputStore

    queue = RunningQueue(OutputStore(tmp_path / "outputs"))
    services = type("Services", (), {"queue": queue})()
    source = picture(tmp_path / "one.png", parameters="a fox\nSteps: 4, Sampler: Euler, Seed: 7")
    *_, (progress, error, gallery, info) = list(run(services, *form(image=str(source))))
    assert error == "" and "Done: 1 image" in progress
    [(path, caption)] = gallery
    assert caption == "one.png" and Image.open(path).size == (80, 48)
    text, chunks = read_image_info(path)
    assert text.startswith("a fox") and "Postprocess upscale by: 2" in chunks["postprocessing"]
    assert "Postprocess upscaler: Lanczos" in info and "extras-images" in info and queue.saves == [True]


def test_a_folder_run_saves_into_the_output_folder_given(tmp_path: Path) -> None:
    from sdlocal.outputs import OutputStore

    queue = RunningQueue(OutputStore(tmp_path / "outputs"))
    services = type("Services", (), {"queue": queue})()
    folder = tmp_path / "in"
    folder.mkdir()
    picture(folder / "a.png", size=(16, 16), parameters="a cat\nSteps: 4, Sampler: Euler, Seed: 9")
    out = tmp_path / "out"
    *_, (progress, error, gallery, info) = list(run(services, *form(SOURCES[2], input_dir=str(folder),
                                                                     output_dir=str(out), scale=3)))
    # the worker saves into ``out`` (the tab hands it the folder's store), so a closed page loses nothing
    assert error == "" and queue.saves == [True] and Path(queue.stores[0].root) == out
    [saved] = sorted(out.rglob("*.png"))
    assert saved.parent.parent.name == "extras-images" and Image.open(saved).size == (48, 48)
    text, chunks = read_image_info(saved)
    assert text.startswith("a cat") and "Postprocess upscale by: 3" in chunks["postprocessing"]
    assert gallery[0][0].size == (48, 48) and str(saved) in info  # shown as pictures: ``out`` is not served


def test_a_refused_request_is_a_message_naming_the_control(tmp_path: Path) -> None:
    from sdlocal.outputs import OutputStore

    services = type("Services", (), {"queue": RunningQueue(OutputStore(tmp_path / "outputs"))})()
    source = str(picture(tmp_path / "one.png"))
    [(progress, error, *_)] = list(run(services, *form(image=source, upscaler_1="4x-Missing")))
    assert progress == "" and "Upscaler 1: &#x27;4x-Missing&#x27; is not allowed" in error
    [(_, error, *_)] = list(run(services, *form(image=source, scale=20)))
    assert "Resize: 20" in error
    [(_, error, *_)] = list(run(services, *form(SOURCES[2], input_dir=str(tmp_path / "none"))))
    assert "Input directory:" in error


def test_send_to_extras_opens_single_image_with_the_picture(tmp_path: Path) -> None:
    from sdlocal.ui.extras import send_updates
    from sdlocal.ui.send import result_pick

    saved = str(picture(tmp_path / "00001-7.png"))
    page_tab, source_tab, source, image = send_updates(result_pick([(7, "a fox", saved)], 0)[0])
    assert (page_tab.selected, source_tab.selected, source, image) == ("extras", "extras-single", SOURCES[0], saved)
    assert all("value" not in update for update in send_updates(result_pick([], 0)[0]))
