"""Hires fix and Extras in a real browser (Debian chromium via Playwright, as ``test_browser.py``): ticking
"Hires. fix" shows the size it will make, and the Extras tab upscales an uploaded picture with Lanczos, saving it
under ``outputs/extras-images/<date>/`` with the picture's own parameters; "Batch from Directory" refuses a
folder that is not there. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdlocal.outputs import read_image_info
from tests.ui.conftest import RunningApp
from tests.ui.test_browser import ARTIFACTS, app_page


def test_hires_size_line_and_an_extras_upscale_in_the_browser(running_app: RunningApp, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    photo = tmp_path / "photo.png"
    info = PngInfo()
    info.add_text("parameters", "a blue door\nSteps: 4, Sampler: Euler, Seed: 99, Size: 48x40")
    Image.new("RGB", (48, 40), (40, 120, 200)).save(photo, pnginfo=info)
    before = set((running_app.data_dir / "outputs").rglob("extras-images/*/*.png"))
    with app_page(running_app, "browser-extras-failure.png", height=1100) as page:
        for elem, value in (("#sd-width", "64"), ("#sd-height", "64")):
            field = page.locator(f"{elem} input[type=number]")
            field.fill(value)
            field.press("Enter")
        page.locator("#sd-hires input[type=checkbox]").check()
        size = page.locator("#sd-hires-size")
        expect(size).to_be_visible(timeout=10_000)  # ticking opened the settings
        expect(size).to_contain_text("64x64 -> 128x128", timeout=10_000)
        scale = page.locator("#sd-hr-scale input[type=number]")
        scale.fill("3")
        scale.press("Enter")
        expect(size).to_contain_text("64x64 -> 192x192", timeout=10_000)
        page.screenshot(path=str(ARTIFACTS / "browser-hires.png"), full_page=True)

        page.get_by_role("tab", name="Extras", exact=True).click()
        page.locator("#sd-extras-image input[type=file]").set_input_files(str(photo))
        expect(page.locator("#sd-extras-image img").first).to_be_visible(timeout=20_000)
        page.locator("#sd-extras-upscaler-1 input").click()
        page.get_by_role("option", name="Lanczos", exact=True).first.click()
        page.locator("#sd-extras-generate").click()
        expect(page.locator("#sd-extras-progress")).to_contain_text("Done: 1 image", timeout=60_000)
        expect(page.locator("#sd-extras-info")).to_contain_text("Postprocess upscaler: Lanczos")
        shown = page.locator("#sd-extras-results img").first
        expect(shown).to_be_visible()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=shown.element_handle())
        assert shown.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [96, 80]
        page.screenshot(path=str(ARTIFACTS / "browser-extras.png"))
        # the open source tab decides: a folder that does not exist is refused by name
        page.get_by_role("tab", name="Batch from Directory", exact=True).click()
        page.locator("#sd-extras-input-dir textarea, #sd-extras-input-dir input").first.fill(str(tmp_path / "none"))
        page.locator("#sd-extras-generate").click()
        expect(page.locator("#sd-extras-error")).to_contain_text("Input directory", timeout=20_000)
    [saved] = sorted(set((running_app.data_dir / "outputs").rglob("extras-images/*/*.png")) - before)
    assert Image.open(saved).size == (96, 80)
    text, chunks = read_image_info(saved)
    assert text.startswith("a blue door") and "Postprocess upscale by: 2" in chunks["postprocessing"]
