"""The validation split: carved out of the training split, used for every decision training makes.

Early stopping, the divergence guard's spike rule and which epoch becomes ``model.*`` look at
validation images only; the test split is evaluated for reporting, never to choose. The split
is stratified with a fixed seed (0), so every run on the same data (and ``--resume``) holds out
the same images. Size rule: ``validation_fraction`` of the training images (10 %), at least one
per class and at most 5,000; no split when a class has fewer than 5 training images (then the
training loss stands in, and the run says so).

A data set read from the folder cache (``data.rows``) is split by index (``Rows``): the
training and validation images stay in the file and are read a batch at a time, so holding
out a split copies nothing.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from convlens.data import Dataset
from convlens.data.rows import Rows, is_mapped
from convlens.data.transforms import stratified_split

MAX_VALIDATION = 5_000
MIN_PER_CLASS = 5
SEED = 0


@dataclasses.dataclass
class Split:
    """The images the optimizer trains on, and the validation images held out from them."""

    train_images: torch.Tensor | Rows  # (N, C, H, W)
    train_labels: torch.Tensor  # (N,)
    val_images: torch.Tensor | Rows | None  # (V, C, H, W), None: no validation split
    val_labels: torch.Tensor | None

    @property
    def has_validation(self) -> bool:
        return self.val_labels is not None

    @property
    def validation_size(self) -> int:
        return 0 if self.val_labels is None else int(self.val_labels.shape[0])

    def training_on(self, device: torch.device) -> Split:
        """The split with its training images on ``device``, where every batch is then indexed (no
        copy per step on a GPU, none at all on the CPU); validation stays put, evaluated in batches."""
        return dataclasses.replace(
            self, train_images=self.train_images.to(device), train_labels=self.train_labels.to(device)
        )

    def describe(self) -> dict:
        """Facts for the checkpoint: sizes and the rule, so a reader knows what each figure is of."""
        return {
            "train": int(self.train_labels.shape[0]),
            "validation": self.validation_size,
            "rule": "stratified, seed 0, carved from the training split; chooses the epoch, stops early, "
            "detects divergence"
            if self.has_validation
            else "none (fewer than 5 training images in a class): decisions use the training loss",
        }


def validation_split(dataset: Dataset, fraction: float) -> Split:
    """Hold out a stratified ``fraction`` of the training split (see the module docstring)."""
    labels = dataset.train_labels.numpy()
    counts = np.bincount(labels, minlength=dataset.num_classes)
    present = counts[counts > 0]
    if fraction <= 0 or len(present) == 0 or present.min() < MIN_PER_CLASS:
        return Split(dataset.train_images, dataset.train_labels, None, None)
    size = min(max(round(fraction * len(labels)), len(present)), MAX_VALIDATION)
    train_index, val_index = stratified_split(labels, size / len(labels), SEED)
    train_index, val_index = torch.from_numpy(train_index), torch.from_numpy(val_index)
    if is_mapped(dataset.train_images):  # read from a file: select, never copy
        images = dataset.train_images
        return Split(
            Rows(images, train_index),
            dataset.train_labels[train_index],
            Rows(images, val_index),
            dataset.train_labels[val_index],
        )
    return Split(
        dataset.train_images[train_index],
        dataset.train_labels[train_index],
        dataset.train_images[val_index],
        dataset.train_labels[val_index],
    )
