"""The img2img tab's handlers without a server: masks from the editor, sizes, the request, the queue path, sends."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdlocal.engine.request import GeneratedImage, RequestError
from sdlocal.ui.common import FORM_FIELDS, FormError, error_text
from sdlocal.ui.img2img import image_size, model_updates, on_image_loaded, run, send_updates, split_values
from sdlocal.ui.img2img_request import (
    IMAGE_FIELDS,
    SOURCE_DEFAULTS,
    SOURCE_FIELDS,
    SourceImages,
    build_request,
    editor_mask,
    fit_size,
    round_to_8,
    scaled_size,
    source_images,
)

FORM = {"prompt": "a red barn", "negative_prompt": "", "sampler": "Euler", "schedule": "Automatic", "steps": 10,
        "cfg_scale": 7.0, "width": 64, "height": 96, "seed": 5, "batch_count": 1, "batch_size": 1, "clip_skip": 1,
        "token_merging_ratio": 0.0, "vae_tiling": False, "emphasis": "Original"}


def _stroke_layer(size: tuple[int, int], box: tuple[int, int, int, int], colour=(0, 0, 0, 255)) -> Image.Image:
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    layer.paste(Image.new("RGBA", (box[2] - box[0], box[3] - box[1]), colour), box[:2])
    return layer


def test_editor_mask_is_white_where_any_layer_has_paint_whatever_its_colour() -> None:
    background = Image.new("RGBA", (40, 24), (10, 200, 30, 255))
    soft_edge = _stroke_layer((40, 24), (30, 0, 32, 4), colour=(255, 0, 255, 40))  # an anti-aliased edge
    value = {"background": background, "composite": background,
             "layers": [_stroke_layer((40, 24), (4, 6, 12, 10)), None, soft_edge]}
    mask = editor_mask(value)
    assert mask.mode == "L" and mask.size == (40, 24)
    assert mask.getpixel((4, 6)) == 255 and mask.getpixel((11, 9)) == 255 and mask.getpixel((31, 3)) == 255
    assert mask.getpixel((3, 6)) == 0 and mask.getpixel((12, 10)) == 0 and mask.getpixel((39, 23)) == 0
    assert sorted(set(mask.tobytes())) == [0, 255]
    assert editor_mask({"background": None, "layers": [], "composite": None}) is None
    # a layer of another size (an edited canvas) is fitted to the image
    big = editor_mask({"background": background, "layers": [_stroke_layer((80, 48), (0, 0, 40, 48))]})
    assert big.size == (40, 24) and big.getpixel((19, 12)) == 255 and big.getpixel((21, 12)) == 0


def test_each_mode_takes_its_own_images(tmp_path: Path) -> None:
    photo = Image.new("RGBA", (16, 8), (0, 0, 0, 0))  # transparent: flattened on white, as the canvas shows it
    assert source_images("img2img", {"init_image": photo}).image.getpixel((0, 0)) == (255, 255, 255)
    painted = Image.new("RGBA", (16, 8), (200, 10, 10, 255))
    sketch = source_images("sketch", {"sketch": {"background": photo, "layers": [], "composite": painted}})
    assert sketch.image.getpixel((3, 3)) == (200, 10, 10) and sketch.mask is None
    inpaint = source_images("inpaint", {"inpaint": {"background": painted, "composite": painted,
                                                    "layers": [_stroke_layer((16, 8), (0, 0, 4, 4))]}})
    assert inpaint.image.mode == "RGB" and inpaint.mask.getpixel((1, 1)) == 255 and inpaint.mask.getpixel((9, 1)) == 0
    mask_file = tmp_path / "mask.png"
    Image.new("RGBA", (16, 8), (0, 0, 0, 128)).save(mask_file)
    upload = source_images("inpaint upload", {"inpaint_image": painted, "inpaint_mask": str(mask_file)})
    assert upload.mask.mode == "RGBA"  # the engine reads an RGBA mask's alpha: it must reach it unchanged
    for mode, values, words in (("img2img", {}, "Drop an image on the img2img tab"),
                                ("inpaint", {"inpaint": {"background": None}}, "Drop an image on the Inpaint tab"),
                                ("inpaint upload", {"inpaint_image": painted}, "both files")):
        with pytest.raises(FormError, match=words) as caught:
            source_images(mode, values)
        assert error_text(caught.value) == str(caught.value)  # shown as the sentence it is


def test_sizes_round_to_multiples_of_8_within_the_limits() -> None:
    assert [round_to_8(v) for v in (512, 513, 516, 517, 30, 9000)] == [512, 512, 520, 520, 64, 4096]
    assert fit_size(1023, 767) == (1024, 768)
    assert scaled_size((300, 200), 1.5) == (448, 304)  # 450 -> 448; 300 is halfway and goes up
    assert scaled_size((512, 512), 0.5) == (256, 256)


def test_image_loaded_sets_the_output_size_to_the_images() -> None:
    editor = {"background": Image.new("RGBA", (333, 250)), "layers": [], "composite": None}
    assert image_size(editor) == (333, 250) and image_size(Image.new("RGB", (8, 9))) == (8, 9)
    width, height, size, note = on_image_loaded(editor, 2.0)
    assert (width, height, size) == (336, 248, (333, 250)) and "664×504" in note
    assert all(update == {"__type__": "update"} for update in on_image_loaded(None, 1.0))


def test_inpaint_request_carries_the_controls_with_a1111_defaults() -> None:
    images = SourceImages(Image.new("RGB", (80, 56)), Image.new("L", (80, 56), 255))
    request = build_request("", FORM, {}, images)
    mask = request.source.mask
    assert request.mode == "inpaint" and request.output_kind == "img2img"
    assert (request.source.denoising_strength, request.source.resize_mode) == (0.75, "Just resize")
    assert (mask.blur_x, mask.blur_y, mask.invert, mask.area, mask.padding, mask.content) == \
        (4, 4, False, "Whole picture", 32, "original")
    assert (request.width, request.height, request.prompt, request.steps) == (64, 96, "a red barn", 10)

    settings = {**SOURCE_DEFAULTS, "denoising_strength": 0.4, "mask_blur": 9.0, "mask_mode": "Inpaint not masked",
                "masked_content": "latent noise", "inpaint_area": "Only masked", "padding": 48.0,
                "conditional_weight": 0.5, "resize_mode": "Crop and resize", "size_mode": "Resize by", "scale": 1.5}
    request = build_request("tiny", FORM, settings, images)
    mask = request.source.mask
    assert (mask.blur_x, mask.blur_y, mask.invert, mask.area, mask.padding, mask.content, mask.conditional_weight) \
        == (9, 9, True, "Only masked", 48, "latent noise", 0.5)
    assert (request.source.denoising_strength, request.source.resize_mode) == (0.4, "Crop and resize")
    assert (request.width, request.height, request.model) == (120, 88, "tiny")  # 80x56 x 1.5, to multiples of 8
    assert request.denoising_steps() == 4  # int(10 x 0.4)

    plain = build_request("", FORM, {"denoising_strength": 0.6}, SourceImages(Image.new("RGB", (8, 8))))
    assert plain.mode == "img2img" and plain.source.mask is None


def test_bad_values_name_the_control() -> None:
    images = SourceImages(Image.new("RGB", (64, 64)), Image.new("L", (32, 32)))
    with pytest.raises(RequestError) as caught:
        build_request("", FORM, {"denoising_strength": 1.5}, images)
    assert error_text(caught.value).startswith("Denoising strength: 1.5")
    with pytest.raises(RequestError) as caught:
        build_request("", FORM, {}, images)
    assert caught.value.field == "mask" and error_text(caught.value).startswith("Mask:")


class _FakeQueue:
    """The queue's surface the run handler uses: submit returns a job that is already done."""

    def __init__(self) -> None:
        self.requests: list = []

    def submit(self, request, save=True, source="ui"):
        self.requests.append((request, save, source))
        image = GeneratedImage(image=Image.new("RGB", (8, 8)), seed=77, infotext="a red barn\nSeed: 77", index=0)
        result = SimpleNamespace(images=[image], warnings=[], interrupted=False, timings={"total": 1.0})
        return SimpleNamespace(done=lambda: True, error=None, result=result, paths=["/data/outputs/img2img/x.png"],
                               join=lambda timeout: None)

    def progress(self, job=None):
        return None


