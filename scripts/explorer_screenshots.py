"""Takes the explorer's screenshots used by README.md and docs/explorer.md (docs/img/explorer-*.png).

    convlens train --data mnist5k --out runs/mnist
    python scripts/explorer_screenshots.py runs/mnist            # writes docs/img/explorer-*.png

Serves RUN_DIR on 127.0.0.1 and drives Debian's Chromium (/usr/bin/chromium) with Playwright,
as the browser tests do; nothing is downloaded.
"""

from __future__ import annotations

import argparse
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

    with BackgroundServer([options.run_dir]) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        index = clearest_example(url, page)
        page.locator(f'#test-strip canvas.thumb[data-index="{index}"]').click()
        take(page, options.out, "overview", f'#network[data-source="test image {index}"]')

        fmap = page.locator('.stage[data-stage="conv1"] canvas.fmap').nth(2)
        box = fmap.bounding_box()
        fmap.click(position={"x": box["width"] * 0.45, "y": box["height"] * 0.3})
        take(page, options.out, "arithmetic", "#arith-total", full_page=True)

        tab(page, "playground")
        page.click('#pg-presets button[data-kernel="edge"]')
        page.select_option("#pg-picture", "smiley")
        page.click("#pg-reset")
        for _ in range(9):
            page.click("#pg-step-button")
        take(page, options.out, "playground", "#pg-sum")

        tab(page, "attribution")
        take(page, options.out, "attribution", f'#attr-maps[data-source="test image {index}"]')

        tab(page, "attack")
        page.locator("#attack-eps").fill("0.15")
        take(page, options.out, "attack", '#attack-verdict:has-text("ε = 0.15")')

        tab(page, "layers")
        take(page, options.out, "layers", "#layers-features canvas.feature", full_page=True)

        tab(page, "card")
        take(page, options.out, "card", "#card-confusion", full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
