"""Takes the explorer's screenshots used by README.md and docs/explorer.md (docs/img/explorer-*.png,
docs/img/train-view.png and docs/img/playground2d.png).

    convlens train --data mnist5k --out runs/mnist
    python scripts/explorer_screenshots.py runs/mnist            # writes docs/img/explorer-*.png

Serves RUN_DIR on 127.0.0.1 and drives Debian's Chromium (/usr/bin/chromium) with Playwright,
as the browser tests do; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
VIEWPORT = {"width": 1360, "height": 860}
SHOWN_CLASS = "7"  # the test image every view shows, as in the screenshots' captions


def take(page, out: Path, name: str, ready: str, full_page: bool = False) -> None:
    page.wait_for_selector(ready, timeout=60_000)
    page.wait_for_timeout(600)  # let the last colour bars and links settle
    page.screenshot(path=out / f"explorer-{name}.png", full_page=full_page)
    print(f"wrote {out / f'explorer-{name}.png'}")


def clearest_example(url: str, page) -> str:
    """The strip's test image of SHOWN_CLASS that the model is surest of (the pictures read best)."""
    import httpx

    run_id = page.locator("#run-select").input_value()
    thumbs = page.locator(f'#test-strip canvas.thumb[title$=": {SHOWN_CLASS}"]').all()
    indices = [thumb.get_attribute("data-index") for thumb in thumbs]

    def confidence(index: str) -> float:
        body = httpx.post(f"{url}api/runs/{run_id}/predict", data={"test_index": index}, timeout=30).json()
        names = [entry["class"] for entry in body["top"]]
        return body["top"][names.index(SHOWN_CLASS)]["probability"] if SHOWN_CLASS in names else 0.0

    return max(indices, key=confidence)


def tab(page, name: str) -> None:
    page.click(f'#tabs button[data-tab="{name}"]')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder written by `convlens train`")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent.parent / "docs" / "img")
    options = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from convlens.server.background import BackgroundServer

    run_dir, out = options.run_dir.resolve(), options.out.resolve()
    scratch = tempfile.TemporaryDirectory()  # the Train view's run goes here, not into the repository
    os.chdir(scratch.name)  # so the Train view names its runs folder "runs", not a temporary path
    with (
        scratch,
        BackgroundServer([run_dir], runs_dir=Path("runs"), max_trainings=1) as url,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        index = clearest_example(url, page)
        page.locator(f'#test-strip canvas.thumb[data-index="{index}"]').click()
        take(page, out, "overview", f'#network[data-source="test image {index}"]')

        fmap = page.locator('.stage[data-stage="conv1"] canvas.fmap').nth(2)
        box = fmap.bounding_box()
        fmap.click(position={"x": box["width"] * 0.45, "y": box["height"] * 0.3})
        take(page, out, "arithmetic", "#arith-total", full_page=True)

        tab(page, "playground")
        page.click('#pg-presets button[data-kernel="edge"]')
        page.select_option("#pg-picture", "smiley")
        page.click("#pg-reset")
        for _ in range(9):
            page.click("#pg-step-button")
        take(page, out, "playground", "#pg-sum")

        tab(page, "attribution")
        take(page, out, "attribution", f'#attr-maps[data-source="test image {index}"]')

        tab(page, "attack")
        page.locator("#attack-eps").fill("0.15")
        take(page, out, "attack", '#attack-verdict:has-text("ε = 0.15")')

        tab(page, "layers")
        take(page, out, "layers", "#layers-features canvas.feature", full_page=True)

        page.evaluate(  # the panel a channel link opens (Network, Where it looks, What layers learned)
            "document.dispatchEvent(new CustomEvent('open-neuron', {detail: {stage: 'relu2', channel: 3}}))"
        )
        page.wait_for_selector('#neuron-panel[data-state=ready][data-stage="relu2"]', timeout=60_000)
        take(page, out, "neuron", "#neuron-panel[data-pictures=ready]")
        page.locator("#neuron-close").click()

        tab(page, "card")
        take(page, out, "card", "#card-confusion", full_page=True)

        tab(page, "playground2d")  # the spiral, trained live for a while, then paused
        page.wait_for_selector("#pg2-test-loss[data-value]", timeout=20_000)
        page.click("#pg2-play")
        page.wait_for_timeout(6_000)
        page.click("#pg2-play")
        page.wait_for_selector("#pg2-play:not([data-waiting])")
        page.wait_for_timeout(600)
        page.screenshot(path=out / "playground2d.png")
        print(f"wrote {out / 'playground2d.png'}")

        tab(page, "train")  # a small digits model trained from the page, its curves and snapshots
        page.select_option("#train-data", "digits")
        page.select_option("#train-model", "convnet")
        page.fill("#train-epochs", "8")
        page.click("#train-start")
        page.wait_for_selector('#train-curves[data-run^="digits-convnet"]', timeout=60_000)
        page.wait_for_selector(
            '#train-curves[data-run^="digits-convnet"][data-done=finished]', timeout=300_000
        )
        page.wait_for_timeout(1_000)
        page.screenshot(path=out / "train-view.png")
        print(f"wrote {out / 'train-view.png'}")
        browser.close()


if __name__ == "__main__":
    main()
