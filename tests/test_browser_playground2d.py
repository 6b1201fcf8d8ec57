"""The learning playground tab in Debian Chromium driven by Playwright: the default network
trains on the spiral (the shown test loss falls), the neuron maps change as it trains, and a
refused setting shows the server's one-line message. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser  # the `chromium` fixture (conftest.py) skips without /usr/bin/chromium


@pytest.fixture(scope="module")
def explorer(digits_run):
    from convlens.server.background import BackgroundServer

    with BackgroundServer([digits_run]) as url:
        yield url


@pytest.fixture
def page(open_page):
    # Chromium logs every 4xx answer as a console error: the refused setting's 400 is expected
    page = open_page(height=1000, ignore=lambda text: "400" in text)
    page.click('#tabs button[data-tab="playground2d"]')
    page.wait_for_selector("#pg2-test-loss[data-value]", timeout=20_000)
    return page


def neuron_pixels(page) -> list[str]:
    """Every hidden neuron's map as the canvas holds it now."""
    return page.eval_on_selector_all(
        "canvas.pg2-neuron[data-layer]:not([data-layer=output])", "tiles => tiles.map(t => t.toDataURL())"
    )


def test_spiral_trains_with_the_defaults_and_the_maps_change(page, tmp_path):
    assert page.locator("#pg2-datasets button.active").get_attribute("data-dataset") == "spiral"
    assert page.locator("canvas.pg2-neuron").count() == 8 + 8 + 8 + 1  # hidden 8,8,8 and the output
    start = float(page.locator("#pg2-test-loss").get_attribute("data-value"))
    before = neuron_pixels(page)
    page.screenshot(path=tmp_path / "before.png", full_page=True)
    page.click("#pg2-play")
    # functions, not expressions: the page's CSP forbids evaluating strings
    page.wait_for_function(
        "start => Number(document.querySelector('#pg2-test-loss').dataset.value) < start",
        arg=start,
        timeout=20_000,
    )
    page.wait_for_function(
        "() => Number(document.querySelector('#pg2-epoch').textContent) >= 10", timeout=20_000
    )
    after = neuron_pixels(page)
    page.screenshot(path=tmp_path / "after.png", full_page=True)
    assert len(after) == len(before) == 24
    assert sum(a != b for a, b in zip(before, after, strict=True)) >= 12  # most neurons carve anew
    page.click("#pg2-play")  # pause
    page.wait_for_selector("#pg2-play:has-text('play'):not([data-waiting])")  # the pause's answer drawn
    epoch = page.locator("#pg2-epoch").inner_text()
    page.wait_for_timeout(400)
    assert page.locator("#pg2-epoch").inner_text() == epoch  # paused: nothing trains
    # a slice of training that was under way when the page paused still counts: step twice
    page.click("#pg2-step")
    page.wait_for_function("e => document.querySelector('#pg2-epoch').textContent !== e", arg=epoch)
    epoch = page.locator("#pg2-epoch").inner_text()
    page.click("#pg2-step")
    page.wait_for_function(
        "e => document.querySelector('#pg2-epoch').textContent === e", arg=str(int(epoch) + 1)
    )
    weights = page.eval_on_selector_all(
        ".pg2-lines line", "lines => lines.map(l => Number(l.dataset.weight))"
    )
    assert len(weights) == 2 * 8 + 8 * 8 + 8 * 8 + 8  # every weight has its line


def test_a_refused_setting_shows_the_server_message(page):
    page.locator('.pg2-column[data-layer="1"] .pg2-neuron-buttons button').first.click()  # a 9th neuron
    message = page.locator("#pg2-message")
    message.wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('#pg2-message').textContent.length > 0")
    assert message.inner_text() == "hidden: each layer has 1 to 8 neurons, got 9"
    assert page.locator('.pg2-column[data-layer="1"] canvas.pg2-neuron').count() == 8  # the network stays
    page.locator(".pg2-feature").nth(2).click()  # feed x1² too: accepted
    page.wait_for_function("() => document.querySelectorAll('.pg2-feature.used').length === 3")
    assert page.locator("#pg2-message").inner_text() == ""
