"""Defects a new user hit in the explorer's layout and the Train tab (issue 23, section 2), each
checked in Debian Chromium (Playwright): the Train tab marks the epoch kept as the model and
explains itself, fits a 360 px phone with readable charts, and the Network view's labels (colour
bars, map counts, class names of the logits) neither collide nor leave the screen at 1280 px.
"""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.browser  # the `chromium` fixture (conftest.py) skips without /usr/bin/chromium


@pytest.fixture(scope="module")
def explorer(digits_run, photo_run):
    from convlens.server.background import BackgroundServer

    with BackgroundServer([digits_run, photo_run]) as url:
        yield url


def kept_row(run_dir) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return next(row for row in rows if row.get("selected"))


def assert_kept_is_shown(page, run_dir) -> None:
    kept = kept_row(run_dir)
    marks = page.locator("#train-curves svg.chart line.kept")
    assert marks.count() == 2  # loss and accuracy
    legends = page.locator("#train-curves svg.chart text.legend").all_text_contents()
    assert legends.count(f"kept: epoch {kept['epoch']}") == 2
    said = page.locator("#train-kept")
    assert said.get_attribute("data-epoch") == str(kept["epoch"])
    assert said.inner_text().startswith(
        f"the model is epoch {kept['epoch']}: test accuracy {100 * kept['test_accuracy']:.1f} %"
    )


def test_the_train_tab_marks_the_kept_epoch(open_page, digits_run, tmp_path):
    """Defect 3: the tab showed the last epoch's accuracy only (digits_run kept epoch 6 of 8)."""
    page = open_page(height=1000, path="#train")
    page.wait_for_selector("#train-curves[data-done=finished]")
    page.wait_for_selector("#train-kept")
    assert_kept_is_shown(page, digits_run)
    assert "(the last)" in page.locator("#train-last").inner_text()
    page.screenshot(path=tmp_path / "train-kept.png", full_page=True)


def test_a_training_watched_live_gets_its_kept_epoch_at_the_end(chromium, digits_run, tmp_path):
    """Live, the epochs arrive before training marks one ``selected``: the end must add the mark."""
    from convlens.server.background import BackgroundServer

    with BackgroundServer([digits_run], runs_dir=tmp_path / "runs", max_trainings=1) as url:
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url + "#train")
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        page.select_option("#train-data", "digits")
        page.fill("#train-epochs", "3")
        page.click("#train-start")
        page.wait_for_selector('#train-curves[data-run^="digits-convnet"]', timeout=30_000)
        run_id = page.locator("#train-curves").get_attribute("data-run")
        page.wait_for_selector("#train-curves[data-done=finished]", timeout=180_000)
        deadline = time.monotonic() + 20
        while page.locator("#train-kept").count() == 0:
            assert time.monotonic() < deadline, "no kept epoch after the end"
            page.wait_for_timeout(250)
        assert_kept_is_shown(page, tmp_path / "runs" / run_id)
        assert "(" in page.locator("#train-kept").inner_text()  # why it was kept, from the run card
        page.close()
    assert errors == []


def test_the_train_tab_explains_itself_and_fits_a_phone(open_page, tmp_path):
    """Defect 17: no explanation; at 360x740 the 8th probe map was cut and the charts' text ~6 px."""
    page = open_page(width=360, height=740, path="#train", touch=True)
    page.wait_for_selector("#train-snapshot[data-epoch]")
    page.wait_for_selector("#train-curves[data-done=finished] svg.chart")
    page.screenshot(path=tmp_path / "train-phone.png", full_page=True)
    explained = page.locator("#tab-train > p.view-explanation")
    assert explained.is_visible() and "epoch" in explained.inner_text()
    section = page.locator("#tab-train")
    edge = section.evaluate("s => s.getBoundingClientRect().left + s.clientLeft + s.clientWidth")
    assert section.evaluate("s => s.scrollWidth <= s.clientWidth")  # nothing runs past the tab
    maps = page.locator("#train-snapshot canvas.train-map")
    assert maps.count() == 16
    for box in maps.evaluate_all("ms => ms.map((m) => m.getBoundingClientRect().toJSON())"):
        assert box["right"] <= edge + 0.5 and box["width"] >= 24, box
    sizes = page.locator("#train-curves svg.chart text").evaluate_all(
        "ts => ts.map((t) => parseFloat(getComputedStyle(t).fontSize) * t.getScreenCTM().a)"
    )
    assert min(sizes) >= 10, sizes  # as big as the page's own small text
