"""The web page in a real browser: Debian's chromium, headless, driven by Playwright."""

import io
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
# small, quick images on the test weights; enough steps that frames show before the end
FAST = {
    "skip_steps": "1",
    "display_rate": "2",
    "cutn_batches": "1",
    "cut_overview": "[1]*1000",
    "cut_innercut": "[1]*1000",
}

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        yield page
        browser.close()


def test_paint_watch_cancel_and_reuse_in_the_page(page, served_http, served_output_dir, tmp_path):
    from playwright.sync_api import expect

    from disco_service.outputs import embed_settings

    # an image already in the server's output folder shows in the gallery
    saved = {"text_prompts": ["an image from before:1"], "seed": 4242, "width_height": [64, 64], "n_batches": 1}
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 90, 160)).save(buffer, format="PNG")
    (served_output_dir / "reverse_diffusion-4242_0.png").write_bytes(embed_settings(buffer.getvalue(), saved))

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{served_http}/ui/")
    expect(page.locator("h1")).to_have_text("Disco Diffusion")
    card = page.locator('figure.picture[data-seed="4242"]')
    expect(card).to_contain_text("an image from before:1")
    expect(card.locator("img")).to_have_attribute("src", "outputs/reverse_diffusion-4242_0.png")

    # a setting the server refuses: its message, next to the field
    page.fill("#steps", "0")
    page.click("#paint")
    expect(page.locator('[data-error="steps"]')).to_contain_text("steps: must be in [1, 1000], got 0")

    page.fill("#text_prompts", "a lighthouse:1\nyellow color scheme:0.5")
    page.fill("#width", "64")
    page.fill("#height", "64")
    page.fill("#steps", "16")
    page.fill("#seed", "")
    page.fill("#n_batches", "2")
    page.click("#advanced summary")
    for name, value in FAST.items():
        page.fill(f"#{name}", value)
    page.click("#paint")

    first, second = page.locator(".job").nth(-2), page.locator(".job").nth(-1)
    expect(first.locator("img.preview[src^='data:image/png']")).to_be_visible(timeout=60_000)  # a live frame
    expect(first.locator(".steps")).to_contain_text("of 15")
    second.locator("button.cancel").click()
    expect(second.locator(".status")).to_have_text("cancelled", timeout=60_000)
    expect(first.locator(".status")).to_have_text("done", timeout=60_000)

    card = page.locator(".picture").filter(has_text="done").first
    expect(card.locator("img")).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    seed = card.get_attribute("data-seed")
    assert card.locator("a", has_text="GIF").get_attribute("href").startswith("data:image/gif")
    assert card.locator("a", has_text="sprite sheet").get_attribute("href").startswith("data:image/png")
    page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)
    if os.environ.get("DISCO_UI_SCREENSHOT"):
        shutil.copy(tmp_path / "ui.png", os.environ["DISCO_UI_SCREENSHOT"])

    page.fill("#seed", "")
    page.fill("#steps", "99")
    card.locator("button.reuse").click()
    assert page.input_value("#seed") == seed
    assert page.input_value("#steps") == "16" and page.input_value("#n_batches") == "1"
    assert page.input_value("#cut_overview") == "[1]*1000"
    assert not errors, errors
