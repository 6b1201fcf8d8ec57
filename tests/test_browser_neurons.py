"""The neuron panel in Debian Chromium (Playwright): opened from the Network view, from Grad-CAM's
strongest channels in "Where it looks" (listed in the ranking endpoint's order) and from "What
layers learned"; its kernel against the checkpoint's weights, its patches, effects and a relu2
channel's regularised visualization against the endpoints' JSON, a feeder link opening the
feeding channel, a new input redrawing it, a server error shown inside it, and no sideways
scrolling at 1280 or 360 px.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from testing_helpers import pick_test_image

pytestmark = pytest.mark.browser  # the `chromium` fixture (conftest.py) skips without /usr/bin/chromium

READY = "#neuron-panel[data-state=ready]"


@pytest.fixture(scope="module")
def explorer(digits_run):
    from convlens.server.background import BackgroundServer

    with BackgroundServer([digits_run]) as url:
        yield url


def neuron_json(explorer: str, run_id: str, test_index: int, stage: str, channel: int) -> dict:
    data = {"test_index": test_index, "stage": stage, "channel": channel}
    response = httpx.post(f"{explorer}api/runs/{run_id}/neuron", data=data, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_panel(page, stage: str, channel: int, source: str) -> None:
    page.wait_for_selector(
        f'{READY}[data-stage="{stage}"][data-channel="{channel}"][data-source="{source}"]', timeout=20_000
    )


def no_sideways_scroll(page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    panel = page.locator("#neuron-panel")
    assert panel.evaluate(
        "p => p.scrollWidth <= p.clientWidth && p.getBoundingClientRect().right <= innerWidth"
    )


def shown_kernel(page) -> np.ndarray:
    """The kernel tables' values as (C_in, kH, kW): the value each cell carries and the one it shows."""
    tables = page.locator("#neuron-kernel table.numbers")
    carried, shown = [], []
    for table in tables.all():
        cells = table.locator("tr").all()
        carried.append(
            [[float(td.get_attribute("data-value")) for td in row.locator("td").all()] for row in cells]
        )
        shown.append([[float(td.inner_text()) for td in row.locator("td").all()] for row in cells])
    carried, shown = np.array(carried), np.array(shown)
    np.testing.assert_allclose(shown, carried, atol=0.0005 + 1e-9)  # printed with 3 decimals
    return carried


def test_the_panel_opens_from_the_network_view_with_the_models_kernel_and_the_servers_patches(
    open_page, explorer, digits_run, digits_model, tmp_path
):
    model, _ = digits_model
    page = open_page(width=1280, height=800)
    page.wait_for_selector('#network .stage[data-stage="conv2"] canvas.fmap')
    index = pick_test_image(page, 2)
    page.locator('.stage[data-stage="conv2"] canvas.fmap[data-channel="3"]').click()
    link = page.locator('#arithmetic button.neuron-link[data-stage="conv2"][data-channel="3"]')
    link.click()
    wait_for_panel(page, "conv2", 3, f"test image {index}")
    body = neuron_json(explorer, digits_run.name, index, "conv2", 3)

    conv2 = dict(model.stages())["conv2"]
    np.testing.assert_allclose(shown_kernel(page), conv2.weight[3].detach().numpy(), rtol=0, atol=1e-7)
    tables = page.locator("#neuron-kernel table.numbers")
    assert [t.get_attribute("data-input-channel") for t in tables.all()] == [str(c) for c in range(16)]
    assert float(page.locator("#neuron-bias").get_attribute("data-value")) == pytest.approx(
        float(conv2.bias[3].detach())
    )

    for kind in ("top", "bottom"):
        figures = page.locator(f"#neuron-{kind}-patches figure.neuron-patch").all()
        expected = body[f"{kind}_patches"]
        assert len(figures) == len(expected) == 9
        assert [int(f.get_attribute("data-index")) for f in figures] == [p["index"] for p in expected]
        assert [float(f.get_attribute("data-value")) for f in figures] == pytest.approx(
            [p["value"] for p in expected]
        )
        assert [f.locator(".neuron-value").inner_text() for f in figures] == [
            f"{p['value']:.3f}" for p in expected
        ]

    strongest = page.locator("canvas.neuron-map")
    assert (int(strongest.get_attribute("data-row")), int(strongest.get_attribute("data-col"))) == (
        body["strongest"]["row"],
        body["strongest"]["col"],
    )
    # the strongest cell's arithmetic, drawn by the Network view's own renderer, ends in its value
    total = page.locator("#neuron-arithmetic #arith-total")
    assert float(total.get_attribute("data-value")) == pytest.approx(body["strongest"]["value"], abs=1e-5)
    ablation = page.locator("#neuron-ablation")
    assert float(ablation.get_attribute("data-after")) == pytest.approx(body["ablation"]["after"])
    sample = page.locator("#neuron-sample-ablation")
    assert float(sample.get_attribute("data-mean-change")) == pytest.approx(
        body["sample_ablation"]["mean_change"]
    )
    assert f"Over {body['sample_ablation']['images']} test images" in sample.inner_text()
    no_sideways_scroll(page)
    page.screenshot(path=tmp_path / "neuron-conv2.png", full_page=True)

    # a feeder link opens the feeding channel of pool1
    feeder = body["feeders"][0]
    page.locator(f'#neuron-feeders button.neuron-link[data-channel="{feeder["channel"]}"]').click()
    wait_for_panel(page, feeder["stage"], feeder["channel"], f"test image {index}")
    assert page.locator("#neuron-title").inner_text() == f"pool1 · channel {feeder['channel']} of 16"

    # the panel follows the input: another test image redraws it
    other = pick_test_image(page, 5)
    wait_for_panel(page, feeder["stage"], feeder["channel"], f"test image {other}")
    page.locator("#neuron-close").click()
    assert page.locator("#neuron-panel").is_hidden()


