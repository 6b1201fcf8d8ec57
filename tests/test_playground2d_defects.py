"""The learning playground's defects of issue 23 (items 5-8 and 14), each checked where a user
meets it: the API (pause answers the real state, step adds one epoch, reset draws new weights on
the same points) and the page in Chromium (weight lines on an absolute scale, the loss chart's
legend and axes, the explanation of the chosen data set, six hidden layers beside the output)."""

from __future__ import annotations

import threading
import time

import pytest

import playground_fixtures

PAGE = "defects-page-1"


# --- the API ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from convlens.server.background import BackgroundServer

    server = BackgroundServer([], runs_dir=tmp_path_factory.mktemp("runs"))  # real uvicorn
    with server as url:
        yield server, url


def test_pause_stops_the_stream_and_answers_the_network_as_it_is(server):
    """Item 6: the page showed the last snapshot it read while the server trained on (117 →
    step → 121); the pause answer is the trainer's own epoch, and a step adds exactly one."""
    import httpx

    server, url = server
    api = f"{url}api/playground2d"
    httpx.post(f"{api}/start", json={"page": PAGE}, timeout=30).raise_for_status()
    seen: list[str] = []

    def read_stream():
        with httpx.stream("GET", f"{api}/{PAGE}/stream", timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("event:"):
                    seen.append(line)
                if line == "event: end":
                    break

    reader = threading.Thread(target=read_stream)
    reader.start()  # the page keeps reading while it asks to pause, as a browser does
    deadline = time.monotonic() + 20
    while seen.count("event: snapshot") < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    paused = httpx.post(f"{api}/{PAGE}/pause", timeout=30)
    assert paused.status_code == 200, paused.text
    trainer = server.app.state.playground2d.sessions[PAGE].trainer
    reader.join(timeout=20)
    assert seen[-1] == "event: end"  # the stream ended
    epoch = paused.json()["epoch"]
    assert epoch == trainer.epoch > 0  # the real state, not the last snapshot the page read
    time.sleep(0.2)
    assert trainer.epoch == epoch  # nothing trains after the pause
    stepped = httpx.post(f"{api}/{PAGE}/step", timeout=30).json()
    assert stepped["epoch"] == epoch + 1


def test_reset_draws_new_weights_on_the_same_points(server):
    """Item 7: reset sends a new ``init_seed``: other weights, the same points; without one the
    weights are those of ``seed``, as before (the CLI's runs stay reproducible)."""
    import httpx

    _, url = server
    start = lambda **extra: httpx.post(  # noqa: E731
        f"{url}api/playground2d/start", json={"page": PAGE, "seed": 3, **extra}, timeout=30
    ).json()
    plain, same, first, second = start(), start(init_seed=3), start(init_seed=11), start(init_seed=12)
    assert plain["init_seed"] == 3 and first["init_seed"] == 11
    assert plain["snapshot"]["weights"] == same["snapshot"]["weights"]
    assert first["snapshot"]["weights"] != second["snapshot"]["weights"] != plain["snapshot"]["weights"]
    assert first["points"] == second["points"] == plain["points"]
    refused = httpx.post(f"{url}api/playground2d/start", json={"page": PAGE, "init_seed": -1}, timeout=30)
    assert refused.status_code in (400, 422) and "init_seed" in refused.text


# --- the page ---------------------------------------------------------------------------------

browser = pytest.mark.browser  # the `chromium` fixture (conftest.py) skips without /usr/bin/chromium

# the playground's shared fixtures (tests/playground_fixtures.py), under the names tests ask for
playground_server = playground_fixtures.playground_server
explorer = playground_fixtures.explorer
page = playground_fixtures.page


def epoch_of(page) -> int:
    return int(page.locator("#pg2-epoch").inner_text())


def lines(page) -> list[dict]:
    return page.eval_on_selector_all(
        ".pg2-lines line.pg2-weight",
        "lines => lines.map(l => ({weight: Number(l.dataset.weight), width: Number(l.getAttribute('stroke-width')),"
        " stroke: l.getAttribute('stroke')}))",
    )


def step(page, times: int = 1) -> None:
    for _ in range(times):
        epoch = epoch_of(page)
        page.click("#pg2-step")
        page.wait_for_function(
            "e => Number(document.querySelector('#pg2-epoch').textContent) === e", arg=epoch + 1
        )


@browser
def test_a_dead_network_draws_hairlines(page):
    """Item 5: widths against the largest weight drew a network whose weights L1 drove to ~0 as
    boldly as a live one; on the absolute scale its lines are hairlines of a pale colour."""
    live = lines(page)
    assert max(line["width"] for line in live) > 1.2  # the initial weights are not tiny
    page.select_option("#pg2-regularization", "l1")
    page.select_option("#pg2-regularization-rate", "10")
    page.wait_for_function("() => document.querySelector('#pg2-epoch').textContent === '0'")
    step(page, 6)
    dead = lines(page)
    assert max(abs(line["weight"]) for line in dead) < 0.15
    assert max(line["width"] for line in dead) < 1
    for line in dead:  # near the white of zero: every channel above 180
        assert min(int(c) for c in line["stroke"][4:-1].split(",")) > 180, line
    # the same weight gets the same width whatever the others are
    for line in live + dead:
        assert line["width"] == pytest.approx(0.25 + 4 * min(1, abs(line["weight"]) / 2), abs=0.01)


@browser
def test_after_pause_the_page_shows_the_real_epoch_and_step_adds_one(page):
    """Item 6, in the page: pause, read the epoch, step once: exactly one more."""
    page.click("#pg2-play")
    page.wait_for_function("() => Number(document.querySelector('#pg2-epoch').textContent) >= 20")
    page.click("#pg2-play")  # pause
    page.wait_for_selector("#pg2-play:has-text('play'):not([data-waiting])")  # the pause's answer drawn
    shown = epoch_of(page)
    page.click("#pg2-step")
    page.wait_for_function("e => Number(document.querySelector('#pg2-epoch').textContent) !== e", arg=shown)
    page.wait_for_timeout(300)
    assert epoch_of(page) == shown + 1


@browser
def test_reset_shows_new_weights_on_the_same_points(page):
    """Item 7: reset draws new initial weights; the data stays."""
    before = [line["weight"] for line in lines(page)]
    points = page.evaluate("() => document.querySelector('#pg2-boundary').toDataURL()")
    step(page)
    page.click("#pg2-reset")
    page.wait_for_function("() => document.querySelector('#pg2-epoch').textContent === '0'")
    page.wait_for_timeout(200)
    after = [line["weight"] for line in lines(page)]
    assert len(after) == len(before) and after != before
    assert page.locator("#pg2-seed").input_value() == "0"  # the points' seed did not change
    assert points  # drawn


@browser
def test_the_loss_chart_has_a_legend_and_axes_and_the_text_names_the_data_set(page):
    """Item 8: the chart names its two lines and its axes; the explanation speaks of the data
    set chosen, not always of the spiral."""
    step(page, 2)
    texts = page.eval_on_selector_all("#pg2-loss-chart text", "ts => ts.map(t => t.textContent)")
    assert {"test loss", "training loss", "epoch", "loss", "0", "2"} <= set(texts)
    explanation = page.locator(".pg2-explain p").first
    assert "spiral" in explanation.inner_text()
    page.click('#pg2-datasets button[data-dataset="xor"]')
    page.wait_for_selector(".pg2-explain p[data-dataset=xor]")
    text = explanation.inner_text()
    assert "xor" in text and "spiral" not in text
    page.click('#pg2-datasets button[data-dataset="gauss"]')
    page.wait_for_selector(".pg2-explain p[data-dataset=gauss]")
    assert "blobs" in explanation.inner_text() and "spiral" not in explanation.inner_text()


@browser
def test_six_hidden_layers_stay_beside_the_output_and_the_colour_bar_is_labelled_at_its_ends(page):
    """Item 14: "OUTPUT" of the network was drawn over the loss text; the colour bar's 0 and 1
    sat together at its left."""
    for layers in range(4, 7):
        page.click("#pg2-add-layer")
        page.wait_for_function(
            "n => document.querySelectorAll('.pg2-column[data-layer]').length === n", arg=layers
        )
    box = lambda selector: page.locator(selector).first.bounding_box()  # noqa: E731
    network, output = box("#pg2-network"), box(".pg2-output")
    assert network["x"] + network["width"] <= output["x"]  # side by side, not on top
    heading = page.locator("#pg2-network h3", has_text="Output").bounding_box()
    assert heading["x"] + heading["width"] <= network["x"] + network["width"]  # all of it fits
    bar, low, high = box("#pg2-legend canvas"), box(".pg2-legend-low"), box(".pg2-legend-high")
    assert abs(low["x"] - bar["x"]) < 3
    assert abs(high["x"] + high["width"] - (bar["x"] + bar["width"])) < 3
