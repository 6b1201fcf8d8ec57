"""Shared fixtures: small real data and trained checkpoints, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; Playwright never downloads a browser here
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

# Tests must not depend on (or fill) the user's cache folder.
os.environ.setdefault(
    "CONVLENS_CACHE_DIR", str(Path(__file__).parent.parent / ".pytest_cache" / "convlens-data")
)
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits as a Dataset bundle (1,437 train / 360 test)."""
    from convlens.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory, digits) -> Path:
    """A convnet trained on digits for 8 epochs (about a second); returns the run folder."""
    from convlens.train import TrainConfig, fit

    run_dir = tmp_path_factory.mktemp("digits-run")
    fit(digits, TrainConfig(model="convnet", epochs=8, seed=0), run_dir, overwrite=True)
    return run_dir


@pytest.fixture(scope="session")
def digits_model(digits_run):
    """(model, metadata) of the trained digits convnet, in eval mode."""
    from convlens.checkpoint import load_checkpoint

    return load_checkpoint(digits_run)


@pytest.fixture(scope="session")
def photo_run(tmp_path_factory) -> Path:
    """A convnet trained 3 epochs on an RGB folder of 16x16 crops of three scikit-image photos
    (astronaut, cat, coffee; about two seconds): a colour run with BatchNorm, as a user's
    photo folder gets. Returns the run folder."""
    import numpy as np
    import skimage.data
    from PIL import Image

    from convlens.data import load_dataset
    from convlens.train import TrainConfig, fit

    root = tmp_path_factory.mktemp("photo-folder")
    rng = np.random.default_rng(0)
    for label, photo in (("astronaut", skimage.data.astronaut()), ("cat", skimage.data.chelsea()),
                         ("coffee", skimage.data.coffee())):  # fmt: skip
        for split, count in (("train", 24), ("test", 6)):
            (root / split / label).mkdir(parents=True)
            for index in range(count):
                top, left = (int(rng.integers(0, size - 64)) for size in photo.shape[:2])
                crop = Image.fromarray(photo[top : top + 64, left : left + 64]).resize((16, 16))
                crop.save(root / split / label / f"{index}.png")
    run_dir = tmp_path_factory.mktemp("photo-run")
    fit(load_dataset(root), TrainConfig(model="convnet", epochs=3, seed=0), run_dir, overwrite=True)
    return run_dir


@pytest.fixture(scope="session")
def mnist5k_trained(tmp_path_factory):
    """(model, images, labels): the default convnet trained 3 epochs on mnist5k (a few seconds)
    and 100 of its test images, 10 per class."""
    from convlens.checkpoint import load_checkpoint
    from convlens.data import load_dataset
    from convlens.train import TrainConfig, fit

    dataset = load_dataset("mnist5k")
    run_dir = tmp_path_factory.mktemp("mnist5k-run")
    fit(dataset, TrainConfig(epochs=3, seed=0), run_dir, overwrite=True)
    model, _ = load_checkpoint(run_dir)
    labels = dataset.test_labels
    chosen = torch.cat([torch.nonzero(labels == c).flatten()[:10] for c in range(10)])
    return model, dataset.test_images[chosen].float() / 255, labels[chosen]


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run `convlens ARGS...` in-process; returns (exit_code, stdout, stderr)."""
    from convlens.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.argv", ["convlens", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="session")
def chromium():
    """Debian's Chromium driven by Playwright, shared by every browser test; skips without it."""
    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium (apt install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_page(chromium, explorer):
    """``open_page(width=1400, height=900, touch=False, path="", ready=True, ignore=None)``: an
    explorer page (the test module's ``explorer`` URL) in a browser context of its own, that fails
    the test on a script error, a console error (unless ``ignore(text)`` says it is expected) or
    any request that leaves the explorer: the page works offline."""
    contexts = []
    problems: list[str] = []

    def open_(width=1400, height=900, touch=False, path="", ready=True, ignore=None):
        context = chromium.new_context(viewport={"width": width, "height": height}, has_touch=touch)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on(
            "console",
            lambda m: (
                problems.append(m.text) if m.type == "error" and not (ignore and ignore(m.text)) else None
            ),
        )
        page.on(
            "request",
            lambda r: (
                None
                if r.url.startswith((explorer, "data:", "blob:"))
                else problems.append(f"left the explorer: {r.url}")
            ),
        )
        page.goto(explorer + path)
        if ready:
            page.wait_for_selector("body[data-ready=true]", timeout=20_000)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert problems == [], problems
