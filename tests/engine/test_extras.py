"""The Extras rules (A1111's "Upscale" postprocessing): sizes, crop, upscaler 2's blend, the text, interrupt."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image

from sdlocal.engine.extras import (
    ExtrasImage,
    ExtrasRequest,
    plan_size,
    postprocessing_text,
    run_extras,
)
from sdlocal.engine.request import RequestError, RunControl


class FakeUpscaler:
    """Stands in for ``Engine.upscale``: "red"/"blue" paint the picture, anything else is a Lanczos resize."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int, tuple[int, int]]] = []

    def __call__(self, image: Any, name: str, width: int, height: int, control: Any = None,
                 on_progress: Any = None) -> Any:
        self.calls.append((name, width, height, image.size))
        if on_progress is not None:
            on_progress(1, 1)
        colours = {"red": (255, 0, 0), "blue": (0, 0, 255)}
        if name in colours:
            return Image.new("RGB", (width, height), colours[name])
        return image.resize((width, height), Image.Resampling.LANCZOS)


def _request(*sizes: tuple[int, int], **fields: Any) -> ExtrasRequest:
    images = [ExtrasImage(Image.new("RGB", size, (10, 200, 30)), name=f"{i}.png", parameters=f"p{i}")
              for i, size in enumerate(sizes)]
    return ExtrasRequest(images=images, **fields).validate()


def test_scale_by_rounds_each_side_down_to_a_multiple_of_8_as_a1111() -> None:
    request = _request((100, 60), scale=2.5, upscaler_1="Lanczos")
    assert plan_size(request, 100, 60) == plan_size(request, 100, 60)
    plan = plan_size(request, 100, 60)
    assert (plan.upscale_width, plan.upscale_height, plan.crop_width) == (248, 144, 0)
    result = run_extras(request, FakeUpscaler())
    assert result.images[0].image.size == (248, 144)
    assert result.images[0].infotext == "Postprocess upscale by: 2.5, Postprocess upscaler: Lanczos"
    assert result.images[0].parameters == "p0" and result.images[0].name == "0.png"


def test_scale_to_with_crop_covers_the_box_then_centre_crops() -> None:
    request = _request((64, 32), resize_mode=1, width=96, height=96, crop=True, upscaler_1="Lanczos")
    plan = plan_size(request, 64, 32)
    assert (plan.upscale_width, plan.upscale_height) == (192, 96)  # factor max(96/64, 96/32) = 3
    source = Image.new("RGB", (64, 32))
    source.paste((255, 255, 255), (0, 0, 16, 32))  # a white left quarter: cut away by a centred crop
    request.images[0].image = source
    result = run_extras(request, FakeUpscaler())
    image = result.images[0].image
    assert image.size == (96, 96)
    assert image.getpixel((6, 48))[0] < 40  # the white band (0..48 of 192) fell outside the centred 96
    assert result.images[0].infotext == ("Postprocess upscale to: 96x96, Postprocess crop to: 96x96, "
                                         "Postprocess upscaler: Lanczos")


def test_scale_to_without_crop_keeps_the_aspect_ratio_covering_the_box() -> None:
    request = _request((64, 32), resize_mode="Scale to", width=96, height=96, crop=False, upscaler_1="Nearest")
    result = run_extras(request, FakeUpscaler())
    assert result.images[0].image.size == (192, 96)
    assert "crop" not in result.images[0].infotext


def test_a_crop_never_leaves_a_black_edge_when_rounding_to_8_falls_short() -> None:
    request = _request((30, 30), resize_mode=1, width=100, height=100, upscaler_1="Lanczos")
    plan = plan_size(request, 30, 30)
    assert plan.upscale_width >= 100 and plan.upscale_height >= 100
    image = run_extras(request, FakeUpscaler()).images[0].image
    assert image.size == (100, 100) and image.getpixel((99, 99)) != (0, 0, 0)


def test_upscaler_1_none_leaves_the_picture_unchanged_and_writes_nothing() -> None:
    request = _request((40, 24), scale=4, upscaler_1="None", upscaler_2="red", upscaler_2_visibility=1.0)
    fake = FakeUpscaler()
    result = run_extras(request, fake)
    assert fake.calls == []
    assert result.images[0].image.size == (40, 24) and result.images[0].infotext == ""


def test_upscaler_2_runs_on_the_source_and_is_blended_by_its_visibility() -> None:
    request = _request((32, 32), scale=2, upscaler_1="red", upscaler_2="blue", upscaler_2_visibility=0.25)
    fake = FakeUpscaler()
    result = run_extras(request, fake)
    assert [(name, w, h, size) for name, w, h, size in fake.calls] == [("red", 64, 64, (32, 32)),
                                                                        ("blue", 64, 64, (32, 32))]
    red, _, blue = result.images[0].image.getpixel((5, 5))
    assert abs(red - 191) <= 1 and abs(blue - 64) <= 1
    assert result.images[0].infotext.endswith("Postprocess upscaler: red, Postprocess upscaler 2: blue")


