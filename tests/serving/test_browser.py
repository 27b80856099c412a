"""The web page in a real headless Chromium (Debian's, driven by Playwright; nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .fakes import CLASSES, live_server, make_app, png_bytes

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO_ROOT / "test-artifacts" / "serving_page.png"
KEY = "page-key"
TIMEOUT_MS = 20_000


def scene() -> np.ndarray:
    """240x320 image: dark left part (background) and a bright disc (class "bright") only."""
    yy, xx = np.mgrid[:240, :320]
    image = np.zeros((240, 320, 3), dtype=np.uint8)
    image[..., 1] = (xx * 0.5).astype(np.uint8)
    image[..., 2] = 90
    disc = (yy - 120) ** 2 + (xx - 200) ** 2 < 70**2
    image[disc] = (240, 200, 60)
    return image


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing; install Debian's chromium (make browser)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_upload_shows_overlay_legend_and_latency(browser, tmp_path):
    image = scene()
    upload = tmp_path / "scene.png"
    upload.write_bytes(png_bytes(image))
    with live_server(make_app(api_key=KEY)) as live:
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(live.url + "/")
        page.wait_for_selector("#key-box:not([hidden])", timeout=TIMEOUT_MS)  # 401 -> asks for the key
        page.fill("#api-key", KEY)
        page.click("#save-key")
        page.wait_for_function("document.querySelector('#model-info').textContent.includes('fake-model')")
        page.set_input_files("#file", str(upload))
        page.wait_for_selector("#canvas[data-state='overlay']", timeout=TIMEOUT_MS)

        legend = page.locator("#legend li .name").all_text_contents()
        assert legend == [CLASSES[0], CLASSES[2]]  # exactly the classes present, in class order
        areas = page.locator("#legend li .area").all_text_contents()
        disc_share = 100 * (image[..., 0] >= 172).mean()
        assert areas[1] == f"{disc_share:.1f} %"
        assert "latency" in page.locator("#status").text_content()

        pixels = page.evaluate(
            """() => {
                const c = document.getElementById('canvas');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let nonBlack = 0, distinct = new Set();
                for (let i = 0; i < d.length; i += 4) {
                    if (d[i] + d[i + 1] + d[i + 2] > 0) nonBlack++;
                    distinct.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
                }
                return {width: c.width, height: c.height, nonBlack, distinct: distinct.size,
                        centre: Array.from(c.getContext('2d').getImageData(200, 120, 1, 1).data)};
            }"""
        )
        assert (pixels["width"], pixels["height"]) == (320, 240)
        assert pixels["nonBlack"] > 0.5 * 320 * 240 and pixels["distinct"] > 10
        # Disc centre, opacity 50 %: half the image colour plus half the class colour (30, 200, 30).
        np.testing.assert_allclose(
            pixels["centre"][:3], [(240 + 30) / 2, (200 + 200) / 2, (60 + 30) / 2], atol=2
        )

        page.check("#view-mask")
        page.wait_for_selector("#canvas[data-state='mask']")
        assert page.get_attribute("#download", "aria-disabled") == "false"
        assert page.get_attribute("#download", "download") == "scene_mask.png"
        page.check("#view-overlay")
        page.wait_for_selector("#canvas[data-state='overlay']")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        page.close()
    assert SCREENSHOT.stat().st_size > 10_000
