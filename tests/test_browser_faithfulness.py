"""The explorer's attribution view shows each method's verdict on this run and this image, beside its
map, and lists Grad-CAM's rectified stages first (Chromium driven by Playwright)."""

from __future__ import annotations

import json
import shutil

import pytest

from convlens.inspect.attribution import ATTRIBUTIONS
from testing_helpers import pick_test_image

pytestmark = pytest.mark.browser  # the `chromium` fixture (conftest.py) skips without /usr/bin/chromium


@pytest.fixture(scope="module")
def run_copy(digits_run, tmp_path_factory):
    """A private copy of the digits run: the stored verdicts must not leak into other tests."""
    return shutil.copytree(digits_run, tmp_path_factory.mktemp("faithful") / "digits")


@pytest.fixture(scope="module")
def explorer(run_copy):
    from convlens.server.background import BackgroundServer

    with BackgroundServer([run_copy]) as url:
        yield url


def test_the_verdict_stands_beside_every_map(open_page, run_copy, tmp_path):
    page = open_page(height=1200)
    pick_test_image(page, 2)
    page.click('#tabs button[data-tab="attribution"]')
    page.wait_for_selector("#attr-maps figure.attr .verdict-run", timeout=60_000)
    page.screenshot(path=tmp_path / "verdicts.png", full_page=True)
    # the run's measured default: named with why, its stage selected, its map first and marked
    page.wait_for_selector("#attr-default[data-method]", timeout=120_000)
    page.wait_for_selector("#attr-maps figure.attr-default .verdict-run", timeout=60_000)
    stored = json.loads((run_copy / "faithfulness.json").read_text())
    chosen = stored["default"]
    note = page.locator("#attr-default").inner_text()
    assert note.startswith("default on this run: ") and chosen["why"] in note, note
    if chosen["stage"]:
        assert page.locator("#attr-stage").input_value() == chosen["stage"]
    figures = page.locator("#attr-maps figure.attr")
    assert figures.count() == len(ATTRIBUTIONS)
    assert figures.nth(0).get_attribute("data-method") == chosen["method"]
    assert "(default)" in figures.nth(0).locator(".attr-title").inner_text()
    for i in range(figures.count()):
        figure = figures.nth(i)
        method = figure.locator("canvas.attr-overlay").get_attribute("data-method")
        measured = stored["methods"][chosen["key"] if method == chosen["method"] else method]
        line = figure.locator(".verdict-run")
        text = line.inner_text()
        assert text.startswith(f"{measured['verdict']} on this run"), text
        assert line.get_attribute("data-verdict") == measured["verdict"]
        assert f"deletion AUC {measured['deletion']['auc']:.3f}" in text
        assert f"vs random order {measured['deletion']['random_auc']:.3f}" in text
        assert f"{stored['settings']['images']} test images" in text
        image = figure.locator(".verdict-image").inner_text()
        assert image.startswith("this image: ") and "against random" in image, image
        # a method that fails on this run is marked on its title
        failed = figure.get_attribute("class").split().count("attr-fails") == 1
        assert failed == (measured["verdict"] == "fails")
        assert ("fails on this run" in figure.locator(".attr-title").inner_text()) == failed


def test_grad_cam_stage_menu_lists_rectified_stages_first(open_page):
    page = open_page()
    page.click('#tabs button[data-tab="attribution"]')
    page.wait_for_selector("#attr-stage optgroup", state="attached", timeout=30_000)
    labels = page.locator("#attr-stage option").all_inner_texts()
    assert labels[0].startswith("last rectified stage")
    names = [label.split()[0] for label in labels[1:]]
    assert names == ["relu1", "pool1", "relu2", "pool2", "conv1", "conv2"]
    assert "pool2 (default)" in labels
    assert page.locator("#attr-stage optgroup option").all_inner_texts() == [
        "conv1 — before a ReLU",
        "conv2 — before a ReLU",
    ]
