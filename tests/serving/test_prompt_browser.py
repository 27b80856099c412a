"""The annotation page in a real headless Chromium: click, right-click, drag a box, accept, download.

Debian's Chromium driven by Playwright (nothing downloaded), against a real uvicorn server with
the GrabCut prompt backend; the downloaded files are checked against the drawn shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .fakes import CLASSES, PALETTE, live_server, make_app, png_bytes

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
SCREENSHOT = REPO_ROOT / "test-artifacts" / "prompt_page.png"
KEY = "prompt-page-key"
TIMEOUT_MS = 20_000
HEIGHT, WIDTH = 240, 320
CENTRE = (200, 120)  # (x, y) of the disc
RADIUS = 60
ACCENT = (47, 111, 222)  # CURRENT_RGB of prompt.js
CURRENT_ALPHA = 0.55
CLASS_ID = CLASSES.index("bright")
PIXEL_AT = "((x, y) => document.getElementById('canvas').getContext('2d').getImageData(x, y, 1, 1).data)"


def disc_mask() -> np.ndarray:
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    return (yy - CENTRE[1]) ** 2 + (xx - CENTRE[0]) ** 2 < RADIUS**2


def scene() -> np.ndarray:
    """A yellow disc on a noisy blue-green gradient (the object GrabCut must cut out)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.int16)
    image[..., 1] = 40 + xx * 0.3
    image[..., 2] = 110 + yy * 0.2
    image += rng.integers(-12, 13, size=image.shape, dtype=np.int16)
    image[disc_mask()] = (235, 205, 60)
    return np.clip(image, 0, 255).astype(np.uint8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing; install Debian's chromium (make browser)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def to_screen(page, x: float, y: float) -> tuple[float, float]:
    """Viewport coordinates of image pixel ``(x, y)`` on the (CSS-scaled) canvas."""
    box = page.locator("#canvas").bounding_box()
    return box["x"] + (x + 0.5) * box["width"] / WIDTH, box["y"] + (y + 0.5) * box["height"] / HEIGHT


def wait_answers(page, count: int) -> None:
    page.wait_for_selector(f"#canvas[data-answers='{count}'][data-state='mask']", timeout=TIMEOUT_MS)


def test_click_drag_accept_and_download(browser, tmp_path):
    image = scene()
    disc = disc_mask()
    upload = tmp_path / "scene.png"
    upload.write_bytes(png_bytes(image))
    with live_server(make_app(api_key=KEY, prompt_backend="grabcut")) as live:
        page = browser.new_page(viewport={"width": 1100, "height": 760}, accept_downloads=True)
        page.goto(live.url + "/prompt")
        page.wait_for_selector("#key-box:not([hidden])", timeout=TIMEOUT_MS)  # 401 -> asks for the key
        page.fill("#api-key", KEY)
        page.click("#save-key")
        page.wait_for_function("document.querySelector('#model-info').textContent.includes('grabcut')")
        assert page.locator("#class option").all_text_contents() == CLASSES

        page.set_input_files("#file", str(upload))
        page.wait_for_selector("#canvas[data-state='ready']", timeout=TIMEOUT_MS)
        assert page.evaluate(
            "[document.getElementById('canvas').width, document.getElementById('canvas').height]"
        ) == [
            WIDTH,
            HEIGHT,
        ]

        page.mouse.click(*to_screen(page, *CENTRE))  # left: on the object
        wait_answers(page, 1)
        page.mouse.click(*to_screen(page, 30, 200), button="right")  # right: background
        wait_answers(page, 2)
        menu_blocked = page.evaluate(
            "() => { const e = new MouseEvent('contextmenu', {bubbles: true, cancelable: true});"
            " return !document.getElementById('canvas').dispatchEvent(e); }"
        )
        assert menu_blocked  # the browser's context menu never opens on the canvas
        x0, y0 = to_screen(page, CENTRE[0] - RADIUS - 12, CENTRE[1] - RADIUS - 12)
        x1, y1 = to_screen(page, CENTRE[0] + RADIUS + 12, CENTRE[1] + RADIUS + 12)
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x1, y1, steps=8)
        page.mouse.up()
        wait_answers(page, 3)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)  # points, box and mask, for people to look at

        shown = page.evaluate(
            "() => ({points: state.points.map(p => p[2]), box: state.box,"
            " pixels: Array.from(state.mask.pixels)})"
        )
        assert shown["points"] == [1, 0]
        np.testing.assert_allclose(
            shown["box"],
            [
                CENTRE[0] - RADIUS - 12,
                CENTRE[1] - RADIUS - 12,
                CENTRE[0] + RADIUS + 12,
                CENTRE[1] + RADIUS + 12,
            ],
            atol=1.5,
        )
        drawn = np.array(shown["pixels"], dtype=bool).reshape(HEIGHT, WIDTH)
        assert iou(drawn, disc) >= 0.9
        # The mask is drawn over the image at once: inside the disc (away from the point markers)
        # the accent colour is blended in, outside it the image shows as it is.
        inside, outside = (CENTRE[0] + 30, CENTRE[1]), (20, 20)
        for (x, y), alpha in ((inside, CURRENT_ALPHA), (outside, 0.0)):
            pixel = page.evaluate(f"Array.from(pixelAt({x}, {y}))".replace("pixelAt", PIXEL_AT))
            expected = (1 - alpha) * image[y, x] + alpha * np.array(ACCENT)
            np.testing.assert_allclose(pixel[:3], expected, atol=3)

        page.select_option("#class", str(CLASS_ID))
        page.click("#accept")
        page.wait_for_selector("#accepted li", timeout=TIMEOUT_MS)
        assert page.locator("#accepted li").count() == 1
        assert page.get_attribute("#accepted li", "data-class-id") == str(CLASS_ID)
        assert page.locator("#accepted li .name").text_content() == "bright"
        assert page.get_attribute("#canvas", "data-state") == "ready"  # prompt cleared
        assert page.evaluate("state.points.length + (state.box ? 1 : 0)") == 0

        with page.expect_download(timeout=TIMEOUT_MS) as png_download:
            page.click("#download-png")
        png_path = tmp_path / png_download.value.suggested_filename
        png_download.value.save_as(png_path)
        with page.expect_download(timeout=TIMEOUT_MS) as coco_download:
            page.click("#download-coco")
        coco_path = tmp_path / coco_download.value.suggested_filename
        coco_download.value.save_as(coco_path)

        page.close()

    assert png_path.name == "scene_mask.png" and coco_path.name == "scene_coco.json"
    with Image.open(png_path) as png:
        assert png.mode == "P" and png.size == (WIDTH, HEIGHT)
        labels = np.asarray(png)
        assert png.getpalette()[3 * CLASS_ID : 3 * CLASS_ID + 3] == list(PALETTE[CLASS_ID])
    assert set(np.unique(labels)) == {0, CLASS_ID}
    assert iou(labels == CLASS_ID, disc) >= 0.9
    assert np.array_equal(labels == CLASS_ID, drawn)  # the file holds exactly the mask that was shown

    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = json.loads(coco_path.read_text())
    coco.createIndex()
    (annotation,) = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert annotation["category_id"] == CLASS_ID
    assert coco.loadCats([CLASS_ID])[0]["name"] == "bright"
    assert coco.loadImgs([1])[0]["file_name"] == "scene.png"
    assert iou(coco.annToMask(annotation).astype(bool), disc) >= 0.9
    assert SCREENSHOT.stat().st_size > 10_000
