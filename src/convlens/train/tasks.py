"""What the trainer needs to know about a task: its loss, what counts as right, how it augments.

The epoch loop, the guard, resume, DDP and checkpoints are the same for every task; a task says
what one batch's targets are and how they are scored. ``classification`` has a class per image;
``segmentation`` a class per pixel (masks, with ``IGNORE_INDEX`` pixels left out of the loss and
the counts) and pixel cross-entropy weighted against class imbalance.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from convlens.data.bundle import IGNORE_INDEX, Dataset
from convlens.data.transforms import AUGMENTATIONS, affine_theta, warp
from convlens.errors import ConvlensError

# class weights are clipped to this range: a class of a few pixels must not dominate the loss
MIN_WEIGHT, MAX_WEIGHT = 0.2, 5.0


class Classification:
    """One class per image: cross-entropy with label smoothing; a right image counts 1."""

    name = "classification"
    class_weights = None

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)

    def counts(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(right, scored) in a batch: images here, pixels for segmentation."""
        return (logits.detach().argmax(1) == target).sum(), int(target.shape[0])

    def augment(self, batch, target, generator: torch.Generator, name: str):
        setting = AUGMENTATIONS[name]
        if setting is None:
            return batch, target
        return warp(batch, affine_theta(batch.shape[0], generator, *setting)), target


class Segmentation:
    """A class per pixel: weighted pixel cross-entropy; a right pixel counts 1; ignored pixels none.

    The weights are ``sqrt(median frequency / frequency)`` of each class's pixels in the training
    masks, clipped to [0.2, 5]: median-frequency balancing (Eigen & Fergus, 2015), softened by the
    square root, so a small object class is not drowned by the background without letting a rare
    class's few pixels swing every step. Label smoothing is not used: it blurs the boundaries
    that the masks are exact about.
    """

    name = "segmentation"

    def __init__(self, class_weights: torch.Tensor) -> None:
        self.class_weights = class_weights

    @classmethod
    def for_masks(cls, masks: torch.Tensor, num_classes: int) -> Segmentation:
        return cls(pixel_class_weights(masks, num_classes))

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weights = self.class_weights.to(device=logits.device, dtype=logits.dtype)
        return F.cross_entropy(logits, target, weight=weights, ignore_index=IGNORE_INDEX)

    def counts(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
        scored = target != IGNORE_INDEX
        right = ((logits.detach().argmax(1) == target) & scored).sum()
        return right, int(scored.sum())

    def augment(self, batch, target, generator: torch.Generator, name: str):
        """The same random affine for each image and its mask: bilinear for the pixels, nearest
        for the class ids (no id is invented between two classes); where the warp pulls in
        pixels from outside the image the mask says ``IGNORE_INDEX``, not background."""
        setting = AUGMENTATIONS[name]
        if setting is None:
            return batch, target
        theta = affine_theta(batch.shape[0], generator, *setting)
        images = warp(batch, theta)
        shifted = (target.float() + 1).unsqueeze(1)  # 0 marks "outside" after the warp
        moved = warp(shifted, theta, mode="nearest").squeeze(1).round().long() - 1
        return images, torch.where(moved < 0, torch.full_like(moved, IGNORE_INDEX), moved)


def pixel_class_weights(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Softened median-frequency class weights (see ``Segmentation``), counted in chunks."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for start in range(0, masks.shape[0], 512):
        values = masks[start : start + 512].reshape(-1).long()
        values = values[values != IGNORE_INDEX]
        counts += torch.bincount(values, minlength=num_classes)[:num_classes].double()
    present = counts > 0
    if not bool(present.any()):
        raise ConvlensError("masks: every training pixel is ignored; nothing to learn", parameter="masks")
    frequency = counts / counts.sum()
    median = float(frequency[present].median())
    weights = torch.ones(num_classes, dtype=torch.float64)
    weights[present] = (median / frequency[present]).sqrt().clamp(MIN_WEIGHT, MAX_WEIGHT)
    return weights.float()


def task_for(dataset: Dataset, model, label_smoothing: float):
    """The task of a run: the data's, which the model's output must fit."""
    model_task = getattr(model, "task", "classification")
    if model_task != dataset.task:
        what = {"classification": "a class per image", "segmentation": "a class per pixel"}
        raise ConvlensError(
            f"model: {getattr(model, 'arguments', {}).get('name', 'this model')} predicts "
            f"{what[model_task]} but {dataset.name} is {dataset.task} data ({what[dataset.task]}); "
            f"choose a {dataset.task} model",
            parameter="model",
        )
    if dataset.is_segmentation:
        return Segmentation.for_masks(dataset.train_labels, dataset.num_classes)
    return Classification(label_smoothing)


def standard_error(share: float, count: int) -> float:
    """The binomial standard error of a share measured on ``count`` items (0 for none)."""
    return math.sqrt(max(share * (1 - share), 0.0) / count) if count else 0.0
