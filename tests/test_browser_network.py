"""The Network view and the maps of every tab in Debian Chromium (Playwright): colour bars with the
server's limits, rows of channels that scroll together, a clicked cell's window outlined in the
stage before, the kernel animation filled with the real activations, what a pooling stage does,
and a colour (RGB) run whose later stages must not come out blank.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from testing_helpers import pick_test_image, unpacked

pytestmark = pytest.mark.browser  # the `chromium` fixture (conftest.py) skips without /usr/bin/chromium


@pytest.fixture(scope="module")
def explorer(digits_run, photo_run):
    from convlens.server.background import BackgroundServer

    with BackgroundServer([digits_run, photo_run]) as url:
        yield url


@pytest.fixture
def page(open_page):
    page = open_page(height=1000)
    page.wait_for_selector('#network .stage[data-stage="conv2"] canvas.fmap')
    return page


def activations(explorer: str, run_id: str, test_index: int) -> dict:
    body = httpx.post(f"{explorer}api/runs/{run_id}/activations", data={"test_index": test_index}, timeout=30)
    return {stage["name"]: stage for stage in body.json()["stages"]}


def click_cell(page, stage: str, channel: int, row: int, col: int, size: int) -> None:
    """Click the middle of cell (row, col) of a size x size map."""
    fmap = page.locator(f'.stage[data-stage="{stage}"] canvas.fmap[data-channel="{channel}"]')
    box = fmap.bounding_box()
    fmap.click(position={"x": box["width"] * (col + 0.5) / size, "y": box["height"] * (row + 0.5) / size})


def test_every_map_view_has_a_colour_bar_with_the_servers_values(page, explorer, digits_run, tmp_path):
    index = pick_test_image(page, 2)
    stages = activations(explorer, digits_run.name, index)
    for name in ("normalize", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc"):
        bar = page.locator(f'.stage[data-stage="{name}"] .stage-head .colour-bar')
        assert bar.count() == 1, name
        limits = stages[name]["limits"]
        assert float(bar.get_attribute("data-low")) == pytest.approx(limits["low"])
        assert float(bar.get_attribute("data-high")) == pytest.approx(limits["high"])
        assert bar.get_attribute("data-map") == limits["map"]
        ticks = [float(t.get_attribute("data-value")) for t in bar.locator(".colour-bar-tick").all()]
        assert ticks == pytest.approx(
            [limits["low"], 0, limits["high"]] if limits["signed"] else [limits["low"], limits["high"]]
        )
    page.click('#tabs button[data-tab="attribution"]')
    page.wait_for_selector("#attr-maps canvas.attr-overlay[data-method=occlusion]", timeout=30_000)
    from convlens.inspect import ATTRIBUTIONS

    assert page.locator("#attr-maps figure.attr .colour-bar").count() == len(ATTRIBUTIONS.names())
    page.click('#tabs button[data-tab="attack"]')
    page.wait_for_selector("#attack-images .colour-bar .colour-bar-tick.middle")
    page.click('#tabs button[data-tab="layers"]')
    page.wait_for_selector("#layers-filters .colour-bar")
    page.select_option("#layers-stage", "pool2")
    page.wait_for_selector("#operation-text")
    bars = page.locator("#layers-filters .colour-bar")  # pooling keeps values: one range for both
    assert bars.count() == 1 and bars.inner_text().startswith("relu2 and pool2")
    page.screenshot(path=tmp_path / "layers-pool2.png", full_page=True)


def test_rows_of_channels_scroll_together(page, tmp_path):
    count = page.locator("#network-count")
    assert int(count.get_attribute("data-hidden")) == 3 * 6 + 3 * 22  # 10 of 16 and 10 of 32 shown
    assert page.locator('.stage[data-stage="conv2"] .stage-count').inner_text() == "10 of 32 maps"
    page.click("#show-all-channels")
    page.wait_for_selector('.stage[data-stage="conv2"] canvas.fmap[data-channel="31"]')
    assert count.get_attribute("data-hidden") == "0"
    page.locator('.stage[data-stage="pool2"] canvas.fmap[data-channel="25"]').scroll_into_view_if_needed()
    assert page.locator("#network").evaluate("box => box.scrollTop") > 0

    def middle(stage: str, channel: int) -> float:
        box = page.locator(
            f'.stage[data-stage="{stage}"] canvas.fmap[data-channel="{channel}"]'
        ).bounding_box()
        return box["y"] + box["height"] / 2

    for channel in (15, 25, 31):
        row = [middle(stage, channel) for stage in ("conv2", "relu2", "pool2")]
        if channel < 16:
            row += [middle(stage, channel) for stage in ("conv1", "relu1", "pool1")]
        assert max(row) - min(row) < 1, (channel, row)
    assert middle("conv2", 26) > middle("conv2", 25)
    page.screenshot(path=tmp_path / "scrolled.png")


def test_a_conv2_cell_outlines_its_window_and_animates(page, explorer, digits_run, tmp_path):
    index = pick_test_image(page, 2)
    click_cell(page, "conv2", channel=3, row=1, col=2, size=4)
    page.wait_for_selector("#arith-total")
    windows = page.locator('svg.network-links rect.window[data-stage="pool1"]')
    assert windows.count() == 10  # conv2 reads every pool1 channel: the 10 shown are outlined
    assert {(w.get_attribute("data-rows"), w.get_attribute("data-cols")) for w in windows.all()} == {
        ("3", "3")
    }
    window = windows.first.bounding_box()
    pool1 = page.locator(
        f'.stage[data-stage="pool1"] canvas.fmap[data-channel="{windows.first.get_attribute("data-channel")}"]'
    ).bounding_box()
    cell = pool1["width"] / 4
    assert window["x"] == pytest.approx(pool1["x"] + cell, abs=1.5)  # cols 1..3, rows 0..2
    assert window["y"] == pytest.approx(pool1["y"], abs=1.5)
    assert window["width"] == pytest.approx(3 * cell, abs=1.5)
    assert page.locator("svg.network-links line").count() == 10
    # further back the window widens, down to the input: rows 0..6 and cols 1..7 of the 8x8 digit
    field = page.locator('svg.network-links rect.field[data-stage="normalize"]')
    assert (field.get_attribute("data-rows"), field.get_attribute("data-cols")) == ("7", "7")

    page.click("#animate-button")
    page.wait_for_selector('#animation-output[data-filled="16"]', timeout=10_000)
    page.screenshot(path=tmp_path / "animated.png", full_page=True)
    shown = [float(td.get_attribute("data-value")) for td in page.locator("#animation-output td").all()]
    expected = unpacked(activations(explorer, digits_run.name, index)["conv2"]["output"])[3]  # (4, 4)
    assert np.allclose(np.reshape(shown, (4, 4)), expected)
    assert page.locator(".animation-map").count() == 16  # every pool1 channel it reads


def test_what_layers_learned_shows_pool2_and_readable_filters(page, explorer, digits_run):
    index = pick_test_image(page, 2)
    page.click('#tabs button[data-tab="layers"]')
    page.select_option("#layers-stage", "conv2")
    kernel = page.locator('#layers-filters canvas.kernel[data-out="4"][data-in="2"]')
    kernel.wait_for()
    box = kernel.bounding_box()
    assert box["width"] >= 40  # a 3x3 kernel is at least 13 pixels a weight
    kernel.hover(position={"x": box["width"] * 5 / 6, "y": box["height"] / 6})  # row 0, col 2
    weights = httpx.get(f"{explorer}api/runs/{digits_run.name}/filters", params={"stage": "conv2"}).json()
    weight = unpacked(weights["convolutions"][0]["weight"])[4, 2, 0, 2]
    assert page.locator("#kernel-readout").inner_text().endswith(f"row 0 col 2: weight {weight:.4f}")

    page.select_option("#layers-stage", "pool2")
    page.wait_for_selector("#operation-text")
    assert "keeps the largest value of each 2×2 window" in page.locator("#operation-text").inner_text()
    assert page.locator("#layers-filters .error").count() == 0
    pair = page.locator('.operation-pair[data-channel="1"]')
    assert (
        pair.locator('canvas[data-stage="relu2"]').count()
        == pair.locator('canvas[data-stage="pool2"]').count()
        == 1
    )
    pooled = pair.locator('canvas[data-stage="pool2"]')
    size = pooled.bounding_box()
    pooled.hover(position={"x": size["width"] * 0.75, "y": size["height"] * 0.25})  # row 0, col 1
    value = unpacked(activations(explorer, digits_run.name, index)["pool2"]["output"])[1, 0, 1]
    assert page.locator("#operation-readout").inner_text() == f"pool2 ch 1, row 0 col 1: {value:.4f}"
    page.wait_for_selector("#layers-features canvas.feature", timeout=30_000)


def test_a_photo_runs_later_stages_are_not_blank(page, photo_run, tmp_path):
    """A colour run with BatchNorm: the maps after conv2 must show patterns, whichever scale is chosen."""
    page.select_option("#run-select", photo_run.name)
    page.wait_for_selector('#network .stage[data-stage="bn2"] canvas.fmap')
    page.wait_for_selector("#test-strip canvas.thumb")
    pick_test_image(page, 1)

    def distinct_colours(stage: str) -> list[int]:
        return page.locator(f'.stage[data-stage="{stage}"] canvas.fmap').evaluate_all(
            """maps => maps.map((map) => {
                 const data = map.getContext("2d").getImageData(0, 0, map.width, map.height).data;
                 const seen = new Set();
                 for (let i = 0; i < data.length; i += 4) seen.add(data[i] << 16 | data[i + 1] << 8 | data[i + 2]);
                 return seen.size;
               })"""
        )

    for scale in ("stage", "channel"):
        page.select_option("#colour-scale", scale)
        for stage in ("conv2", "bn2", "relu2", "pool2", "flatten"):
            colours = distinct_colours(stage)
            assert max(colours) > 4, (scale, stage, colours)  # a pattern, not one flat tile
            bar = page.locator(f'.stage[data-stage="{stage}"] .colour-bar')  # channel 0's: maybe dead
            assert scale == "channel" or float(bar.get_attribute("data-high")) > 0.1
        if scale == "channel":  # every conv2 map drawn in its own range shows its own pattern
            assert min(distinct_colours("conv2")) > 4
    page.screenshot(path=tmp_path / "photo-run.png", full_page=True)
