""" "What layers learned" in Debian Chromium (Playwright): conv1, linear in the pixels, shows each
channel's unit optimum — the canvas pixels follow the checkpoint's kernel signs — with the
sentence that says why; a stage past a ReLU keeps the whole-channel feature visualization."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.browser  # the `chromium` fixture (conftest.py) skips without /usr/bin/chromium


@pytest.fixture(scope="module")
def explorer(digits_run):
    from convlens.server.background import BackgroundServer

    with BackgroundServer([digits_run]) as url:
        yield url


@pytest.fixture(scope="module")
def conv1_kernels(digits_run) -> np.ndarray:
    """(16, 1, 3, 3): conv1's weights read straight from the checkpoint's safetensors file."""
    from safetensors.numpy import load_file

    return load_file(digits_run / "model.safetensors")["model.body.conv1.weight"]


def test_conv1_tiles_are_the_kernels_sign_patterns(open_page, conv1_kernels):
    page = open_page(width=1280, height=800)
    page.click('#tabs button[data-tab="layers"]')
    page.select_option("#layers-stage", "conv1")
    page.wait_for_selector("#layers-features .unit-tile canvas.unit-optimum", timeout=30_000)
    tiles = page.locator("#layers-features figure.feature-tile")
    assert tiles.count() == 16 and page.locator("#layers-features .unit-tile").count() == 16
    for channel, tile in enumerate(tiles.all()):
        assert tile.get_attribute("data-channel") == str(channel)
        assert tile.get_attribute("data-window") == "3,3,6,6"
        canvas = tile.locator("canvas")
        rgba = canvas.evaluate(
            "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"
        )
        grey = np.array(rgba).reshape(3, 3, 4)[..., :3]  # one input channel: drawn grey
        expected = np.where(conv1_kernels[channel, 0] > 0, 255, 0)
        for colour in range(3):
            np.testing.assert_array_equal(grey[..., colour], expected, err_msg=f"channel {channel}")
        assert canvas.bounding_box()["width"] >= 3 * 16  # enlarged, pixelated
    assert page.locator("#layers-features-title").inner_text() == "What one unit of conv1 responds to"
    note = page.locator("#layers-features-note").inner_text()
    assert "conv1 is linear in the pixels" in note and "white where the weight is positive" in note
    assert "the 3×3 pixels the centre unit sees" in note and "flat square" in note
    # a tile still opens its channel's top test images
    tiles.nth(2).click()
    page.wait_for_selector("#layers-top canvas.feature")

    page.select_option("#layers-stage", "relu1")  # past a ReLU: the channel's visualization, 8x8
    page.wait_for_selector("#layers-features canvas.feature:not(.unit-optimum)", timeout=30_000)
    assert page.locator("#layers-features .unit-tile").count() == 0
    assert page.locator("#layers-features-title").inner_text() == "Feature visualization"
    size = page.locator("#layers-features canvas.feature").first.evaluate("c => [c.width, c.height]")
    assert size == [8, 8]
