"""The Segment view in Debian Chromium driven by Playwright: a segmentation run's overlay, one
clicked pixel's probabilities (the library's ``explain_pixel`` numbers) and receptive field,
portrait mode, and switching between a segmentation and a classification run both ways."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segmentation_fixtures import squares_run_once
from testing_helpers import unpacked

pytestmark = pytest.mark.browser  # the `chromium` fixture (conftest.py) skips without /usr/bin/chromium


@pytest.fixture(scope="module")
def squares_run(tmp_path_factory):
    return squares_run_once(tmp_path_factory)


@pytest.fixture(scope="module")
def explorer(squares_run, digits_run):
    """The squares U-Net first (the page opens on it), the digits classifier to switch to."""
    from convlens.server.background import BackgroundServer

    with BackgroundServer([squares_run, digits_run]) as url:
        yield url


@pytest.fixture
def page(open_page):
    return open_page(height=1400)


def _canvas_pixels(page, selector: str) -> np.ndarray:
    """The RGBA pixels a canvas shows, read in the page."""
    values = page.evaluate(
        """(selector) => {
            const canvas = document.querySelector(selector);
            return Array.from(canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data);
        }""",
        selector,
    )
    return np.array(values, dtype=np.uint8).reshape(-1, 4)


def _not_blank(pixels: np.ndarray) -> bool:
    return bool(pixels[:, 3].min() == 255 and pixels[:, :3].std() > 5)


def _open_segment(page, position: int) -> int:
    page.click('#tabs button[data-tab="segment"]')
    thumb = page.locator("#test-strip canvas.thumb").nth(position)
    index = int(thumb.get_attribute("data-index"))
    thumb.click()
    page.wait_for_selector(f'#tab-segment[data-source="test image {index}"]')
    return index


def test_overlay_pixel_and_portrait(page, explorer, squares_run, tmp_path):
    import httpx

    from convlens.inspect.pixels import explain_pixel
    from convlens.run import Run

    run_id = page.locator("#run-select").input_value()
    assert page.locator('#tabs button[data-tab="attack"]').is_hidden()  # classification only
    index = _open_segment(page, 3)
    assert _not_blank(_canvas_pixels(page, "#seg-overlay"))
    assert page.locator("#seg-truth-figure").is_visible()  # a test image: its true mask beside
    assert page.locator("#seg-legend .seg-class").count() == 3

    overlay = page.locator("#seg-overlay")
    box = overlay.bounding_box()
    overlay.click(position={"x": box["width"] * 0.55, "y": box["height"] * 0.4})
    page.wait_for_selector("#seg-pixel-title[data-row]")
    page.screenshot(path=tmp_path / "segment.png", full_page=True)
    row = int(page.locator("#seg-pixel-title").get_attribute("data-row"))
    col = int(page.locator("#seg-pixel-title").get_attribute("data-col"))
    assert (row, col) == (int(0.4 * 32), int(0.55 * 32))

    # the library's answer for the same pixels the page was shown
    answer = httpx.post(f"{explorer}api/runs/{run_id}/segment", data={"test_index": index}, timeout=30).json()
    pixels = torch.from_numpy(unpacked(answer["input"]).copy())
    found = explain_pixel(Run.open(squares_run).model, pixels, row, col)
    bars = page.locator("#seg-pixel-bars .bar-row")
    shown = [float(bars.nth(i).get_attribute("data-probability")) for i in range(bars.count())]
    assert np.allclose(shown, found.probabilities.numpy(), atol=1e-6, rtol=0)

    # its receptive field: a box on the input, and a window on every stage
    on_input = next(f for f in found.receptive_fields if list(f["shape"][1:]) == [32, 32])
    field = json.loads(page.locator("#seg-input").get_attribute("data-field"))
    assert field == [on_input["top"], on_input["left"], on_input["bottom"], on_input["right"]]
    assert page.locator("#seg-stages .seg-stage").count() == len(found.receptive_fields)
    assert _not_blank(_canvas_pixels(page, "#seg-grad-cam"))

    # the Network view marks the same pixel's output cell and what it reads
    page.click("#seg-show-network")
    page.wait_for_selector("#tab-overview .fmap.selected")
    assert page.locator("#tab-overview .fmap.selected").get_attribute("data-channel") == str(found.target)
    page.wait_for_selector("#arith-total")
    page.click('#tabs button[data-tab="segment"]')

    page.select_option("#seg-effect", "grey")
    page.click("#seg-portrait-button")
    page.wait_for_selector("#seg-portrait")
    assert _not_blank(_canvas_pixels(page, "#seg-portrait"))
    page.screenshot(path=tmp_path / "portrait.png", full_page=True)


def test_switching_between_a_segmentation_and_a_classification_run(page, explorer):
    segmentation, classification = [
        o.get_attribute("value") for o in page.locator("#run-select option").all()
    ]
    _open_segment(page, 1)
    page.select_option("#run-select", classification)
    page.wait_for_selector('#tabs button[data-tab="segment"]', state="hidden")
    assert page.locator('#tabs button[data-tab="attack"]').is_visible()
    assert page.locator("#tab-segment").is_hidden()  # the page left the Segment view
    page.wait_for_selector("#network[data-source]")
    page.select_option("#run-select", segmentation)
    page.wait_for_selector('#tabs button[data-tab="segment"]', state="visible")
    assert page.locator('#tabs button[data-tab="attack"]').is_hidden()
    _open_segment(page, 2)
    assert _not_blank(_canvas_pixels(page, "#seg-overlay"))
    page.click('#tabs button[data-tab="layers"]')  # a view for both kinds: no script error on this run
    page.wait_for_timeout(1500)
    page.click('#tabs button[data-tab="card"]')
    assert "mean IoU" in page.locator("#card-accuracy").inner_text()
    assert page.locator("#card-iou tr[data-class]").count() == 3
