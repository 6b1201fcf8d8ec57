"""Defects a new user hit in the explorer (issue 23, section 2), each checked in Debian Chromium
(Playwright): a softmax bar explains its probability, a newly chosen run opens on its own test
image, a rejected upload leaves nothing of the previous image, and a targeted attack names its
target. The Network view's labels and the Train tab are in test_browser_defects_layout.py.
"""

from __future__ import annotations

import math

import httpx
import pytest

from testing_helpers import pick_test_image

pytestmark = pytest.mark.browser  # the `chromium` fixture (conftest.py) skips without /usr/bin/chromium


@pytest.fixture(scope="module")
def explorer(digits_run, photo_run):
    from convlens.server.background import BackgroundServer

    with BackgroundServer([digits_run, photo_run]) as url:
        yield url


def post(explorer: str, path: str, **form) -> dict:
    response = httpx.post(f"{explorer}api/{path}", data=form, timeout=30)
    response.raise_for_status()
    return response.json()


def test_a_softmax_bar_shows_logits_exp_and_probability(open_page, explorer, digits_run, tmp_path):
    """Defect 1: the click found no softmax canvas in the network and threw before explaining."""
    page = open_page(height=1000)
    index = pick_test_image(page, 4)
    bar = page.locator('#probabilities .bar-row[data-class="3"]')
    bar.click()
    page.wait_for_selector("#arith-total")
    page.screenshot(path=tmp_path / "softmax.png", full_page=True)
    assert "softmax" in page.locator("#arithmetic h3").inner_text()
    assert bar.get_attribute("class").split() == ["bar-row", "selected"]  # the bar explained is marked
    expected = post(explorer, f"runs/{digits_run.name}/arithmetic", test_index=index, stage="softmax",
                    channel=3, row=0, col=0)["cell"]  # fmt: skip
    table = page.locator("#arithmetic table.numbers.plain")
    assert [th.inner_text() for th in table.locator("th").all()][1:] == [
        "logit",
        "exp(logit - max)",
        "probability",
    ]
    row = table.locator("tr.chosen td")
    assert row.first.inner_text() == "3"
    logit, exp, probability = (float(row.nth(i).get_attribute("data-value")) for i in (1, 2, 3))
    assert logit == pytest.approx(expected["logits"][3])
    assert exp == pytest.approx(math.exp(logit - max(expected["logits"])), rel=1e-5)
    total = float(page.locator("#arith-total").get_attribute("data-value"))
    assert total == pytest.approx(float(bar.get_attribute("data-probability")), abs=1e-6) == probability
    # softmax reads every logit: the fc column is outlined whole
    assert page.locator('svg.network-links rect.window[data-stage="fc"]').count() == 1
