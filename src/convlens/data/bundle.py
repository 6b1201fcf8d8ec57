"""The Dataset bundle: the one contract every reader and built-in returns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from convlens.errors import ConvlensError

# The most classes a data set (and a model) may have: labels are checked against it before
# anything is sized by a label, so a stray label of 10**12 is one clear error, not a MemoryError.
MAX_CLASSES = 10_000
# what a data set's labels are: one class per image, or one class per pixel (a mask)
TASKS = ("classification", "segmentation")
# a mask pixel with this value has no class: it is left out of the loss and every metric
# (the value segmentation tools agree on for "void" / object borders)
IGNORE_INDEX = 255


@dataclass
class Dataset:
    """Train and test images with labels, class names and the normalization to apply.

    Images are uint8 (0..255) or float32 (0..1) tensors shaped (N, C, H, W); models take
    pixels in [0, 1] and normalize inside, so ``mean``/``std`` are in [0, 1] pixel units.
    For ``task="segmentation"`` the labels are masks, one class id per pixel: uint8 or int64
    tensors shaped (N, H, W), with ``IGNORE_INDEX`` (255) where a pixel has no class.
    """

    name: str
    train_images: torch.Tensor  # (N, C, H, W) uint8 or float32
    train_labels: torch.Tensor  # (N,) int64
    test_images: torch.Tensor  # (M, C, H, W)
    test_labels: torch.Tensor  # (M,) int64
    class_names: list[str]
    mean: tuple[float, ...] = field(default=())  # one per channel, [0, 1] units
    std: tuple[float, ...] = field(default=())
    normalization_source: str = "computed on the training split"
    source: str = ""
    augmentation: str = ""  # the augmentation that keeps this data's labels (see transforms.AUGMENTATIONS)
    task: str = "classification"  # one of TASKS: a label per image, or a mask per image
    spec: str = ""  # what load_dataset was given (a built-in name or a path), to load it again later
    # (tensors, digest) once known: a cached folder brings its fingerprint, so a second run never
    # reads every pixel to hash it; trusted only while the bundle still holds those same tensors
    _known_fingerprint: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConvlensError(f"{self.name}: task must be one of {', '.join(TASKS)}, got {self.task!r}")
        for split in ("train", "test"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if images.ndim != 4:
                raise ConvlensError(
                    f"{self.name}: {split} images must be N x C x H x W, got {tuple(images.shape)}"
                )
            if images.shape[0] != labels.shape[0]:
                raise ConvlensError(
                    f"{self.name}: {images.shape[0]} {split} images but {labels.shape[0]} labels; "
                    "expected one label per image"
                )
            if self.is_segmentation and (
                labels.ndim != 3 or tuple(labels.shape[1:]) != tuple(images.shape[2:])
            ):
                raise ConvlensError(
                    f"{self.name}: {split} masks are {tuple(labels.shape)} for images "
                    f"{tuple(images.shape)}; expected one H x W mask per image, the size of its image"
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ConvlensError(
                f"{self.name}: train images are {tuple(self.train_images.shape[1:])} but test images are "
                f"{tuple(self.test_images.shape[1:])}; expected the same shape"
            )
        if len(self.train_labels) == 0:
            raise ConvlensError(f"{self.name}: no training images")
        low, top = label_range(self.train_labels, self.test_labels, self.is_segmentation)
        if top >= len(self.class_names) or low < 0:
            extra = f" (or {IGNORE_INDEX} for no class)" if self.is_segmentation else ""
            raise ConvlensError(
                f"{self.name}: labels must be 0..{len(self.class_names) - 1} for "
                f"{len(self.class_names)} classes{extra}; found {low}..{top}"
            )
        if not self.mean:
            self.mean, self.std = channel_stats(self.train_images)

    @property
    def is_segmentation(self) -> bool:
        """Whether the labels are masks (a class per pixel) rather than a class per image."""
        return self.task == "segmentation"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)

    def fingerprint(self) -> str:
        """A short hash of the pixels and labels, stored in checkpoints to tell data sets apart.

        Hashed a few MiB at a time (the same digest as hashing everything at once), so a large
        data set is never copied whole to be hashed."""
        known = self._known_fingerprint
        if known is not None and all(a is b for a, b in zip(known[0], self._tensors(), strict=True)):
            return known[1]
        digest = hashlib.sha256()
        for tensor in self._tensors():
            digest.update(str(tuple(tensor.shape)).encode())
            hash_rows(digest, tensor)
        return digest.hexdigest()[:16]

    def remember_fingerprint(self, fingerprint: str) -> None:
        """Record the fingerprint of the tensors held now (computed while they were written)."""
        self._known_fingerprint = (self._tensors(), fingerprint)

    def summary(self) -> dict:
        """Plain facts for listings and JSON."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "classes": len(self.class_names),
            "class_names": self.class_names,
            "train": int(self.train_labels.shape[0]),
            "test": int(self.test_labels.shape[0]),
            "source": self.source,
            "task": self.task,
        }


