"""An imported model's graph in the explorer (Debian Chromium, Playwright): a small ResNet in
torchvision's layout opened with ``Run.from_model`` shows its skip connections and downsample
branch as edges over the Network view, its heads and model card say what each stage reads, an
add cell's arithmetic adds up, and Grad-CAM and an attack work on it, without a console error.
"""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pytest

from any_models import SHAPE, TinyResNet, trained

pytestmark = pytest.mark.browser  # the `chromium` fixture (conftest.py) skips without /usr/bin/chromium


@pytest.fixture(scope="module")
def explorer(tmp_path_factory, digits_run):
    """The imported ResNet first, and the digits convnet (a chain) to switch to."""
    from convlens import Run
    from convlens.server.background import BackgroundServer

    folder = tmp_path_factory.mktemp("imported") / "tinyresnet"
    Run.from_model(trained(TinyResNet(), 1), folder, class_names="cat,dog,bird", input_shape=SHAPE)
    with BackgroundServer([folder, digits_run]) as url:
        yield url


@pytest.fixture
def picture(tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(3).integers(0, 256, (SHAPE[1], SHAPE[2], 3), dtype=np.uint8)
    path = tmp_path / "picture.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def page(open_page, picture):
    page = open_page(height=1000)
    page.set_input_files("#upload-input", str(picture))  # an imported run names no test images
    page.wait_for_selector('#network[data-source^="upload"] .stage[data-stage="layer2.0.add"] canvas.fmap')
    return page


def edge(page, source: str, target: str):
    return page.locator(f'svg.branch-edges .branch-edge[data-from="{source}"][data-to="{target}"]')


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_an_imported_resnet_shows_its_graph_and_explains_it(page, tmp_path):
    assert "no data set" in page.locator("#test-strip").inner_text()
    # the skips, the downsample branch and both inputs of each merge are edges, titled in words
    expected = {
        ("layer1.0.bn2", "layer1.0.add"),
        ("maxpool", "layer1.0.add"),
        ("layer1.0.relu_1", "layer2.0.downsample.0"),
        ("layer2.0.bn2", "layer2.0.add"),
        ("layer2.0.downsample.1", "layer2.0.add"),
    }
    edges = page.locator("svg.branch-edges .branch-edge")
    assert {(e.get_attribute("data-from"), e.get_attribute("data-to")) for e in edges.all()} == expected
    branch = edge(page, "layer2.0.downsample.1", "layer2.0.add")
    assert branch.locator("title").text_content() == "layer2.0.add reads layer2.0.downsample.1"
    # visible: a drawn line from the source column's middle to the merge's, no two sharing a lane
    spans = {}
    for e in edges.all():
        box = e.locator("path.line").bounding_box()
        assert box["width"] > 10 and box["height"] > 4, box
        spans.setdefault(e.get_attribute("data-lane"), []).append((box["x"], box["x"] + box["width"]))
    for lane in spans.values():
        lane.sort()
        assert all(a[1] < b[0] for a, b in itertools.pairwise(lane)), spans
    # the heads say it in words too; a stage reading the column before it says nothing
    reads = page.locator('.stage[data-stage="layer2.0.add"] .stage-head .stage-reads')
    assert reads.inner_text() == "reads layer2.0.bn2 and layer2.0.downsample.1"
    assert (
        "reads layer1.0.relu_1"
        in page.locator('.stage[data-stage="layer2.0.downsample.0"] .stage-head').inner_text()
    )
    assert page.locator('.stage[data-stage="layer2.0.conv2"] .stage-reads').count() == 0
    assert page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth"
    )  # no sideways page scroll

    page.locator("#network").evaluate(  # layer2.0's block from its input on: both branches in view
        """box => box.scrollLeft += box.querySelector('.stage[data-stage="layer1.0.relu_1"] .stage-head')
             .getBoundingClientRect().left - box.getBoundingClientRect().left - 50"""
    )
    shot = tmp_path / "imported-network.png"
    page.locator(".network-row").screenshot(path=shot)
    width, height = png_size(shot)
    assert width > 400 and height > 200 and shot.stat().st_size > 10_000

    # an add cell: the values of both inputs, named, add up to the total shown
    cell = page.locator('.stage[data-stage="layer2.0.add"] canvas.fmap[data-channel="2"]')
    box = cell.bounding_box()
    cell.click(position={"x": box["width"] / 2, "y": box["height"] / 2})
    page.wait_for_selector("#arith-total")
    assert (
        page.locator("#arithmetic h3").inner_text().startswith("layer2.0.add (add): channel 2, row 1, col 1")
    )
    rows = page.locator('#arithmetic table:has(caption:text("the values added")) tr').all()[1:]
    assert [r.locator("td").first.inner_text() for r in rows] == ["layer2.0.bn2", "layer2.0.downsample.1"]
    shown = [float(r.locator("td").nth(1).inner_text()) for r in rows]
    total = page.locator("#arith-total")
    assert sum(shown) == pytest.approx(float(total.inner_text()), abs=1.5e-4)  # each rounded to 4 decimals
    exact = [float(r.locator("td").nth(1).get_attribute("data-value")) for r in rows]
    assert sum(exact) == pytest.approx(float(total.get_attribute("data-value")), abs=1e-5)
    assert "layer2.0.bn2 + layer2.0.downsample.1 =" in page.locator("#arithmetic .equation").inner_text()
    assert page.locator("#arithmetic .agreement").count() == 1
    # clicked, the add's window is outlined in both stages it adds
    for source in ("layer2.0.bn2", "layer2.0.downsample.1"):
        assert page.locator(f'svg.network-links rect.window[data-stage="{source}"]').count() >= 1

    page.click('#tabs button[data-tab="card"]')
    page.wait_for_selector('#card-stages td.stage-reads[data-reads="layer2.0.bn2 layer2.0.downsample.1"]')
    assert page.locator("#card-stages tr").count() == 26  # header, 24 stages, softmax

    page.click('#tabs button[data-tab="attribution"]')
    page.wait_for_selector("#attr-maps canvas.attr-overlay[data-method=grad-cam]", timeout=30_000)
    assert page.locator("#attr-maps .error").count() == 0
    page.click('#tabs button[data-tab="attack"]')
    page.wait_for_selector("#attack-verdict[data-prediction]", timeout=30_000)
    assert page.locator("#attack-images canvas").count() >= 2


def test_a_chain_gets_no_lanes_and_no_reads(page, digits_run):
    """A convlens-built model reads stage by stage: its network looks as it always did."""
    assert page.locator("#branch-lanes").count() == 1
    page.select_option("#run-select", digits_run.name)
    page.wait_for_selector('#network .stage[data-stage="conv2"] canvas.fmap')
    assert page.locator("#branch-lanes, .stage-reads, .stage-head.reads-branch").count() == 0
    heads = page.locator("#network .stage-head").evaluate_all("heads => heads.map((h) => h.style.gridRow)")
    assert set(heads) == {"1"}
    page.click('#tabs button[data-tab="card"]')
    page.wait_for_selector("#card-stages")
    page.wait_for_timeout(300)  # the reads column would come from GET /network
    assert page.locator("#card-stages td.stage-reads").count() == 0
