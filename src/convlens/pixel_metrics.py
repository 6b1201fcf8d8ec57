"""Segmentation metrics of a held-out split: the confusion over pixels, IoU, Dice, pixel accuracy.

Everything comes from one confusion matrix of pixel counts (rows: the true class, columns: the
predicted one), added up a batch at a time, so a split of any size is scored in bounded memory
and several processes' counts simply add. Pixels marked ``IGNORE_INDEX`` in the mask are left
out of every number. With per class c: TP = confusion[c, c], FP = the rest of column c, FN = the
rest of row c:

- IoU (Jaccard) = TP / (TP + FP + FN); Dice (F1) = 2 TP / (2 TP + FP + FN);
- mean IoU and mean Dice average the classes that occur in the truth or the prediction; a class
  absent from both has no IoU (0 / 0) and is left out (``None`` in the table): counting it as 0
  would punish the model for a class the split never shows;
- pixel accuracy = the diagonal's share of every scored pixel (dominated by large classes,
  which is why mean IoU is the headline number).
"""

from __future__ import annotations

import torch

from convlens.data.bundle import IGNORE_INDEX
from convlens.errors import ConvlensError


def pixel_confusion(masks: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(classes, classes) int64 pixel counts: row = true class, column = predicted class."""
    if not isinstance(masks, torch.Tensor) or not isinstance(predicted, torch.Tensor):
        raise ConvlensError("masks and predicted must be tensors of class ids", parameter="masks")
    if masks.shape != predicted.shape:
        raise ConvlensError(
            f"predicted: expected the masks' shape {tuple(masks.shape)}, got {tuple(predicted.shape)}",
            parameter="predicted",
        )
    truth = masks.reshape(-1).long()
    guess = predicted.reshape(-1).long()
    scored = truth != IGNORE_INDEX
    truth, guess = truth[scored], guess[scored]
    if truth.numel() and (int(truth.max()) >= num_classes or int(truth.min()) < 0):
        raise ConvlensError(
            f"masks: class ids must be 0..{num_classes - 1} or {IGNORE_INDEX}, found {int(truth.max())}",
            parameter="masks",
        )
    counts = torch.bincount(truth * num_classes + guess, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def segmentation_scores(confusion: torch.Tensor, class_names: list[str]) -> dict:
    """Pixel accuracy, mean IoU, mean Dice and the per-class table from a pixel confusion matrix."""
    confusion = confusion.double()
    scored = float(confusion.sum())
    if scored == 0:
        raise ConvlensError(
            "masks: no pixels to score (every pixel is ignored or the split is empty)", parameter="masks"
        )
    true_positive = confusion.diagonal()
    false_positive = confusion.sum(0) - true_positive
    false_negative = confusion.sum(1) - true_positive
    union = true_positive + false_positive + false_negative
    per_class, ious, dices = [], [], []
    for index, name in enumerate(class_names):
        present = float(union[index]) > 0
        iou = float(true_positive[index] / union[index]) if present else None
        dice = float(2 * true_positive[index] / (union[index] + true_positive[index])) if present else None
        if present:
            ious.append(iou)
            dices.append(dice)
        per_class.append(
            {
                "class": name,
                "iou": iou,
                "dice": dice,
                "pixels": int(confusion[index].sum()),  # true pixels of the class (its support)
                "predicted_pixels": int(confusion[:, index].sum()),
            }
        )
    return {
        "pixel_accuracy": float(true_positive.sum()) / scored,
        "mean_iou": sum(ious) / len(ious),
        "dice": sum(dices) / len(dices),
        "per_class_iou": per_class,
    }