def label_range(train: torch.Tensor, test: torch.Tensor, masks: bool) -> tuple[int, int]:
    """The smallest and largest class id in both splits; a mask's ``IGNORE_INDEX`` pixels are
    not class ids and are left out (a split of nothing but ignored pixels counts as 0..0)."""
    low, top = 0, 0
    for labels in (train, test):
        if not labels.numel():
            continue
        values = labels.reshape(-1)
        if masks:
            values = values[values != IGNORE_INDEX]
            if not values.numel():
                continue
        low, top = min(low, int(values.min())), max(top, int(values.max()))
    return low, top


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 or float 0..1 → float32 in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


HASH_BYTES = 8 * 2**20  # bytes hashed (and counted) at a time: bounded memory for any data set


def _row_chunk(tensor: torch.Tensor) -> int:
    """Rows per chunk of ``tensor`` so one chunk holds about HASH_BYTES."""
    row = max(1, tensor[:1].numel() * tensor.element_size())
    return max(1, HASH_BYTES // row)


def hash_rows(digest, tensor: torch.Tensor) -> None:
    """Feed ``tensor``'s bytes (C order) to ``digest`` a chunk of rows at a time."""
    if tensor.ndim == 0:
        digest.update(tensor.contiguous().numpy().tobytes())
        return
    step = _row_chunk(tensor)
    for start in range(0, tensor.shape[0], step):
        digest.update(tensor[start : start + step].contiguous().numpy().tobytes())


class PixelCounts:
    """Per-channel counts of each uint8 value, added up chunk by chunk: the exact integers that
    give a data set's mean and std without ever holding it as floats."""

    def __init__(self, channels: int):
        self.counts = np.zeros((channels, 256), dtype=np.int64)

    def add(self, images: torch.Tensor) -> None:
        """Count a (N, C, H, W) uint8 chunk."""
        array = images.numpy() if isinstance(images, torch.Tensor) else images
        for channel in range(self.counts.shape[0]):
            self.counts[channel] += np.bincount(array[:, channel].reshape(-1), minlength=256)

    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Mean and std in [0, 1] units, as ``channel_stats`` computes them from float pixels.

        Each value is weighted as the float32 pixel ``to_float`` makes of it, so the rounded
        figures agree with summing those floats (the normalization a checkpoint stores)."""
        values = (torch.arange(256, dtype=torch.float32) / 255.0).double().numpy()  # to_float's pixels
        count = self.counts.sum(axis=1).astype(np.float64)  # per channel
        mean = (self.counts * values).sum(axis=1) / count
        mean_sq = (self.counts * values**2).sum(axis=1) / count
        std = np.sqrt(np.maximum(mean_sq - mean**2, 1e-12))
        return tuple(round(float(m), 6) for m in mean), tuple(round(max(float(s), 1e-3), 6) for s in std)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units, computed in chunks so 60k images stay cheap.

    uint8 images are counted (``PixelCounts``): a few MiB at a time, whatever the data set's size."""
    channels = images.shape[1]
    if images.dtype == torch.uint8:
        counts = PixelCounts(channels)
        step = _row_chunk(images)
        for start in range(0, images.shape[0], step):
            counts.add(images[start : start + step].contiguous())
        return counts.stats()
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for start in range(0, images.shape[0], 10_000):
        chunk = to_float(images[start : start + 10_000]).double()
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += (chunk**2).sum(dim=(0, 2, 3))
        count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(1e-12).sqrt()
    return tuple(round(float(m), 6) for m in mean), tuple(round(max(float(s), 1e-3), 6) for s in std)
