"""The explorer page in Debian Chromium driven by Playwright: draw, click a cell, the playground,
the ε slider, and every tab rendering without a script error. Screenshots go to the test's tmp dir.

Playwright never downloads a browser here: it launches /usr/bin/chromium (installed by
scripts/install-system-packages.sh); without it these tests are skipped.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from testing_helpers import pick_test_image

pytestmark = pytest.mark.browser  # the `chromium` fixture (conftest.py) skips without /usr/bin/chromium


@pytest.fixture(scope="module")
def explorer(digits_run, digits_model, tmp_path_factory):
    """The digits convnet first, and an (untrained) Tiny VGG as a second run to switch to."""
    from convlens.checkpoint import save_checkpoint
    from convlens.models import create_model
    from convlens.server.background import BackgroundServer

    second = tmp_path_factory.mktemp("tinyvgg-run")
    meta = digits_model[1]
    facts = {"class_names": meta["class_names"], "dataset": meta["dataset"]}
    save_checkpoint(second / "model", create_model("tinyvgg", (1, 8, 8), 10), facts)
    with BackgroundServer([digits_run, second]) as url:
        yield url


@pytest.fixture
def page(open_page):
    return open_page(height=1000)


def api(explorer: str, path: str, **form):
    import httpx

    return httpx.post(explorer + path.lstrip("/"), data=form, timeout=30).json()


def test_draw_a_stroke_shows_a_prediction(page, tmp_path):
    box = page.locator("#draw-canvas").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.15
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 4, y + box["height"] * 0.4, steps=6)
    page.mouse.move(x, y + box["height"] * 0.7, steps=6)
    page.mouse.up()
    page.wait_for_selector("#prediction[data-probability]")
    page.wait_for_timeout(500)  # let the last stroke's request land
    page.screenshot(path=tmp_path / "draw.png", full_page=True)
    shown = page.locator("#prediction").inner_text()
    assert re.search(r"\d+(\.\d)? %", shown), shown
    bars = page.locator("#probabilities .bar-row")
    assert bars.count() == 10
    probabilities = [float(bars.nth(i).get_attribute("data-probability")) for i in range(10)]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    top = page.locator("#probabilities .bar-row.top")
    assert top.get_attribute("data-class") == page.locator("#prediction").get_attribute("data-class")
    assert float(top.get_attribute("data-probability")) == pytest.approx(max(probabilities))
    # the drawing reached the model: what it sees is not blank any more
    stages = page.locator("#network .stage")
    assert stages.count() == 9  # normalize … fc (softmax is the probability column)


def test_clicked_cell_arithmetic_equals_the_api(page, explorer, tmp_path):
    index = pick_test_image(page, 5)
    fmap = page.locator('.stage[data-stage="conv2"] canvas.fmap[data-channel="3"]')
    box = fmap.bounding_box()
    fmap.click(position={"x": box["width"] * 0.6, "y": box["height"] * 0.3})
    page.wait_for_selector("#arith-total")
    page.screenshot(path=tmp_path / "arithmetic.png", full_page=True)
    heading = page.locator("#arithmetic h3").inner_text()
    channel, row, col = map(int, re.search(r"channel (\d+), row (\d+), col (\d+)", heading).groups())
    size = int(fmap.get_attribute("width"))  # 4: 8x8 digits, pooled once before conv2
    assert (channel, row, col) == (3, int(0.3 * size), int(0.6 * size))
    shown = float(page.locator("#arith-total").get_attribute("data-value"))
    run_id = page.locator("#run-select").input_value()
    expected = api(
        explorer,
        f"/api/runs/{run_id}/arithmetic",
        test_index=index,
        stage="conv2",
        channel=3,
        row=row,
        col=col,
    )
    assert shown == pytest.approx(expected["cell"]["total"], abs=1e-9)
    assert shown == pytest.approx(expected["cell"]["output"], abs=1e-4)
    assert page.locator("#arith-total").inner_text() == f"{expected['cell']['total']:.4f}"


def test_playground_edge_kernel_on_smiley(page, tmp_path):
    from scipy.signal import correlate2d

    from convlens.inspect import SMILEY

    page.click('#tabs button[data-tab="playground"]')
    page.click('#pg-presets button[data-kernel="edge"]')
    page.select_option("#pg-picture", "smiley")
    page.wait_for_selector("#pg-output-table td[data-value]")
    page.wait_for_timeout(300)
    expected = correlate2d(SMILEY.numpy(), np.array([[-1, 0, 1]] * 3), mode="valid")  # (6, 6)
    cells = page.locator("#pg-output-table td")
    assert cells.count() == expected.size
    shown = np.array([float(cells.nth(i).get_attribute("data-value")) for i in range(expected.size)])
    assert np.allclose(shown.reshape(expected.shape), expected)
    page.click("#pg-reset")
    page.click("#pg-step-button")
    page.click("#pg-step-button")  # second cell: row 0, col 1
    assert float(page.locator("#pg-sum").get_attribute("data-value")) == pytest.approx(expected[0, 1])
    assert page.locator("#pg-grid-table td.window").count() == 9
    page.screenshot(path=tmp_path / "playground.png", full_page=True)


def test_eps_slider_changes_the_probabilities(page, tmp_path):
    pick_test_image(page, 9)
    page.click('#tabs button[data-tab="attack"]')

    def after_bars():
        rows = page.locator("#attack-after .bar-row")
        return [float(rows.nth(i).get_attribute("data-probability")) for i in range(rows.count())]

    page.locator("#attack-eps").fill("0")
    page.wait_for_selector('#attack-verdict:has-text("ε = 0.00")')
    clean = after_bars()
    before = [
        float(r.get_attribute("data-probability")) for r in page.locator("#attack-before .bar-row").all()
    ]
    assert clean == pytest.approx(before, abs=1e-6)  # ε = 0 changes nothing
    page.locator("#attack-eps").fill("0.4")
    page.wait_for_selector('#attack-verdict:has-text("ε = 0.40")')
    attacked = after_bars()
    page.screenshot(path=tmp_path / "attack.png", full_page=True)
    assert np.abs(np.array(attacked) - np.array(clean)).max() > 0.05


@pytest.mark.parametrize("tab", ["attribution", "layers", "card"])
def test_every_tab_renders(page, tab, tmp_path):
    pick_test_image(page, 1)
    page.click(f'#tabs button[data-tab="{tab}"]')
    ready = {
        "attribution": "#attr-maps canvas.attr-overlay[data-method=occlusion]",
        "layers": "#layers-features canvas.feature",
        "card": "#card-confusion",
    }[tab]
    page.wait_for_selector(ready, timeout=30_000)
    if tab == "attribution":
        from convlens.inspect import ATTRIBUTIONS

        assert page.locator("#attr-maps canvas.attr-overlay").count() == len(ATTRIBUTIONS.names())
    if tab == "layers":
        page.locator("#layers-features .feature-tile").first.click()
        page.wait_for_selector("#layers-top canvas.feature")
        assert page.locator("#layers-top canvas.feature").count() == 9
    if tab == "card":
        assert page.locator("#card-stages tr").count() == 11  # header + 9 stages + softmax
    page.screenshot(path=tmp_path / f"{tab}.png", full_page=True)


def test_upload_an_image(page, tmp_path, digits):
    from PIL import Image

    digit = digits.test_images[4, 0].numpy()  # (8, 8) uint8
    Image.fromarray(digit).resize((64, 64), Image.NEAREST).save(tmp_path / "my digit.png")
    page.set_input_files("#upload-input", str(tmp_path / "my digit.png"))
    page.wait_for_selector("#network[data-source=\"upload 'my digit.png'\"]")
    assert page.locator("#prediction").get_attribute("data-probability") is not None
    page.screenshot(path=tmp_path / "upload.png", full_page=True)


def test_switch_runs(page, tmp_path):
    index = pick_test_image(page, 3)
    page.select_option("#run-select", index=1)
    page.wait_for_selector('#run-facts:has-text("tinyvgg")')
    page.wait_for_selector('#network .stage[data-stage="conv4"]')  # Tiny VGG's stages, not the convnet's
    assert page.locator('#network .stage[data-stage="conv2"] canvas.fmap').count() == 10
    # a run opens on one of its own test images, not the previous run's (issue 23, defect 2)
    first = page.locator("#test-strip canvas.thumb").first.get_attribute("data-index")
    assert page.locator("#network").get_attribute("data-source") == f"test image {first}"
    assert index >= 0
    page.click('#tabs button[data-tab="card"]')
    page.wait_for_selector('#card h3:has-text("tinyvgg")')
    page.screenshot(path=tmp_path / "switched.png", full_page=True)


def test_invert_toggle_shows_the_shift_badge(page, tmp_path):
    """A test digit passes the check; inverted (the toggle), the badge says so and names the toggle."""
    index = pick_test_image(page, 3)
    badge = page.locator("#shift-badge")
    assert badge.is_hidden()
    page.locator("#invert-input").check()
    page.wait_for_selector("#shift-badge.inverted", state="visible")
    assert page.locator("#network").get_attribute("data-source") == f"test image {index}"
    text = badge.inner_text()
    assert text.startswith("looks inverted") and "Try turning invert off" in text, text
    page.screenshot(path=tmp_path / "inverted.png", full_page=True)
    page.locator("#invert-input").uncheck()
    page.wait_for_selector("#shift-badge", state="hidden")
