"""The explorer as a teaching page, in Debian Chromium: one current image shared by every view,
the first screen already showing a prediction, /docs working offline, a 360 px phone screen
(finger drawing, no sideways scrolling), readable model-card axes, explanations with the model's
own numbers, and equations that parenthesise negative numbers.
"""

from __future__ import annotations

import base64
import math
import re

import numpy as np
import pytest

from testing_helpers import pick_test_image

pytestmark = pytest.mark.browser  # the `chromium` fixture (conftest.py) skips without /usr/bin/chromium

LONG_HISTORY = 230  # epochs of the second run: the card's epoch axis must still be readable

PAINTED_PIXELS = """(id) => {
  const canvas = document.getElementById(id);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) painted += data[i] > 0;
  return painted;
}"""


@pytest.fixture(scope="module")
def explorer(digits_run, digits_model, tmp_path_factory):
    """The trained digits convnet, and an untrained one whose checkpoint has a 230-epoch history."""
    from convlens.checkpoint import save_checkpoint
    from convlens.models import create_model
    from convlens.server.background import BackgroundServer

    long_run = tmp_path_factory.mktemp("long-history")
    meta = digits_model[1]
    history = [  # only the axis layout is tested: smooth curves of the right length
        {
            "epoch": epoch,
            "train_loss": 2 * math.exp(-epoch / 40),
            "test_loss": 2 * math.exp(-epoch / 50) + 0.1,
            "train_accuracy": 1 - 0.9 * math.exp(-epoch / 30),
            "test_accuracy": 0.95 - 0.85 * math.exp(-epoch / 30),
        }
        for epoch in range(1, LONG_HISTORY + 1)
    ]
    facts = {"class_names": meta["class_names"], "dataset": meta["dataset"], "history": history}
    save_checkpoint(long_run / "model", create_model("convnet", (1, 8, 8), 10), facts)
    with BackgroundServer([digits_run, long_run]) as url:
        yield url


def post_form(explorer: str, path: str, files=None, **form) -> dict:
    import httpx

    return httpx.post(explorer + path.lstrip("/"), data=form, files=files, timeout=30).json()


def unpack(packed: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(packed["b64"]), dtype="<f4").reshape(packed["shape"])


def wait_until(page, script: str, arg=None, seconds: float = 30) -> None:
    """Poll ``script`` (a JS function) until it returns true. Playwright's wait_for_function would
    evaluate a string inside the page, which the explorer's CSP (no eval) refuses."""
    for _ in range(int(seconds * 10)):
        if page.evaluate(script, arg):
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"still false after {seconds} s: {script}")


ROWS_OF_GRID = "(rows) => document.querySelectorAll('#pg-grid-table tr').length === rows"
DRAWN = """() => {
  const canvas = document.getElementById("seen-canvas");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  return data.some((value, i) => i % 4 === 0 && value > 60);
}"""


def seen_pixels(page) -> np.ndarray:
    """The "What the model sees" canvas as gray values in [0, 1] (H, W)."""
    size, values = page.evaluate(
        """() => {
      const canvas = document.getElementById("seen-canvas");
      const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      return [[canvas.height, canvas.width], Array.from(data.filter((_, i) => i % 4 === 0))];
    }"""
    )
    return np.array(values, dtype=float).reshape(size) / 255


def test_first_screen_shows_a_test_digit_and_its_prediction(open_page, explorer):
    page = open_page()
    page.wait_for_selector('#network[data-source^="test image"]', timeout=20_000)
    page.wait_for_selector("#prediction[data-probability]")
    index = int(page.locator("#network").get_attribute("data-source").removeprefix("test image "))
    assert page.locator("#test-strip canvas.thumb.current").get_attribute("data-index") == str(index)
    run_id = page.locator("#run-select").input_value()
    expected = post_form(explorer, f"/api/runs/{run_id}/predict", test_index=index)
    assert page.locator("#prediction").get_attribute("data-class") == expected["top"][0]["class"]
    shown = float(page.locator("#prediction").get_attribute("data-probability"))
    assert shown == pytest.approx(expected["top"][0]["probability"], abs=1e-6)
    assert seen_pixels(page) == pytest.approx(unpack(expected["input"])[0], abs=1 / 255 + 1e-6)


