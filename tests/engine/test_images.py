"""The source-image stage alone (Pillow and NumPy, no model): resize modes, masks, crops, fill, compositing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdlocal.engine import images
from sdlocal.engine.request import ImageSource, MaskSpec


def _gradient(size=(96, 64)):
    x = np.linspace(0, 255, size[0], dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, size[1], dtype=np.float32)[:, None, None]
    rgb = np.concatenate([np.broadcast_to(x, (size[1], size[0], 1)), np.broadcast_to(y, (size[1], size[0], 1)),
                          np.full((size[1], size[0], 1), 90, np.float32)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _box_mask(size, box):
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


@pytest.mark.parametrize("mode", ["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"])
def test_every_resize_mode_gives_the_output_size(mode):
    assert images.resize_image(_gradient(), mode, 64, 80).size == (64, 80)


def test_crop_and_resize_keeps_the_centre_and_fill_stretches_the_edges():
    wide = Image.new("RGB", (200, 100), (0, 0, 0))
    wide.paste((255, 0, 0), (0, 0, 50, 100))  # red band on the left, cut away by a centre crop to a square
    cropped = np.asarray(images.resize_image(wide, "Crop and resize", 100, 100))
    assert cropped[..., 0].max() < 30
    tall = Image.new("RGB", (50, 100), (0, 0, 0))
    tall.paste((0, 255, 0), (0, 0, 1, 100))  # its left edge column is green: "fill" stretches it leftwards
    filled = np.asarray(images.resize_image(tall, "Resize and fill", 100, 100))
    assert filled[50, 0, 1] > 200 and filled[50, 10, 1] > 200
    assert filled[50, 99, 1] < 30


def test_same_size_resize_is_an_exact_copy():
    image = _gradient()
    assert np.array_equal(np.asarray(images.resize_image(image, "Crop and resize", 96, 64)), np.asarray(image))


def test_rgba_masks_use_alpha_and_invert_flips():
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.putpixel((2, 3), (0, 0, 0, 255))
    grey = images.mask_to_l(rgba)
    assert grey.getpixel((2, 3)) == 255 and grey.getpixel((0, 0)) == 0
    assert images.mask_to_l(rgba, invert=True).getpixel((0, 0)) == 255


def test_blank_mask_means_no_mask():
    assert images.effective_mask(MaskSpec(image=Image.new("L", (8, 8), 0))) is None
    assert images.effective_mask(MaskSpec(image=Image.new("L", (8, 8), 0), invert=True)) is not None


@pytest.mark.parametrize(("bx", "by"), [(4, 4), (0, 6), (9, 2)])
def test_blur_reach_is_where_the_blurred_mask_ends(bx, by):
    mask = _box_mask((160, 160), (70, 70, 89, 89))
    blurred = np.asarray(images.blur_mask(mask, bx, by))
    rx, ry = images.blur_reach(bx, by)
    assert blurred[:, : 70 - rx].max() == 0 and blurred[:, 90 + rx:].max() == 0
    assert blurred[: 70 - ry].max() == 0 and blurred[90 + ry:].max() == 0
    if bx:
        assert blurred[80, 70 - rx] > 0 or blurred[80, 70 - rx + 1] > 0  # the reach is tight, not a wide guess


def test_crop_region_pads_and_expands_to_the_output_aspect_inside_the_image():
    mask = _box_mask((200, 100), (90, 40, 109, 49))
    box = images.crop_region(mask, 8)
    assert box == (82, 32, 118, 58)
    wide = images.expand_to_aspect(box, 128, 64, (200, 100))
    assert (wide[2] - wide[0]) / (wide[3] - wide[1]) == pytest.approx(2.0, rel=0.05)
    edge = images.expand_to_aspect((0, 0, 20, 100), 64, 64, (200, 100))
    assert edge[0] == 0 and edge[2] <= 200 and edge[2] - edge[0] == 100


def test_fill_paints_the_masked_area_from_its_surroundings_and_leaves_the_rest():
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    image.paste((0, 0, 0), (24, 24, 40, 40))  # a black hole the mask covers
    mask = _box_mask((64, 64), (24, 24, 39, 39))
    filled = np.asarray(images.fill_masked(image, mask)).astype(int)
    assert np.abs(filled[32, 32] - [200, 30, 30]).max() <= 2
    assert np.array_equal(filled[:20], np.asarray(image)[:20])


def test_composite_keeps_the_original_exactly_where_the_mask_is_zero():
    original, generated = _gradient((64, 64)), Image.new("RGB", (64, 64), (1, 2, 3))
    mask = images.blur_mask(_box_mask((64, 64), (20, 20, 40, 40)), 3, 3)
    out = np.asarray(images.composite(generated, original, mask))
    zero = np.asarray(mask) == 0
    assert np.array_equal(out[zero], np.asarray(original)[zero])
    assert (out[30, 30] == [1, 2, 3]).all()


def test_only_masked_prepares_the_crop_at_the_output_size_and_pastes_back_into_the_whole_image():
    init = _gradient((200, 100))
    source = ImageSource(images=[init], mask=MaskSpec(image=_box_mask((200, 100), (90, 40, 109, 59)),
                                                      area="Only masked", padding=4, blur_x=2, blur_y=2))
    prepared = images.prepare(init, source, 64, 64)
    assert prepared.pixels.size == prepared.mask.size == (64, 64)
    x1, y1, x2, y2 = prepared.box
    assert x2 - x1 == y2 - y1  # widened to the square output
    result = images.finish(prepared, Image.new("RGB", (64, 64), (0, 255, 0)))
    assert result.size == (200, 100)
    assert result.getpixel((100, 50)) == (0, 255, 0)
    assert result.getpixel((5, 5)) == init.getpixel((5, 5))


def test_latent_resize_encodes_the_image_at_its_own_size_rounded_to_8():
    prepared = images.prepare(_gradient((101, 70)), ImageSource(images=[_gradient((101, 70))],
                                                              resize_mode="Just resize (latent upscale)"), 64, 64)
    assert prepared.latent_resize and prepared.pixels.size == (96, 64)
