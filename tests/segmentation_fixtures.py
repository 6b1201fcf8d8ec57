"""A small segmentation run for the explorer's tests: coloured squares on noise, saved as an .npz
(so the run's test images reload from its own data spec) and trained two epochs (seconds: a narrow, shallow U-Net);
the built-in ``scenes`` would take minutes per epoch here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ["background", "red", "green"]
SIZE = 32


def _squares(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    images = (rng.random((count, 3, SIZE, SIZE)) * 0.5 * 255).astype(np.float32)
    masks = np.zeros((count, SIZE, SIZE), dtype=np.uint8)
    for index in range(count):
        for label in (1, 2):
            row, col = rng.integers(0, SIZE - 8, size=2)
            side = int(rng.integers(4, 9))
            images[index, label - 1, row : row + side, col : col + side] += 0.5 * 255
            masks[index, row : row + side, col : col + side] = label
    masks[:, :1, :] = 255  # a row of "no class", as real masks have
    return images.clip(0, 255).astype(np.uint8), masks


def squares_npz(folder: Path) -> Path:
    """An .npz of 240 training and 60 test images with their masks (background, red, green)."""
    rng = np.random.default_rng(0)
    images, masks = _squares(240, rng)
    images_test, masks_test = _squares(60, rng)
    path = folder / "squares.npz"
    np.savez(
        path,
        images=images,
        masks=masks,
        images_test=images_test,
        masks_test=masks_test,
        class_names=np.array(CLASSES),
    )
    return path


def train_squares(folder: Path, run_dir: Path, epochs: int = 2) -> Path:
    """A U-Net trained on ``squares_npz``; returns the run folder."""
    from convlens.data import load_dataset
    from convlens.train import TrainConfig, fit

    dataset = load_dataset(str(squares_npz(folder)))
    config = TrainConfig(
        model="unet", model_options={"width": 8, "depth": 2}, epochs=epochs, seed=0, snapshots=False
    )
    fit(dataset, config, run_dir, overwrite=True)
    return run_dir


_TRAINED: dict[str, Path] = {}  # one training per test session, whichever test module asks first


def squares_run_once(tmp_path_factory) -> Path:
    """``train_squares`` once per session (several test modules share the run; it is only read)."""
    if "run" not in _TRAINED:
        folder = tmp_path_factory.mktemp("squares-data")
        _TRAINED["run"] = train_squares(folder, tmp_path_factory.mktemp("squares-run"))
    return _TRAINED["run"]
