"""A small segmentation run for the explorer's tests: coloured squares on noise, saved as an .npz
(so the run's test images reload from its own data spec) and trained two epochs (seconds: a narrow, shallow U-Net);
the built-in ``scenes`` would take minutes per epoch here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

CLASSES = ["background", "red", "green"]
SIZE = 32


def squares(count: int, seed: int, side: int = SIZE, no_class_row: bool = True):
    """``count`` noise images (float (N, 3, side, side) in [0, 1]) with a red and a green square,
    and their masks (uint8: 0 background, 1 red, 2 green; with ``no_class_row`` the top row is
    255, "no class", as real masks mark outlines). The one square maker every segmentation test
    shares."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 3, side, side, generator=generator) * 0.5
    masks = torch.zeros(count, side, side, dtype=torch.uint8)
    for index in range(count):
        for label in (1, 2):
            row, col = torch.randint(0, side - 8, (2,), generator=generator).tolist()
            size = int(torch.randint(4, 9, (1,), generator=generator))
            images[index, label - 1, row : row + size, col : col + size] += 0.5
            masks[index, row : row + size, col : col + size] = label
    if no_class_row:
        masks[:, 0, :] = 255
    return images.clamp(0, 1), masks


def as_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images in [0, 1] as the uint8 (N, C, H, W) array an .npz of pixels holds."""
    return (images * 255).round().to(torch.uint8).numpy()


def squares_npz(folder: Path) -> Path:
    """An .npz of 240 training and 60 test images with their masks (background, red, green)."""
    images, masks = squares(240, 0)
    images_test, masks_test = squares(60, 1)
    path = folder / "squares.npz"
    np.savez(
        path,
        images=as_uint8(images),
        masks=masks.numpy(),
        images_test=as_uint8(images_test),
        masks_test=masks_test.numpy(),
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