def _values(mode: str, images: dict, form: dict, settings: dict) -> list:
    return [mode, *[images.get(name) for name in IMAGE_FIELDS[1:]], *[form[n] for n in FORM_FIELDS],
            *[settings.get(n, SOURCE_DEFAULTS[n]) for n in SOURCE_FIELDS]]


def test_generate_submits_an_inpaint_request_through_the_queue_and_shows_the_images() -> None:
    queue = _FakeQueue()
    background = Image.new("RGBA", (64, 64), (90, 90, 90, 255))
    editor = {"background": background, "composite": background, "layers": [_stroke_layer((64, 64), (8, 8, 24, 24))]}
    values = _values("inpaint", {"inpaint": editor}, {**FORM, "steps": 10.0, "width": 64.0}, {"mask_blur": 2})
    assert split_values(tuple(values))[1]["steps"] == 10  # gradio's floats made whole numbers
    outputs = list(run(SimpleNamespace(queue=queue), "tiny", *values))
    (request, save, source), = queue.requests
    assert (request.mode, request.model, save, source) == ("inpaint", "tiny", True, "ui")
    assert request.source.mask.image.getpixel((10, 10)) == 255 and request.source.mask.image.getpixel((40, 40)) == 0
    assert request.source.mask.blur_x == 2
    last = outputs[-1]
    assert "Done: 1 image" in last[0] and last[3] == [("/data/outputs/img2img/x.png", "Seed 77")]
    assert last[4] == [(77, "a red barn\nSeed: 77", "/data/outputs/img2img/x.png")]


