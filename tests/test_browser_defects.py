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


def first_thumb(page) -> int:
    return int(page.locator("#test-strip canvas.thumb").first.get_attribute("data-index"))


def test_a_newly_chosen_run_opens_on_its_own_test_image(open_page, digits_run, photo_run):
    """Defect 2: the previous run's image was sent to the new run (a digit shrunk into a photo model)."""
    page = open_page(height=1000)
    pick_test_image(page, 5)
    page.select_option("#run-select", photo_run.name)
    page.wait_for_selector('#network .stage[data-stage="bn2"] canvas.fmap')
    index = first_thumb(page)
    page.wait_for_selector(f'#network[data-source="test image {index}"]')
    assert page.locator("#test-strip canvas.thumb.current").get_attribute("data-index") == str(index)
    seen = page.locator("#seen-canvas")
    page.wait_for_selector(f'#seen-canvas[data-source="test image {index}"]')
    assert (seen.get_attribute("width"), seen.get_attribute("height")) == ("16", "16")
    page.select_option("#run-select", digits_run.name)
    page.wait_for_selector('#run-facts:has-text("on digits")')
    index = first_thumb(page)
    page.wait_for_selector(
        f'#network[data-source="test image {index}"] .stage[data-stage="conv2"] canvas.fmap'
    )
    page.wait_for_selector(f'#seen-canvas[data-source="test image {index}"][width="8"]')


def test_a_rejected_upload_leaves_nothing_of_the_previous_image(open_page, tmp_path):
    """Defect 10: the previous prediction, bars, badge and 'what the model sees' stayed beside the error."""
    page = open_page(height=1000, ignore=lambda text: "status of 415" in text)
    pick_test_image(page, 3)
    page.locator("#invert-input").check()  # far from the training images: the badge shows
    page.wait_for_selector("#shift-badge.inverted", state="visible")
    page.locator('.stage[data-stage="conv2"] canvas.fmap[data-channel="1"]').click()
    page.wait_for_selector("#arith-total")
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"these are notes, not a picture")
    page.set_input_files("#upload-input", str(bad))
    page.wait_for_selector("#network .error")
    assert "upload 'notes.png'" in page.locator("#network").inner_text()
    page.screenshot(path=tmp_path / "rejected.png", full_page=True)
    assert page.locator("#prediction").inner_text() == ""
    assert page.locator("#prediction").get_attribute("data-probability") is None
    assert page.locator("#probabilities .bar-row").count() == 0
    assert page.locator("#arithmetic").inner_text() == ""
    assert page.locator("#network").get_attribute("data-source") is None
    assert page.locator("#shift-badge").is_hidden()
    assert page.locator("#seen-canvas").get_attribute("data-source") == ""
    for canvas in ("#seen-canvas", "#draw-canvas"):  # blank: no pixel of the previous image
        lit = page.locator(canvas).evaluate(
            "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v, i) => i % 4 < 3 && v > 0)"
        )
        assert not lit, canvas
    assert page.locator("#test-strip canvas.thumb.current").count() == 0
    page.click('#tabs button[data-tab="attack"]')
    page.wait_for_selector("#attack-verdict .error")
    assert page.locator("#attack-before .bar-row, #attack-images canvas").count() == 0
    # the next image that works brings everything back
    page.click('#tabs button[data-tab="overview"]')
    pick_test_image(page, 2)
    assert page.locator("#probabilities .bar-row").count() == 10


def test_a_targeted_attack_says_how_far_the_target_got(open_page, explorer, digits_run, tmp_path):
    """Defect 9: the verdict spoke of the predicted class only, never of the class aimed at."""
    page = open_page(height=1000)
    index = pick_test_image(page, 3)
    page.click('#tabs button[data-tab="attack"]')
    page.wait_for_selector("#attack-verdict[data-prediction]")
    assert page.locator("#attack-target-verdict, .bar-row.target").count() == 0  # untargeted: no target
    predicted = page.locator("#attack-before .bar-row.top").get_attribute("data-class")
    target = "3" if predicted != "3" else "5"
    page.select_option("#attack-target", target)
    page.locator("#attack-eps").fill("0.3")
    page.wait_for_selector("#attack-target-verdict")
    page.wait_for_selector('#attack-verdict:has-text("ε = 0.30")')
    page.screenshot(path=tmp_path / "targeted.png", full_page=True)
    expected = post(explorer, f"runs/{digits_run.name}/attack", test_index=index, method="fgsm", eps=0.3,
                    target=int(target))  # fmt: skip
    before, after = (expected[key]["probabilities"][int(target)] for key in ("clean", "attacked"))
    said = page.locator("#attack-target-verdict")
    reached = expected["attacked"]["top"][0]["index"] == int(target)
    assert said.inner_text() == (
        f"; target {target}: {100 * before:.1f} % → {100 * after:.1f} %"
        + (" — reached" if reached else " — not reached")
    )
    for bars in ("#attack-before", "#attack-after"):
        marked = page.locator(f"{bars} .bar-row.target")
        assert marked.count() == 1 and marked.get_attribute("data-class") == target
    assert float(page.locator("#attack-after .bar-row.target").get_attribute("data-probability")) == (
        pytest.approx(after, abs=1e-6)
    )
