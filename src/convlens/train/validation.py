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

The split's indices are remembered on disk (``cache_dir()/splits/``, keyed by the labels, the
fraction and scikit-learn's version): computing them imports scikit-learn, about a second of a
run's start, which a second run of the same data then skips.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io

import numpy as np
import torch

from convlens.data import Dataset, cache_dir
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
            "rule": "stratified, seed 0, carved from the training split; chooses the epoch, detects "
            "divergence, and stops early when it holds at least 100 images"
            if self.has_validation
            else "none (fewer than 5 training images in a class): decisions use the training loss",
        }


def validation_split(dataset: Dataset, fraction: float) -> Split:
    """Hold out a stratified ``fraction`` of the training split (see the module docstring).

    Segmentation images have no one class to stratify by: they are held out at random (the same
    seeded split, every image in one stratum)."""
    if dataset.is_segmentation:
        labels = np.zeros(int(dataset.train_labels.shape[0]), dtype=np.int64)
    else:
        labels = dataset.train_labels.numpy()
    counts = np.bincount(labels, minlength=dataset.num_classes)
    present = counts[counts > 0]
    if fraction <= 0 or len(present) == 0 or present.min() < MIN_PER_CLASS:
        return Split(dataset.train_images, dataset.train_labels, None, None)
    size = min(max(round(fraction * len(labels)), len(present)), MAX_VALIDATION)
    train_index, val_index = remembered_split(labels, size / len(labels))
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


def remembered_split(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``stratified_split(labels, fraction, SEED)``, read from disk when an earlier run stored it.

    A stored split is used only if it is a split of exactly these images of the size asked for
    (sorted, disjoint, covering every index); anything else is computed again. Storing is best
    effort: a cache folder that cannot be written costs only the time."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        sklearn = version("scikit-learn")
    except PackageNotFoundError:
        sklearn = "?"
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    key = hashlib.sha256(labels.tobytes() + f"|{fraction!r}|{SEED}|{sklearn}".encode()).hexdigest()[:24]
    path = cache_dir() / "splits" / f"{key}.npz"
    counts = np.bincount(labels)
    expected = max(round(len(labels) * fraction), int((counts > 0).sum()))  # as stratified_split sizes it
    with contextlib.suppress(OSError, ValueError, KeyError, EOFError):
        with np.load(path, allow_pickle=False) as stored:
            train, held = stored["train"], stored["held_out"]
        if _is_split(train, held, len(labels), expected):
            return train.astype(np.int64), held.astype(np.int64)
    train, held = stratified_split(labels, fraction, SEED)
    with contextlib.suppress(OSError):
        from convlens.storage import atomic_write

        buffer = io.BytesIO()
        np.savez(buffer, train=train, held_out=held)
        atomic_write(path, buffer.getvalue(), durable=False)
    return train, held


def _is_split(train: np.ndarray, held: np.ndarray, count: int, held_size: int) -> bool:
    if train.ndim != 1 or held.ndim != 1 or len(held) != held_size or len(train) + len(held) != count:
        return False
    if not np.issubdtype(train.dtype, np.integer) or not np.issubdtype(held.dtype, np.integer):
        return False
    together = np.zeros(count, dtype=np.int64)
    if (len(train) and (train.min() < 0 or train.max() >= count)) or (
        len(held) and (held.min() < 0 or held.max() >= count)
    ):
        return False
    np.add.at(together, train, 1)
    np.add.at(together, held, 1)
    return bool((together == 1).all() and (np.diff(train) > 0).all() and (np.diff(held) > 0).all())