def test_generate_without_an_image_is_a_message_not_a_job() -> None:
    queue = _FakeQueue()
    outputs = list(run(SimpleNamespace(queue=queue), "tiny", *_values("img2img", {}, FORM, {})))
    assert queue.requests == [] and len(outputs) == 1 and "Drop an image on the img2img tab" in outputs[0][1]


def test_send_puts_the_image_and_its_parameters_into_the_inpaint_tab(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    info = PngInfo()
    info.add_text("parameters", "a cat\nSteps: 12, Sampler: Euler, CFG scale: 6, Seed: 3, Size: 512x512")
    Image.new("RGB", (100, 60)).save(path, pnginfo=info)
    engine = SimpleNamespace(find_model=lambda name: None)
    text = "a cat\nNegative prompt: dogs\nSteps: 12, Sampler: Euler, CFG scale: 6, Seed: 3, Size: 512x512"
    updates = send_updates(engine, str(path), "inpaint", text)
    tabs, modes, mode, init_image, editor, panel, size, note, model, *rest = updates
    form = dict(zip(FORM_FIELDS, rest[:len(FORM_FIELDS)], strict=True))
    assert tabs.selected == "img2img" and modes.selected == "i2i-inpaint" and mode == "inpaint"
    assert editor == {"background": str(path), "layers": [], "composite": str(path)}
    assert init_image == {"__type__": "update"} and panel["visible"] is True and size == (100, 60)
    assert (form["width"], form["height"]) == (104, 64)  # the image's size, not the text's 512x512
    assert form["prompt"]["value"] == "a cat" and form["negative_prompt"]["value"] == "dogs"
    assert form["seed"]["value"] == 3 and form["steps"]["value"] == 12
    plain = send_updates(engine, str(path), "img2img", "")
    assert plain[3] == str(path) and plain[4] == {"__type__": "update"} and plain[5]["visible"] is False
    assert plain[9 + FORM_FIELDS.index("prompt")] == {"__type__": "update"}  # no text: the prompt stays
    missing = send_updates(engine, None, "img2img", "")
    assert all(update == {"__type__": "update"} for update in missing) and len(missing) == len(updates)


def test_conditional_mask_weight_shows_for_inpainting_checkpoints_only() -> None:
    entries = {"inpaint-model": SimpleNamespace(inpainting=True), "plain": SimpleNamespace(inpainting=False)}
    engine = SimpleNamespace(find_model=lambda name: entries[name])
    note, weight = model_updates(engine, "inpaint-model")
    assert weight["visible"] is True and "inpaint-model" in note and "inpainting checkpoint" in note
    assert model_updates(engine, "plain")[1]["visible"] is False
    assert model_updates(engine, None)[1]["visible"] is False


def test_png_info_parameters_fill_the_img2img_settings(tmp_path: Path) -> None:
    """An A1111 inpainting text sets denoising, blur, area, padding, content and mask mode in the tab."""
    from sdlocal.forms import fill_from_infotext

    text = ("a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 9, Size: 512x512, Denoising strength: 0.35, "
            "Mask blur: 6, Inpaint area: Only masked, Masked area padding: 40, Masked content: latent noise, "
            "Mask mode: Inpaint not masked")
    engine = SimpleNamespace(find_model=lambda name: None)
    assert fill_from_infotext(engine, text).source == {
        "denoising_strength": 0.35, "padding": 40, "mask_blur_x": 6, "mask_blur_y": 6, "inpaint_area": "Only masked",
        "invert": True, "content": "latent noise"}
    assert fill_from_infotext(engine, "a cat\nSteps: 20, Seed: 1, Size: 64x64").source == {}
    path = tmp_path / "a.png"
    Image.new("RGB", (64, 48)).save(path)
    updates = send_updates(engine, str(path), "inpaint", text)
    settings = dict(zip(SOURCE_FIELDS, updates[-len(SOURCE_FIELDS):], strict=True))
    assert {name: update.get("value") for name, update in settings.items() if "value" in update} == {
        "denoising_strength": 0.35, "mask_blur": 6, "mask_mode": "Inpaint not masked",
        "masked_content": "latent noise", "inpaint_area": "Only masked", "padding": 40}
