"""The Script dropdown in a real browser (Debian chromium via Playwright, as ``test_browser.py``): choose X/Y/Z
plot, Steps "1,2" on X, see the summary line before the run, Generate, and the grid is shown and saved under
``outputs/txt2img-grids/``. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import re

from tests.ui.conftest import RunningApp
from tests.ui.test_browser import ARTIFACTS, app_page


def _pick(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).first.click()


def test_an_xyz_plot_in_the_browser(running_app: RunningApp) -> None:
    from playwright.sync_api import expect

    with app_page(running_app, "browser-xyz-failure.png", height=1400) as page:
        page.locator("#sd-prompt textarea").fill("a lighthouse on a cliff")
        for elem, value in (("#sd-width", "64"), ("#sd-height", "64"), ("#sd-steps", "3")):
            field = page.locator(f"{elem} input[type=number]")
            field.fill(value)
            field.press("Enter")
        page.locator("#sd-seed input").fill("2024")
        _pick(page, "sd-script", "X/Y/Z plot")
        expect(page.locator("#sd-xyz-x-type")).to_be_visible(timeout=10_000)
        _pick(page, "sd-xyz-x-type", "Steps")
        values = page.locator("#sd-xyz-x-values").get_by_role("textbox")
        values.fill("1,2")
        values.press("Tab")
        summary = page.locator("#sd-script-summary")
        expect(summary).to_contain_text("X/Y/Z plot will create 2 images on 1 2x1 grid", timeout=20_000)
        page.screenshot(path=str(ARTIFACTS / "browser-xyz-summary.png"))
        page.locator("#sd-generate").click()
        expect(page.locator("#sd-progress")).to_contain_text("Done", timeout=180_000)
        expect(page.locator("#sd-results img").first).to_be_visible()
        expect(page.locator("#sd-info textarea")).to_have_value(
            re.compile(r"^a lighthouse on a cliff[\s\S]*Script: X/Y/Z plot[\s\S]*X Type: Steps"))
        page.screenshot(path=str(ARTIFACTS / "browser-xyz-grid.png"))
    grids = list((running_app.data_dir / "outputs" / "txt2img-grids").rglob("*.png"))
    assert len(grids) == 1