def test_upscaler_2_at_visibility_0_does_not_run() -> None:
    fake = FakeUpscaler()
    result = run_extras(_request((32, 32), upscaler_1="red", upscaler_2="blue"), fake)
    assert [call[0] for call in fake.calls] == ["red"]
    assert "upscaler 2" not in result.images[0].infotext


def test_an_interrupt_between_images_keeps_the_finished_ones() -> None:
    control = RunControl()
    request = _request((16, 16), (16, 16), (16, 16), upscaler_1="Lanczos")
    seen: list[tuple[int, int]] = []

    def progress(index: int, total: int, done: int, tiles: int) -> None:
        seen.append((index, total))
        if index == 1 and tiles:
            control.interrupt()

    result = run_extras(request, FakeUpscaler(), on_progress=progress, control=control)
    assert result.interrupted and len(result.images) == 2
    assert (0, 3) in seen and (2, 3) not in seen


def test_an_upscaler_stopped_between_tiles_drops_only_that_image() -> None:
    control = RunControl()

    def stops(image: Any, name: str, width: int, height: int, control: Any = None, on_progress: Any = None) -> Any:
        control.interrupt()
        raise RuntimeError("interrupted between tiles")

    result = run_extras(_request((16, 16), upscaler_1="x"), stops, control=control)
    assert result.interrupted and result.images == []


def test_an_upscaler_error_without_an_interrupt_is_raised() -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_extras(_request((16, 16), upscaler_1="x"), broken)


@pytest.mark.parametrize(("fields", "field"), [
    ({"scale": 0}, "upscaling_resize"),
    ({"scale": 8.5}, "upscaling_resize"),
    ({"scale": float("nan")}, "upscaling_resize"),
    ({"scale": "2"}, "upscaling_resize"),
    ({"resize_mode": 2}, "resize_mode"),
    ({"resize_mode": True}, "resize_mode"),
    ({"width": 0, "resize_mode": 1}, "upscaling_resize_w"),
    ({"height": 99999}, "upscaling_resize_h"),
    ({"crop": "yes"}, "upscaling_crop"),
    ({"upscaler_1": 3}, "upscaler_1"),
    ({"upscaler_2": ["x"]}, "upscaler_2"),
    ({"upscaler_2_visibility": 1.5}, "extras_upscaler_2_visibility"),
    ({"scale": 8, "upscaler_1": "Lanczos"}, "upscaling_resize"),  # 2048 x 8 is over the side limit
    ({"resize_mode": 1, "width": 64, "height": 8192, "upscaler_1": "Lanczos"}, "upscaling_resize_h"),
])
def test_bad_values_name_the_api_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as caught:
        _request((2048, 1024), **fields)
    assert caught.value.field == field


def test_no_images_is_refused() -> None:
    with pytest.raises(RequestError) as caught:
        ExtrasRequest(images=[]).validate()
    assert caught.value.field == "image"


def test_names_are_tidied_and_none_means_none() -> None:
    request = _request((16, 16), upscaler_1="  Lanczos ", upscaler_2=None, resize_mode="1")
    assert (request.upscaler_1, request.upscaler_2, request.resize_mode) == ("Lanczos", "None", "Scale to")


def test_a_name_with_a_comma_is_quoted_in_the_text() -> None:
    request = _request((16, 16), upscaler_1="4x, sharp")
    assert postprocessing_text(request, plan_size(request, 16, 16)).endswith('Postprocess upscaler: "4x, sharp"')


def test_a_folder_batch_reads_every_picture_in_name_order_keeping_their_parameters(tmp_path: Any) -> None:
    from PIL.PngImagePlugin import PngInfo

    from sdlocal.engine.extras import load_folder

    meta = PngInfo()
    meta.add_text("parameters", "a cat\nSteps: 20, Seed: 1, Size: 8x8")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png", pnginfo=meta)
    Image.new("RGB", (8, 4)).save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not a picture")
    images = load_folder(tmp_path)
    assert [(item.name, item.image.size) for item in images] == [("a.jpg", (8, 4)), ("b.png", (8, 8))]
    assert images[0].parameters is None and images[1].parameters.startswith("a cat")


@pytest.mark.parametrize("make", ["missing", "empty", "broken"])
def test_a_bad_folder_names_the_field(tmp_path: Any, make: str) -> None:
    from sdlocal.engine.extras import load_folder

    folder = tmp_path / "in"
    if make != "missing":
        folder.mkdir()
    if make == "broken":
        (folder / "x.png").write_bytes(b"not a png")
    with pytest.raises(RequestError) as caught:
        load_folder(folder)
    assert caught.value.field == "input_dir"