def ranking_json(explorer: str, run_id: str, test_index: int, stage: str, target: int) -> dict:
    data = {"test_index": test_index, "stage": stage, "target": target}
    response = httpx.post(f"{explorer}api/runs/{run_id}/neuron-ranking", data=data, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_grad_cam_lists_its_strongest_channels_and_opens_one_with_its_share(open_page, explorer, digits_run):
    page = open_page(width=1280, height=800)
    page.click('#tabs button[data-tab="attribution"]')
    # the view measures its default method first and may redraw at the stage it chose: wait for it
    page.wait_for_function(
        "() => !document.getElementById('attr-default').textContent.startsWith('measuring')", timeout=60_000
    )
    chosen = page.locator("#attr-stage").input_value()
    grad_cam = page.locator('#attr-maps figure.attr[data-method="grad-cam"]')
    ranking = grad_cam.locator(
        f'.neuron-ranking[data-stage="{chosen}"][data-ready="true"]'
        if chosen
        else ".neuron-ranking[data-ready=true]"
    )
    ranking.wait_for(timeout=30_000)
    stage = ranking.get_attribute("data-stage")  # the stage Grad-CAM looked at, as its caption says
    assert f" at {stage}" in grad_cam.inner_text()
    source = page.locator("#attr-maps").get_attribute("data-source")  # the maps' input: the panel's too
    index = int(source.split()[-1])
    target = int(ranking.get_attribute("data-target"))  # the class the map explains
    expected = ranking_json(explorer, digits_run.name, index, stage, target)
    lines = ranking.locator("li.neuron-ranked-channel").all()
    assert len(lines) == 8  # the strongest 8 shown, in the ranking's order, with their share
    assert [int(line.get_attribute("data-channel")) for line in lines] == [
        c["channel"] for c in expected["channels"][:8]
    ]
    for line, ranked in zip(lines, expected["channels"], strict=False):
        assert float(line.get_attribute("data-contribution")) == pytest.approx(ranked["contribution"])
        if ranked["share"] is not None:
            assert line.locator(".neuron-share").inner_text() == f"{100 * ranked['share']:.1f} %"
    folded = ranking.locator("details.neuron-channels")
    assert not folded.evaluate("d => d.open")  # the rest folded, in the same order
    assert [int(b.get_attribute("data-channel")) for b in folded.locator("button.neuron-link").all()] == [
        c["channel"] for c in expected["channels"][8:]
    ]
    channel = expected["channels"][0]["channel"]
    lines[0].locator("button.neuron-link").click()
    wait_for_panel(page, stage, channel, source)
    body = neuron_json(explorer, digits_run.name, index, stage, channel)
    share = page.locator("#neuron-grad-cam")
    assert int(share.get_attribute("data-rank")) == body["grad_cam"]["rank"] == 1
    assert float(share.get_attribute("data-contribution")) == pytest.approx(body["grad_cam"]["contribution"])
    assert "rank 1 of 32 channels" in share.inner_text()
    # a pooling or ReLU channel's kernel is that of the convolution making it
    assert page.locator("#neuron-kernel h3").inner_text() == f"Kernel (conv2, filter {channel})"


def test_a_relu2_channel_shows_its_regularised_visualization_beside_the_best_test_image(
    open_page, explorer, digits_run
):
    page = open_page(width=1280, height=800)
    page.wait_for_selector('#network .stage[data-stage="relu2"] canvas.fmap')
    page.evaluate(
        "document.dispatchEvent(new CustomEvent('open-neuron', {detail: {stage: 'relu2', channel: 3}}))"
    )
    page.wait_for_selector(f'{READY}[data-stage="relu2"][data-channel="3"]', timeout=20_000)
    page.wait_for_selector("#neuron-panel[data-pictures=ready]", timeout=60_000)
    response = httpx.get(
        f"{explorer}api/runs/{digits_run.name}/neuron-pictures", params={"stage": "relu2", "channel": 3}
    )
    picture = response.json()["visualization"]
    shown = page.locator("#neuron-visualization-activation")
    best = page.locator("#neuron-visualization-best")
    assert float(shown.get_attribute("data-value")) == pytest.approx(picture["activation"])
    assert float(best.get_attribute("data-value")) == pytest.approx(picture["best_image_activation"])
    assert shown.locator("strong").inner_text() == f"{picture['activation']:.3f}"
    assert best.locator("strong").inner_text() == f"{picture['best_image_activation']:.3f}"
    assert f"#{picture['best_image_index']}" in best.inner_text()
    canvas = page.locator("canvas.neuron-visualization")
    assert canvas.evaluate("c => [c.width, c.height, getComputedStyle(c).imageRendering]") == [
        8,
        8,
        "pixelated",
    ]
    assert canvas.bounding_box()["width"] >= 8 * 8  # enlarged
    # the pictures follow the channel, not the input: another test image keeps them, redrawn at once
    other = pick_test_image(page, 5)
    wait_for_panel(page, "relu2", 3, f"test image {other}")
    assert page.locator("#neuron-panel").get_attribute("data-pictures") == "ready"
    assert float(shown.get_attribute("data-value")) == pytest.approx(picture["activation"])


def test_the_panel_fits_a_phone_and_shows_errors_inside(open_page, digits_model):
    page = open_page(width=360, height=740, touch=True, ignore=lambda text: "status of 400" in text)
    page.click('#tabs button[data-tab="layers"]')
    page.locator('#layers-features .feature-tile[data-channel="2"]').click()
    page.locator('#layers-top button.neuron-link[data-channel="2"]').click()
    page.wait_for_selector(f'{READY}[data-stage="conv1"][data-channel="2"]', timeout=20_000)
    no_sideways_scroll(page)
    # conv1 is linear in the pixels: its centre unit's optimum is white where the kernel is positive
    model, _ = digits_model
    kernel = dict(model.stages())["conv1"].weight[2, 0].detach().numpy()  # (3, 3)
    page.wait_for_selector("#neuron-panel[data-pictures=ready]", timeout=30_000)
    optimum = page.locator("#neuron-optimum canvas")
    rgba = optimum.evaluate("c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)")
    red = np.array(rgba[::4]).reshape(kernel.shape)
    np.testing.assert_array_equal(red, np.where(kernel > 0, 255, 0))
    # a request the server refuses: its one-line error in the panel, nothing thrown at the page
    page.evaluate(
        "document.dispatchEvent(new CustomEvent('open-neuron', {detail: {stage: 'conv1', channel: 99}}))"
    )
    page.wait_for_selector("#neuron-panel[data-state=error] .error")
    assert "channel must be 0..15" in page.locator("#neuron-body .error").inner_text()
