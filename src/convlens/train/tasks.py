"""What the trainer needs to know about a task: its loss, what counts as right, how it augments.

The epoch loop, the guard, resume, DDP and checkpoints are the same for every task; a task says
what one batch's targets are and how they are scored. ``classification`` has a class per image;
``segmentation`` a class per pixel (masks, with ``IGNORE_INDEX`` pixels left out of the loss and
the counts) and pixel cross-entropy weighted against class imbalance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convlens.data.bundle import IGNORE_INDEX, Dataset
from convlens.data.transforms import AUGMENTATIONS, affine_theta, augment, warp
from convlens.errors import ConvlensError
from convlens.metrics import classification_summary
from convlens.pixel_metrics import segmentation_scores

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
        return augment(batch, generator, name), target  # the label does not move with the pixels

    def epoch_scores(self, evaluation: dict, split: str, class_names: list[str]) -> dict:
        """What an epoch's history row records of a split beyond its accuracy and loss: nothing."""
        return {}

    def summary(self, test: dict, labels: torch.Tensor, class_names: list[str]) -> tuple[list, list, dict]:
        """``(per_class, confusion, extra metrics)`` of the kept model on the test split."""
        per_class, confusion = classification_summary(labels, test["predictions"], class_names)
        return per_class, confusion, {}


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

    def epoch_scores(self, evaluation: dict, split: str, class_names: list[str]) -> dict:
        """Mean IoU of a split (``val_mean_iou`` decides the kept epoch), and the test split's
        pixel accuracy under its own name."""
        scores = {f"{split}_mean_iou": segmentation_scores(evaluation["confusion"], class_names)["mean_iou"]}
        if split == "test":
            scores["test_pixel_accuracy"] = evaluation["accuracy"]
        return scores

    def summary(self, test: dict, labels: torch.Tensor, class_names: list[str]) -> tuple[list, list, dict]:
        """Per-class IoU/Dice over pixels, the pixel confusion matrix, and the headline numbers
        (the keys ``train --json`` reports beside the classification ones)."""
        scores = segmentation_scores(test["confusion"], class_names)
        extra = {
            "test_mean_iou": scores["mean_iou"],
            "test_pixel_accuracy": scores["pixel_accuracy"],
            "test_dice": scores["dice"],
            "per_class_iou": scores["per_class_iou"],
        }
        return scores["per_class_iou"], test["confusion"].tolist(), extra


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
