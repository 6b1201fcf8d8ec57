"""The Dataset bundle: the one contract every reader and built-in returns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from convlens.errors import ConvlensError

# The most classes a data set (and a model) may have: labels are checked against it before
# anything is sized by a label, so a stray label of 10**12 is one clear error, not a MemoryError.
MAX_CLASSES = 10_000


@dataclass
class Dataset:
    """Train and test images with labels, class names and the normalization to apply.

    Images are uint8 (0..255) or float32 (0..1) tensors shaped (N, C, H, W); models take
    pixels in [0, 1] and normalize inside, so ``mean``/``std`` are in [0, 1] pixel units.
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
    spec: str = ""  # what load_dataset was given (a built-in name or a path), to load it again later

    def __post_init__(self) -> None:
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
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ConvlensError(
                f"{self.name}: train images are {tuple(self.train_images.shape[1:])} but test images are "
                f"{tuple(self.test_images.shape[1:])}; expected the same shape"
            )
        if len(self.train_labels) == 0:
            raise ConvlensError(f"{self.name}: no training images")
        top = int(max(self.train_labels.max(), self.test_labels.max() if len(self.test_labels) else 0))
        if top >= len(self.class_names) or int(self.train_labels.min()) < 0:
            raise ConvlensError(
                f"{self.name}: labels must be 0..{len(self.class_names) - 1} for {len(self.class_names)} classes"
            )
        if not self.mean:
            self.mean, self.std = channel_stats(self.train_images)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def fingerprint(self) -> str:
        """A short hash of the pixels and labels, stored in checkpoints to tell data sets apart."""
        digest = hashlib.sha256()
        for tensor in (self.train_images, self.train_labels, self.test_images, self.test_labels):
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

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
        }


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 or float 0..1 → float32 in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units, computed in chunks so 60k images stay cheap."""
    channels = images.shape[1]
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
