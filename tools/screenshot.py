"""Take docs/screenshot.png: the Generate tab after a generation, served by the real app with a tiny model.

The model has random weights (``sdlocal.engine.synthetic``), so the pictures are coloured noise; the page
around them is the real one. Needs chromium (``/usr/bin/chromium`` or ``SDLOCAL_CHROMIUM``) and playwright.
Run from the repository root: ``.venv-test/bin/python tools/screenshot.py [output.png]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.ui.conftest import start_app  # noqa: E402 - after the path and the offline flag
from tests.ui.test_browser import ARGS, CHROMIUM  # noqa: E402

VIEWPORT = {"width": 1280, "height": 900}


def take(out: Path) -> None:
    """Pick the model (its preset applies), fill the prompt, generate two images, and capture the top of the page."""
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        app_run = start_app(Path(tmp) / "data", bad_files=False)
        app = next(app_run)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page(viewport=VIEWPORT)
                page.goto(app.url)
                expect(page.locator("#sd-load-status")).to_contain_text("Ready", timeout=60_000)
                page.locator("#sd-model input").click()
                page.get_by_role("option", name=app.model_name).first.click()
                expect(page.locator("#sd-preset input")).to_have_value("SD 1.5", timeout=10_000)
                page.locator("#sd-prompt textarea").fill("a lighthouse on a cliff at dawn, oil painting")
                for elem, value in (("#sd-width", "256"), ("#sd-height", "256"), ("#sd-steps", "20")):
                    field = page.locator(f"{elem} input[type=number]")
                    field.fill(value)
                    field.press("Enter")
                page.locator("#sd-seed input").fill("31337")
                page.get_by_label("Batch size").first.fill("2")
                page.get_by_label("Batch size").first.press("Enter")
                page.locator("#sd-generate").click()
                expect(page.locator("#sd-progress")).to_contain_text("Done", timeout=300_000)
                expect(page.locator("#sd-results img").first).to_be_visible()
                page.mouse.move(0, 0)
                page.evaluate("window.scrollTo(0, 0)")
                page.wait_for_timeout(500)
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out))
                browser.close()
        finally:
            next(app_run, None)


if __name__ == "__main__":
    take(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshot.png")