def test_every_view_shows_the_current_image(open_page, explorer, digits, tmp_path):
    from PIL import Image

    page = open_page()
    run_id = page.locator("#run-select").input_value()
    first = pick_test_image(page, 2)
    page.click('#tabs button[data-tab="attribution"]')
    page.wait_for_selector(f'#attr-maps[data-source="test image {first}"]', timeout=30_000)

    # an upload while "Where it looks" is open: the maps and "What the model sees" both follow it
    digit = digits.test_images[7, 0].numpy()  # (8, 8) uint8
    Image.fromarray(digit).resize((64, 64), Image.NEAREST).save(tmp_path / "other.png")
    page.set_input_files("#upload-input", str(tmp_path / "other.png"))
    upload = "upload 'other.png'"
    page.wait_for_selector(f'#attr-maps[data-source="{upload}"]', timeout=30_000)
    page.wait_for_selector(f'#seen-canvas[data-source="{upload}"]')
    with open(tmp_path / "other.png", "rb") as file:
        expected = post_form(explorer, f"/api/runs/{run_id}/predict", files={"image": ("other.png", file)})
    assert seen_pixels(page) == pytest.approx(unpack(expected["input"])[0], abs=1 / 255 + 1e-6)

    # "Fool it" never shows an attack of another image, not even before its answer arrives
    page.click('#tabs button[data-tab="attack"]')
    assert page.locator("#attack-images").get_attribute("data-source") in (None, upload)
    page.wait_for_selector(f'#attack-images[data-source="{upload}"]', timeout=30_000)
    assert page.locator("#seen-canvas").get_attribute("data-source") == upload

    # a new test image on the Network view: the other views drop the upload's maps at once
    page.click('#tabs button[data-tab="overview"]')
    second = pick_test_image(page, 6)
    for tab, box in (("attribution", "#attr-maps"), ("attack", "#attack-images")):
        page.click(f'#tabs button[data-tab="{tab}"]')
        assert page.locator(box).get_attribute("data-source") in (None, f"test image {second}")
        page.wait_for_selector(f'{box}[data-source="test image {second}"]', timeout=30_000)
        assert page.locator("#seen-canvas").get_attribute("data-source") == f"test image {second}"


def test_receptive_field_box_only_on_the_network_view(open_page):
    page = open_page()
    pick_test_image(page, 5)
    fmap = page.locator('.stage[data-stage="conv2"] canvas.fmap').first
    box = fmap.bounding_box()
    fmap.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
    page.wait_for_selector("#arith-total")
    assert page.locator("#seen-overlay").is_visible() and page.evaluate(PAINTED_PIXELS, "seen-overlay") > 0
    page.click('#tabs button[data-tab="attribution"]')
    overlay = page.locator("#seen-overlay")
    assert overlay.is_hidden() or page.evaluate(PAINTED_PIXELS, "seen-overlay") == 0
    page.click('#tabs button[data-tab="overview"]')  # back where the cell was clicked: shown again
    assert overlay.is_visible() and page.evaluate(PAINTED_PIXELS, "seen-overlay") > 0


def test_playground_menus_say_what_the_grid_holds(open_page):
    page = open_page()
    page.click('#tabs button[data-tab="playground"]')
    page.wait_for_selector("#pg-output-table td[data-value]")
    page.select_option("#pg-picture", "xray")
    wait_until(page, "() => document.querySelectorAll('#pg-grid-table tr').length >= 16")
    page.select_option("#pg-size", "12")
    wait_until(page, ROWS_OF_GRID, 12)
    assert page.locator("#pg-picture").input_value() == ""
    chosen = page.locator("#pg-picture option:checked").inner_text()
    assert "xray" not in chosen and "own grid" in chosen
    values = {td.get_attribute("data-value") for td in page.locator("#pg-grid-table td").all()}
    assert values == {"0"}
    # negative factors of the written-out sum are in parentheses: 0.00·(−1.00), never 0.00·-1.00
    page.select_option("#pg-picture", "smiley")
    page.click('#pg-presets button[data-kernel="edge"]')
    page.click("#pg-reset")
    page.click("#pg-step-button")
    equation = page.locator("#pg-step .equation").inner_text()
    assert "·(−1.00)" in equation and "·-" not in equation, equation


def test_docs_render_offline(open_page):
    page = open_page(path="docs", ready=False)
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    paths = [p.inner_text() for p in page.locator(".opblock-summary-path").all()]
    assert any("/api/runs/{run_id}/activations" in p.replace("\u200b", "") for p in paths), paths


