"""The img2img tab in a real browser (Debian chromium via Playwright, as ``test_browser.py``): open Inpaint, upload
an image, paint a stroke with the mouse, Generate; the result is saved under ``outputs/img2img/<date>/``, shown on
the page and in the Gallery, and the Gallery sends it back to img2img. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from sdlocal.outputs import read_image_parameters
from tests.ui.conftest import RunningApp
from tests.ui.test_browser import ARTIFACTS, app_page

SEED = 4242


def _paint_stroke(page, editor) -> None:
    """Pick the brush and drag across the middle of the canvas, as a user paints the part to repaint."""
    editor.get_by_role("button", name="Brush", exact=True).first.click()
    box = editor.locator("canvas").last.bounding_box()
    x, y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(x + step * box["width"] * 0.04, y, steps=2)
    page.mouse.up()


def test_inpaint_a_painted_stroke_in_the_browser(running_app: RunningApp, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    photo = tmp_path / "photo.png"
    Image.new("RGB", (128, 96), (40, 120, 200)).save(photo)
    with app_page(running_app, "browser-inpaint-failure.png", height=1100) as page:
        page.get_by_role("tab", name="img2img", exact=True).first.click()
        expect(page.locator("#sd-i2i-model")).to_contain_text(running_app.model_name, timeout=10_000)
        page.get_by_role("tab", name="Inpaint", exact=True).click()
        editor = page.locator("#sd-i2i-inpaint")
        with page.expect_file_chooser() as chooser:
            editor.get_by_role("button", name="Upload").first.click()
        chooser.value.set_files(str(photo))
        # the output size follows the image
        expect(page.locator("#sd-i2i-width input[type=number]")).to_have_value("128", timeout=20_000)
        expect(page.locator("#sd-i2i-height input[type=number]")).to_have_value("96")
        _paint_stroke(page, editor)
        page.screenshot(path=str(ARTIFACTS / "browser-inpaint-painted.png"))
        page.locator("#sd-i2i-prompt textarea").fill("a red boat on a blue sea")
        steps = page.locator("#sd-i2i-steps input[type=number]")
        steps.fill("4")
        steps.press("Enter")
        page.locator("#sd-i2i-seed input").fill(str(SEED))
        page.locator("#sd-i2i-generate").click()
        expect(page.locator("#sd-i2i-progress")).to_contain_text("Done", timeout=180_000)
        expect(page.locator("#sd-i2i-results img").first).to_be_visible()
        expect(page.locator("#sd-i2i-info textarea")).to_have_value(
            re.compile(rf"^a red boat on a blue sea[\s\S]*Seed: {SEED}[\s\S]*Denoising strength: 0\.75"))
        page.screenshot(path=str(ARTIFACTS / "browser-inpaint-result.png"))

        saved = sorted((running_app.data_dir / "outputs").glob("*/*/*.png"))  # thumbnails are JPEGs
        assert len(saved) == 1, saved
        relative = saved[0].relative_to(running_app.data_dir / "outputs").as_posix()
        assert re.fullmatch(r"img2img/\d{4}-\d{2}-\d{2}/[^/]+\.png", relative), relative
        assert f"Seed: {SEED}" in read_image_parameters(saved[0])
        with Image.open(saved[0]) as result:
            assert result.size == (128, 96)  # "Whole picture" at the size that followed the image

        page.get_by_role("tab", name="Gallery").click()
        page.locator("#sd-gallery img").first.click()
        expect(page.locator("#sd-gallery-params textarea")).to_have_value(
            re.compile(rf"Seed: {SEED}[\s\S]*Denoising strength"), timeout=10_000)
        page.screenshot(path=str(ARTIFACTS / "browser-inpaint-gallery.png"))
        page.locator("#sd-gallery-send-img2img").click()
        expect(page.locator("#sd-i2i-image img").first).to_be_visible(timeout=10_000)
        expect(page.locator("#sd-i2i-prompt textarea")).to_have_value("a red boat on a blue sea")
        expect(page.locator("#sd-i2i-width input[type=number]")).to_have_value("128")
