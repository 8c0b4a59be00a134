"""The real page in a real browser (Debian chromium via Playwright): pick the model, prompt, Generate, watch the
progress and the images, then reuse the parameters from the Gallery; and ``--theme``. Screenshots go to
``test-artifacts/``."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port, serving
from tests.ui.conftest import RunningApp

CHROMIUM = os.environ.get("SDLOCAL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]


def _chromium() -> str:
    found = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if found:
        return found
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"chromium is missing at {CHROMIUM}: CI must run the browser test (apt install chromium)")
    pytest.skip(f"chromium is not installed at {CHROMIUM} (apt install chromium); CI runs this test")


@contextmanager
def app_page(running_app: RunningApp, failure_png: str, height: int = 1000) -> Iterator[Any]:
    """The app open in headless Chromium once its model is ready; a screenshot named ``failure_png`` if the
    test fails inside, and the browser closed either way."""
    executable = _chromium()
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": height})
        try:
            page.goto(running_app.url)
            expect(page.locator("#sd-load-status")).to_contain_text("Ready", timeout=60_000)
            # the page-load events (form state, the VAE list) are done before the test types anything: a late
            # one would otherwise write the saved form over what was just typed
            expect(page.locator("#sd-vae input")).not_to_have_value("", timeout=60_000)
            yield page
        except Exception:
            page.screenshot(path=str(ARTIFACTS / failure_png))
            raise
        finally:
            browser.close()


def test_generate_and_reuse_in_the_browser(running_app: RunningApp) -> None:
    from playwright.sync_api import expect

    with app_page(running_app, "browser-failure.png") as page:
        model = page.locator("#sd-model input")
        model.click()
        page.get_by_role("option", name=running_app.model_name).first.click()
        # picking the model applied the SD 1.x preset; make the run small and slow enough to watch
        expect(page.locator("#sd-preset input")).to_have_value("SD 1.5", timeout=10_000)
        page.locator("#sd-prompt textarea").fill("a lighthouse on a cliff at dawn")
        for elem, value in (("#sd-width", "64"), ("#sd-height", "64"), ("#sd-steps", "60")):
            field = page.locator(f"{elem} input[type=number]")
            field.fill(value)
            field.press("Enter")
        page.locator("#sd-seed input").fill("31337")
        page.locator("#sd-generate").click()
        expect(page.locator("#sd-progress")).to_contain_text("step", timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "browser-progress.png"))
        expect(page.locator("#sd-progress")).to_contain_text("Done", timeout=120_000)
        expect(page.locator("#sd-results img").first).to_be_visible()
        expect(page.locator("#sd-info textarea")).to_have_value(
            re.compile(r"^a lighthouse on a cliff at dawn[\s\S]*Seed: 31337"))
        page.screenshot(path=str(ARTIFACTS / "browser-generate.png"))
        page.locator("#sd-prompt textarea").fill("something else")  # reuse must bring the old prompt back

        page.get_by_role("tab", name="Gallery").click()
        expect(page.locator("#sd-gallery-folder")).to_contain_text(str(running_app.data_dir / "outputs"))
        page.locator("#sd-gallery img").first.click()
        expect(page.locator("#sd-gallery-params textarea")).to_have_value(re.compile("Seed: 31337"), timeout=10_000)
        page.screenshot(path=str(ARTIFACTS / "browser-gallery.png"))
        page.locator("#sd-gallery-reuse").click()
        expect(page.locator("#sd-prompt textarea")).to_have_value("a lighthouse on a cliff at dawn", timeout=10_000)
        expect(page.locator("#sd-seed input")).to_have_value("31337")
        page.screenshot(path=str(ARTIFACTS / "browser-reused.png"))


@contextmanager
def _themed_server(data_dir: Path, theme: str) -> Iterator[str]:
    """The real server (no model: the page needs none) started with ``--theme <theme>``."""
    from sdlocal.server import create_app
    from sdlocal.services import build_services
    from sdlocal.settings import Settings

    port = free_port()
    services = build_services(Settings(data_dir=data_dir, port=port, theme=theme))
    try:
        # /health, since the page itself answers with a redirect (to add __theme)
        with serving(create_app(services), port) as url:
            yield url + "/"
    finally:
        services.close()


def test_theme_flag_sets_dark_or_light_whatever_the_system_prefers(tmp_path: Path) -> None:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    def dark(browser, url: str, system: str) -> bool:
        page = browser.new_page(color_scheme=system)
        try:
            page.goto(url)
            page.locator("#sd-load-status").wait_for(timeout=60_000)  # Gradio has applied its theme by now
            return page.evaluate("document.body.classList.contains('dark')")
        finally:
            page.close()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=ARGS)
        try:
            with _themed_server(tmp_path / "dark", "dark") as url:
                assert dark(browser, url, system="light") is True
                assert dark(browser, url + "?__theme=light", system="light") is False  # the address's own wins
            with _themed_server(tmp_path / "light", "light") as url:
                assert dark(browser, url, system="dark") is False
            with _themed_server(tmp_path / "system", "system") as url:
                assert dark(browser, url, system="dark") is True  # Gradio follows the system by itself
        finally:
            browser.close()


def test_styles_and_token_counter_in_the_browser(running_app: RunningApp) -> None:
    """The token counter follows the typing (A1111's "2/75", "80/150" past one chunk); pick a style under the
    prompt, generate: the image's parameters hold the prompt with the style applied."""
    from playwright.sync_api import expect

    running_app.services.styles.save("Browser night", "{prompt} at night", "daylight")
    with app_page(running_app, "browser-styles-failure.png") as page:
        page.locator("#sd-model input").click()
        page.get_by_role("option", name=running_app.model_name).first.click()
        expect(page.locator("#sd-preset input")).to_have_value("SD 1.5", timeout=10_000)
        counter = page.locator("#sd-prompt-tokens")
        page.locator("#sd-prompt textarea").fill("a cat")
        expect(counter).to_have_text("2/75", timeout=20_000)
        page.locator("#sd-prompt textarea").fill("cat " * 80)
        expect(counter).to_have_text("80/150", timeout=20_000)
        page.locator("#sd-prompt textarea").fill("a quiet harbour")
        expect(counter).not_to_have_text("80/150", timeout=20_000)
        for elem, value in (("#sd-width", "64"), ("#sd-height", "64"), ("#sd-steps", "2")):
            field = page.locator(f"{elem} input[type=number]")
            field.fill(value)
            field.press("Enter")
        page.locator("#sd-styles input").click()
        page.get_by_role("option", name="Browser night").first.click()
        page.keyboard.press("Escape")
        page.locator("#sd-generate").click()
        expect(page.locator("#sd-progress")).to_contain_text("Done", timeout=120_000)
        expect(page.locator("#sd-info textarea")).to_have_value(
            re.compile(r"^a quiet harbour at night\nNegative prompt: [^\n]*daylight"))
        expect(page.locator("#sd-prompt textarea")).to_have_value("a quiet harbour")  # the box keeps the text
        page.screenshot(path=str(ARTIFACTS / "browser-styles.png"))


def write_kohya_lora(folder: Path, stem: str = "pixelart_v1") -> Path:
    """A small LoRA as kohya's sd-scripts writes one: one UNet module, rank 4, and the training metadata that
    names it "pixelart" (``ss_output_name``) with the trigger word "pixel"."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    key = "lora_unet_down_blocks_0_attentions_0_proj_in"
    tensors = {f"{key}.lora_down.weight": np.full((4, 32), 0.01, dtype=np.float32),
               f"{key}.lora_up.weight": np.zeros((32, 4), dtype=np.float32),
               f"{key}.alpha": np.array(4.0, dtype=np.float32)}
    path = folder / f"{stem}.safetensors"
    save_file(tensors, str(path), metadata={"ss_output_name": "pixelart",
                                            "ss_tag_frequency": json.dumps({"d": {"pixel": 3}})})
    return path


def test_lora_card_click_writes_the_tag_into_that_tabs_prompt(running_app: RunningApp) -> None:
    """Open the LoRA panel, refresh (the file was added after start), click the card: ``<lora:pixelart:1>`` (the
    alias from the file's metadata) joins the prompt; a second click takes it out; img2img's card writes there."""
    from playwright.sync_api import expect

    write_kohya_lora(running_app.data_dir / "models" / "Lora")
    with app_page(running_app, "browser-lora-failure.png") as page:
        for prefix, before in (("sd-", "a castle"), ("sd-i2i-", "a castle at night")):
            if prefix == "sd-i2i-":
                page.get_by_role("tab", name="img2img", exact=True).first.click()
            page.locator(f"#{prefix}lora-panel .label-wrap").click()
            page.locator(f"#{prefix}lora-refresh").click()
            expect(page.locator(f"#{prefix}loras")).to_contain_text("pixelart (pixelart_v1)", timeout=20_000)
            expect(page.locator(f"#{prefix}loras")).to_contain_text("pixel")
            prompt = page.locator(f"#{prefix}prompt textarea")
            prompt.fill(before)
            card = page.locator(f"#{prefix}loras .thumbnail-item").first
            card.click()
            expect(prompt).to_have_value(f"{before} <lora:pixelart:1>", timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / f"browser-lora-{prefix.strip('-')}.png"))
            card.click()
            expect(prompt).to_have_value(before, timeout=10_000)