READY = {  # what each tab shows once its content has arrived
    "overview": "#network .stage",
    "playground": "#pg-output-table",
    "attribution": "#attr-maps[data-source]",
    "attack": "#attack-images[data-source]",
    "card": "#card-confusion",
}


def test_phone_width_has_no_horizontal_overflow(open_page, tmp_path):
    page = open_page(width=360, touch=True)
    for tab in [
        button.get_attribute("data-tab") for button in page.locator("#tabs button:not([hidden])").all()
    ]:
        page.click(f'#tabs button[data-tab="{tab}"]')
        if tab in READY:
            page.wait_for_selector(READY[tab], timeout=30_000)
        page.wait_for_timeout(400)
        width = page.evaluate("document.documentElement.scrollWidth")
        page.screenshot(path=tmp_path / f"phone-{tab}.png", full_page=True)
        assert width <= 360, f"{tab}: the page is {width} px wide"


def test_drawing_with_a_finger(open_page):
    page = open_page(width=360, touch=True)
    page.wait_for_selector('#network[data-source^="test image"]')
    page.click("#clear-button")
    page.wait_for_selector("#network[data-source=\"upload 'drawing.png'\"]")
    box = page.locator("#draw-canvas").bounding_box()
    touch = page.context.new_cdp_session(page)
    x = box["x"] + box["width"] * 0.44  # the middle of a pixel column of the 8x8 input
    points = [(x, box["y"] + box["height"] * t) for t in (0.15, 0.3, 0.45, 0.6, 0.75)]
    touch.send(
        "Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": points[0][1]}]}
    )
    for px, py in points[1:]:
        touch.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": px, "y": py}]})
    touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    wait_until(page, DRAWN)
    assert page.evaluate("window.scrollY") == 0  # the finger drew; it did not scroll the page


def test_model_card_axes_for_a_long_history(open_page):
    from convlens.views.plots.colours import SPLIT_COLOURS

    page = open_page()
    page.select_option("#run-select", index=1)
    page.wait_for_selector('#run-facts:has-text("convnet")')
    page.click('#tabs button[data-tab="card"]')
    page.wait_for_selector("#card-charts svg.chart")
    charts = page.locator("#card-charts svg.chart")
    assert charts.count() == 2
    for chart in charts.all():
        epochs = [int(t.text_content()) for t in chart.locator(".epoch-tick").all()]
        assert 2 <= len(epochs) <= 10 and epochs == sorted(set(epochs)), epochs
        assert epochs[0] >= 1 and epochs[-1] <= LONG_HISTORY
        top_of_plot = min(float(line.get_attribute("y1")) for line in chart.locator("line.grid").all())
        legend_bottom = chart.evaluate(
            "svg => Math.max(...[...svg.querySelectorAll('.legend')].map((t) => t.getBBox().y + t.getBBox().height))"
        )
        assert legend_bottom <= top_of_plot  # the legend sits above the lines, never on them
        strokes = [line.get_attribute("stroke") for line in chart.locator("polyline").all()]
        assert strokes == [SPLIT_COLOURS["train"], SPLIT_COLOURS["test"]]


def test_explanations_use_the_models_numbers(open_page, digits_model):
    model = digits_model[0]
    conv1 = dict(model.stages())["conv1"]
    page = open_page()
    text = page.locator("#explain-overview").inner_text()
    total = sum(p.numel() for p in model.parameters())
    assert f"{total:,} parameters" in text, text
    page.click('#tabs button[data-tab="card"]')
    row = page.locator("#card-stages tr", has=page.locator("td", has_text=re.compile("^conv1$")))
    title = row.get_attribute("title")
    kernel = "×".join(str(k) for k in conv1.kernel_size)
    assert f"{conv1.out_channels} filters of {kernel}" in title, title
    assert f"{conv1.weight.numel() + conv1.bias.numel()} parameters" in title, title
    page.click("#card-explanations summary")  # the same words, readable without a pointer (phones)
    terms = page.locator("#card-explanations dt").all_inner_texts()
    said = dict(zip(terms, page.locator("#card-explanations dd").all_inner_texts(), strict=True))
    assert said["conv1"] == title
    assert f"turns the {len(digits_model[1]['class_names'])} scores" in said["softmax"]
    for tab in ("playground", "attribution", "attack", "layers", "card"):
        assert len(page.locator(f"#explain-{tab}").inner_text().split(". ")) >= 2
