"""img2img and inpainting through the engine on the tiny models: A1111's steps, seeds, masks and infotext,
for 4- and 9-channel checkpoints, SD 1.x and SDXL, diffusers folders and single files, offline."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdlocal.engine import RequestError
from sdlocal.engine.images import blur_reach
from sdlocal.engine.infotext import infotext_to_request_fields, infotext_to_source_fields, parse_infotext

from .conftest import pixels


def _init(size=(64, 64)):
    x = np.linspace(0, 255, size[0], dtype=np.uint8)[None, :]
    rgb = np.stack([np.broadcast_to(x, (size[1], size[0])), np.full((size[1], size[0]), 60, np.uint8),
                    np.broadcast_to(x[:, ::-1], (size[1], size[0]))], axis=-1)
    return Image.fromarray(np.ascontiguousarray(rgb), "RGB")


def _mask(size=(64, 64), box=(24, 24, 39, 39)):
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


def _source(mask=None, **extra):
    source = {"images": [_init()], "denoising_strength": 0.75, **extra}
    if mask is not None:
        source["mask"] = mask
    return source


def test_img2img_runs_int_steps_times_strength_and_reports_them(engine, request_for):
    seen = []
    request = request_for(steps=10, source=_source(denoising_strength=0.45))
    engine.generate(request, on_progress=seen.append)
    assert [p.step for p in seen] == [1, 2, 3, 4]
    assert {p.total_steps for p in seen} == {4}


def test_same_request_same_pixels_and_batch_image_i_gets_seed_plus_i(engine, request_for):
    batch = engine.generate(request_for(seed=77, batch_size=2, source=_source()))
    again = engine.generate(request_for(seed=77, batch_size=2, source=_source()))
    single = engine.generate(request_for(seed=78, source=_source()))
    assert batch.seeds == [77, 78]
    assert np.array_equal(pixels(batch.images[0].image), pixels(again.images[0].image))
    difference = np.abs(pixels(batch.images[1].image) - pixels(single.images[0].image))
    assert difference.max() <= 2  # the same seed's image; batched matmuls may round apart
    assert "Seed: 78," in batch.images[1].infotext
    assert not np.array_equal(pixels(batch.images[0].image), pixels(batch.images[1].image))


def test_strength_moves_the_result_away_from_the_init_image(engine, request_for):
    init = pixels(_init())
    low = engine.generate(request_for(steps=10, source=_source(denoising_strength=0.2))).images[0].image
    high = engine.generate(request_for(steps=10, source=_source(denoising_strength=1.0))).images[0].image
    assert np.abs(pixels(low) - init).mean() < np.abs(pixels(high) - init).mean()


@pytest.mark.parametrize("model", ["tiny-sd1-diffusers", "tiny-sd1-safetensors", "tiny-sdxl-diffusers",
                                   "tiny-sdxl-safetensors", "tiny-sd1-inpainting"])
@pytest.mark.parametrize("area", ["Whole picture", "Only masked"])
def test_inpainting_keeps_the_original_beyond_the_blurred_mask(engine, request_for, no_network, model, area):
    box = (24, 24, 39, 39)
    blur = 3
    spec = {"image": _mask(box=box), "blur_x": blur, "blur_y": blur, "area": area, "padding": 8,
            "content": "original"}
    result = engine.generate(request_for(model=model, source=_source(mask=spec, denoising_strength=1.0)))
    out, init = pixels(result.images[0].image), pixels(_init())
    rx, ry = blur_reach(blur, blur)
    outside = np.ones((64, 64), bool)
    outside[max(0, box[1] - ry):box[3] + 1 + ry, max(0, box[0] - rx):box[2] + 1 + rx] = False
    assert np.array_equal(out[outside], init[outside])
    assert np.abs(out[28:36, 28:36] - init[28:36, 28:36]).mean() > 1  # the masked area was repainted


def test_only_masked_returns_the_init_image_size(engine, request_for):
    init = _init((128, 64))
    spec = {"image": _mask((128, 64), (90, 20, 105, 35)), "area": "Only masked", "padding": 4}
    result = engine.generate(request_for(source={"images": [init], "mask": spec}))
    assert result.images[0].image.size == (128, 64)
    assert np.array_equal(pixels(result.images[0].image)[:, :60], pixels(init)[:, :60])


def test_a_blank_mask_runs_plain_img2img(engine, request_for):
    plain = engine.generate(request_for(source=_source())).images[0]
    blank = engine.generate(request_for(source=_source(mask={"image": Image.new("L", (64, 64), 0)}))).images[0]
    assert np.array_equal(pixels(plain.image), pixels(blank.image))
    assert "Mask blur" not in blank.infotext


@pytest.mark.parametrize("content", ["fill", "latent noise", "latent nothing"])
def test_masked_content_changes_the_masked_area_only(engine, request_for, content):
    spec = {"image": _mask(), "blur_x": 0, "blur_y": 0, "content": "original"}
    original = engine.generate(request_for(source=_source(mask=spec, denoising_strength=0.5))).images[0].image
    other = engine.generate(request_for(source=_source(mask={**spec, "content": content},
                                                       denoising_strength=0.5))).images[0].image
    a, b = pixels(original), pixels(other)
    assert np.abs(a[26:38, 26:38] - b[26:38, 26:38]).mean() > 0.5
    assert np.array_equal(a[:16], b[:16])


def test_resize_modes_and_the_latent_upscale_give_the_requested_size(engine, request_for):
    for mode in range(4):
        result = engine.generate(request_for(width=64, height=96,
                                             source={"images": [_init((80, 48))], "resize_mode": mode}))
        assert result.images[0].image.size == (64, 96)


def test_txt2img_img2img_inpaint_share_one_model_and_load_nothing(engine, request_for):
    from sdlocal.engine.pipelines import shares_modules

    engine.generate(request_for())
    loaded = engine._pipelines().get(engine.current_model, engine._runtime_now())
    first = engine.generate(request_for(source=_source()))
    second = engine.generate(request_for(source=_source(mask={"image": _mask()})))
    assert first.timings["load"] == 0 and second.timings["load"] == 0
    assert set(loaded.variants) == {"img2img", "inpaint"}
    assert all(shares_modules(loaded, pipe) for pipe in loaded.variants.values())


def test_infotext_has_a1111_keys_and_reads_back(engine, request_for):
    spec = {"image": _mask(), "blur_x": 5, "blur_y": 5, "area": "Only masked", "padding": 16, "content": "fill",
            "invert": True}
    info = engine.generate(request_for(source=_source(mask=spec, denoising_strength=0.6))).images[0].infotext
    params = parse_infotext(info)
    assert params["Denoising strength"] == "0.6"
    assert (params["Mask blur"], params["Inpaint area"], params["Masked area padding"]) == ("5", "Only masked", "16")
    assert (params["Masked content"], params["Mask mode"]) == ("fill", "Inpaint not masked")
    assert "Conditional mask weight" not in params  # a 4-channel model has no mask conditioning
    assert infotext_to_source_fields(params) == {
        "denoising_strength": 0.6, "padding": 16, "mask_blur_x": 5, "mask_blur_y": 5, "inpaint_area": "Only masked",
        "invert": True, "content": "fill"}
    assert infotext_to_request_fields(params)["steps"] == 2


def test_inpainting_model_writes_and_uses_the_conditional_mask_weight(engine, request_for):
    spec = {"image": _mask(), "conditional_weight": 0.25}
    full = engine.generate(request_for(model="tiny-sd1-inpainting", source=_source(mask={"image": _mask()})))
    quarter = engine.generate(request_for(model="tiny-sd1-inpainting", source=_source(mask=spec)))
    assert "Conditional mask weight: 0.25" in quarter.images[0].infotext
    assert not np.array_equal(pixels(full.images[0].image), pixels(quarter.images[0].image))


def test_a1111_infotext_fills_the_source_fields():
    text = ("a cat\nNegative prompt: dog\nSteps: 30, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, "
            "Denoising strength: 0.55, Mask blur X: 2, Mask blur Y: 6, Masked content: latent noise")
    assert infotext_to_source_fields(parse_infotext(text)) == {
        "denoising_strength": 0.55, "mask_blur_x": 2, "mask_blur_y": 6, "inpaint_area": "Whole picture",
        "invert": False, "content": "latent noise"}


def test_a_wrong_size_mask_is_refused_before_any_work(engine, request_for):
    with pytest.raises(RequestError) as caught:
        request_for(source=_source(mask={"image": _mask((32, 64))}))
    assert caught.value.field == "mask"


def test_interrupt_stops_an_img2img_run(engine, request_for):
    from sdlocal.engine.request import RunControl

    control = RunControl()
    control.interrupt()
    result = engine.generate(request_for(batch_count=2, source=_source()), control=control)
    assert result.interrupted and result.images == []


@pytest.fixture(scope="module")
def more_models(tmp_path_factory):
    """An SD 2.x single file and a 9-channel SDXL inpainting folder, which the shared tiny folder lacks."""
    from sdlocal.engine.synthetic import save_tiny_model

    from .conftest import make_engine

    root = tmp_path_factory.mktemp("more") / "models"
    root.mkdir()
    save_tiny_model(root / "tiny-sd2.safetensors", family="sd2", fmt="safetensors")
    save_tiny_model(root / "tiny-sdxl-inpainting", family="sdxl", fmt="diffusers", inpainting=True)
    return make_engine(root, tmp_path_factory.mktemp("more-data"), device="cpu", precision="fp32")


@pytest.mark.parametrize("model", ["tiny-sd2", "tiny-sdxl-inpainting"])
def test_sd2_and_sdxl_inpainting_checkpoints_inpaint_and_img2img(more_models, request_for, no_network, model):
    spec = {"image": _mask(), "blur_x": 0, "blur_y": 0}
    inpainted = more_models.generate(request_for(model=model, source=_source(mask=spec))).images[0].image
    outside = np.ones((64, 64), bool)
    outside[24:40, 24:40] = False
    assert np.array_equal(pixels(inpainted)[outside], pixels(_init())[outside])
    varied = more_models.generate(request_for(model=model, source=_source())).images[0]
    assert varied.image.size == (64, 64) and "Denoising strength: 0.75" in varied.infotext


def test_img2img_and_inpaint_leave_every_shared_module_in_its_precision(tmp_path, tiny_models_dir, request_for):
    """A bf16 model stays bf16 (diffusers' from_pipe would cast it to fp32), an fp32 VAE stays fp32."""
    import torch

    from .conftest import make_engine

    engine = make_engine(tiny_models_dir, tmp_path, device="cpu", precision="bf16", no_half_vae=True)
    engine.generate(request_for())
    loaded = engine._pipelines().get(engine.current_model, engine._runtime_now())
    before = {name: getattr(loaded.pipe, name).dtype for name in ("unet", "vae", "text_encoder")}
    assert before == {"unet": torch.bfloat16, "vae": torch.float32, "text_encoder": torch.bfloat16}
    engine.generate(request_for(source=_source()))
    engine.generate(request_for(source=_source(mask={"image": _mask()})))
    assert {name: getattr(loaded.pipe, name).dtype for name in before} == before
