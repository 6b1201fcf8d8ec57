"""The learning playground tab in Debian Chromium driven by Playwright: the default network
trains on the spiral (the shown test loss falls), the neuron maps change as it trains, and a
refused setting shows the server's one-line message. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import pytest
import torch

import playground_fixtures

pytestmark = pytest.mark.browser  # the `chromium` fixture (conftest.py) skips without /usr/bin/chromium

# the playground's shared fixtures (tests/playground_fixtures.py), under the names tests ask for
playground_server = playground_fixtures.playground_server
explorer = playground_fixtures.explorer
page = playground_fixtures.page


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
        ".pg2-lines line.pg2-weight", "lines => lines.map(l => Number(l.dataset.weight))"
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


SETUP = (
    "?pg-dataset=multi-gauss&pg-noise=10&pg-train=70&pg-seed=4&pg-features=x1,x2,x1sq&pg-hidden=4,3"
    "&pg-activation=relu&pg-lr=0.03&pg-regularization=l2&pg-rate=0.001&pg-batch=20&pg-discretize=1"
    "&pg-test=1#playground2d"
)


def test_a_link_opens_its_setup_and_the_server_trains_that_network(open_page, playground_server):
    """A teacher's link: every control shows the setup, and the server's network is built from
    it (a regression: the losses are squared errors, no accuracy, the output's own colour bar)."""
    from convlens.playground2d import PlaygroundConfig

    page = playground_fixtures.open_playground(open_page, SETUP)
    assert page.locator("#pg2-datasets button.active").get_attribute("data-dataset") == "multi-gauss"
    values = {selector: page.locator(selector).input_value() for selector in (
        "#pg2-noise", "#pg2-train-percent", "#pg2-batch-size", "#pg2-seed", "#pg2-lr",
        "#pg2-activation", "#pg2-regularization", "#pg2-regularization-rate")}  # fmt: skip
    assert values == {
        "#pg2-noise": "10", "#pg2-train-percent": "70", "#pg2-batch-size": "20", "#pg2-seed": "4",
        "#pg2-lr": "0.03", "#pg2-activation": "relu", "#pg2-regularization": "l2",
        "#pg2-regularization-rate": "0.001",
    }  # fmt: skip
    used = page.eval_on_selector_all(".pg2-feature.used canvas", "cs => cs.map(c => c.dataset.feature)")
    assert used == ["x1", "x2", "x1sq"]
    widths = [
        page.locator(f'.pg2-column[data-layer="{layer}"] canvas.pg2-neuron').count() for layer in (1, 2)
    ]
    assert widths == [4, 3] and page.locator(".pg2-column[data-layer]").count() == 2
    assert page.locator("#pg2-discretize").is_checked() and page.locator("#pg2-show-test").is_checked()
    trainer = playground_fixtures.trainer_of(page, playground_server)
    assert trainer.config == PlaygroundConfig(
        dataset="multi-gauss", noise=10, train_percent=70, seed=4, features=("x1", "x2", "x1sq"),
        hidden=(4, 3), activation="relu", lr=0.03, regularization="l2", regularization_rate=0.001,
        batch_size=20,
    )  # fmt: skip
    assert page.locator(".pg2-loss-name").first.inner_text() == "MSE"
    assert not page.locator(".pg2-accuracy").is_visible()
    assert page.locator("#pg2-legend").get_attribute("data-legend") == "regression discretized"
    # a change is written back at once: the link always holds what the page shows
    page.select_option("#pg2-activation", "tanh")
    page.wait_for_function("() => location.search.includes('pg-activation=tanh')")
    assert page.evaluate("() => location.hash") == "#playground2d"
    assert "pg-features=x1,x2,x1sq" in page.evaluate("() => location.search")


def test_a_refused_link_says_why_and_opens_the_defaults(open_page):
    page = playground_fixtures.open_playground(open_page, "?pg-hidden=9,2#playground2d")
    assert page.locator("#pg2-message").inner_text() == "hidden: each layer has 1 to 8 neurons, got 9"
    assert page.locator(".pg2-column[data-layer]").count() == 3  # the defaults' 8,8,8


def test_hover_reads_a_weight_and_a_bias_and_click_sets_them_in_the_server(page, playground_server):
    """The value shown on hover is the server's; a typed value changes exactly that number of
    the server's network, and the page redraws from its answer."""
    trainer = playground_fixtures.trainer_of(page, playground_server)  # the network after one step
    before = [parameter.detach().clone() for parameter in trainer.network.parameters()]
    hit = page.locator('.pg2-weight-hit[data-layer="3"][data-neuron="0"][data-source="5"]')
    weight = float(before[6][0, 5])  # the output's weights: lines into it do not cross
    hit.hover()
    tooltip = page.locator(".pg2-tooltip")
    assert tooltip.inner_text() == f"weight neuron 6 of layer 3 → the output: {weight:.3f}"
    hit.click()
    page.locator(".pg2-editor").fill("-1.5")
    page.locator(".pg2-editor").press("Enter")
    page.wait_for_selector("#pg2-play:not([data-waiting])")
    page.wait_for_function(
        "() => document.querySelectorAll('.pg2-lines line.pg2-weight')[2*8 + 8*8 + 8*8 + 5].dataset.weight === '-1.5'"
    )
    after = [parameter.detach().clone() for parameter in trainer.network.parameters()]
    differ = [
        (i, tuple(p))
        for i, (a, b) in enumerate(zip(before, after, strict=True))
        for p in torch.nonzero(a != b).tolist()
    ]
    assert differ == [(6, (0, 5))] and float(after[6][0, 5]) == -1.5
    square = page.locator('.pg2-bias[data-layer="0"][data-neuron="2"]')  # neuron 3 of layer 1
    square.hover()
    assert tooltip.inner_text() == f"bias of neuron 3 of layer 1: {float(before[1][2]):.3f}"
    square.click()
    page.locator(".pg2-editor").fill("0.75")
    page.locator(".pg2-editor").press("Enter")
    page.wait_for_function(
        "() => document.querySelector('.pg2-bias[data-layer=\"0\"][data-neuron=\"2\"]').dataset.bias === '0.75'"
    )
    assert float(trainer.network[0][0].bias[2].detach()) == 0.75
    assert page.locator("#pg2-epoch").inner_text() == "1"  # an edit is no epoch


def test_discretize_draws_the_class_instead_of_the_shade(page):
    def output_colours() -> int:
        return page.eval_on_selector(
            'canvas.pg2-neuron[data-layer="output"]',
            "c => new Set(Array.from({length: c.width * c.height}, (_, i) => "
            "c.getContext('2d').getImageData(i % c.width, Math.floor(i / c.width), 1, 1).data.join())).size",
        )

    page.click("#pg2-step")
    page.wait_for_selector("#pg2-play:not([data-waiting])")
    assert output_colours() > 20  # P(class 1) in shades
    page.check("#pg2-discretize")
    page.wait_for_function("() => location.search.includes('pg-discretize=1')")
    assert output_colours() <= 2  # class 0 or class 1
    assert page.locator("#pg2-legend").get_attribute("data-legend") == "classification discretized"
