"""Does the network use which pixels are neighbours? Shuffle the pixels and find out.

One fixed permutation of the pixel positions is applied to every image (train and test).
No information is lost — a dense network sees the same numbers in another order and can
learn just as well — but neighbours are no longer neighbours, so a CNN, whose 3×3 kernels
only ever look at adjacent pixels, loses what it relies on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from convlens.data import Dataset
from convlens.lab._common import (
    LabResult,
    check_positive,
    register_experiment,
    subset,
    train_quick,
    with_images,
)


def shuffle_pixels(images: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Move pixel position i to permutation[i] in every image and channel; (N, C, H, W) → same shape."""
    n, c, h, w = images.shape
    return images.reshape(n, c, h * w)[:, :, permutation].reshape(n, c, h, w)


@dataclass
class LocalityResult(LabResult):
    dataset: str
    epochs: int
    train_images: int
    test_images: int
    accuracy: dict[str, dict[str, float]]  # model -> {"original", "shuffled"}
    seconds: float = 0.0

    def drop(self, model: str) -> float:
        """Accuracy lost to shuffling, in points of fraction (0.1 = 10 points)."""
        return self.accuracy[model]["original"] - self.accuracy[model]["shuffled"]


def run(
    dataset: Dataset,
    epochs: int = 6,
    models: tuple[str, ...] = ("convnet", "mlp"),
    train_limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
    progress=None,
) -> LocalityResult:
    """Train each model on original and on pixel-shuffled images; the four test accuracies.

    ``progress(models trained, models to train, what)`` before each training and at the end.
    """
    check_positive("epochs", epochs)
    data = subset(dataset, train_limit, test_limit, seed)
    height, width = data.input_shape[1:]
    permutation = torch.randperm(height * width, generator=torch.Generator().manual_seed(seed))
    shuffled = with_images(
        data,
        shuffle_pixels(data.train_images, permutation),
        shuffle_pixels(data.test_images, permutation),
        f"{data.name}-shuffled",
    )
    accuracy: dict[str, dict[str, float]] = {}
    total = 2 * len(models)
    for index, model in enumerate(models):
        accuracy[model] = {}
        for offset, (kind, images) in enumerate((("original", data), ("shuffled", shuffled))):
            if progress is not None:
                progress(2 * index + offset, total, f"training {model} on {kind} pixels")
            accuracy[model][kind] = train_quick(images, model, epochs, seed)[1]
    if progress is not None:
        progress(total, total, "done")
    return LocalityResult(
        dataset=dataset.name,
        epochs=epochs,
        train_images=int(data.train_labels.shape[0]),
        test_images=int(data.test_labels.shape[0]),
        accuracy=accuracy,
    )


register_experiment(
    "locality",
    run,
    quick={"epochs": 1, "train_limit": 500, "test_limit": 200},
    help="CNN and MLP on original vs pixel-shuffled images: who needs neighbours?",
)
