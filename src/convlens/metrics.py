"""Classification metrics of a held-out split: per-class precision/recall and the confusion matrix."""

from __future__ import annotations

import torch

from convlens.errors import ConvlensError


def classification_summary(labels: torch.Tensor, predictions: torch.Tensor, class_names: list[str]) -> tuple:
    """Per-class precision/recall and the confusion matrix (scikit-learn's definitions).

    No labels is an error, not all-zero scores: a split of no images has no accuracy, and a
    table of zeros would read as a model that gets everything wrong."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.shape[0] == 0:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ConvlensError(
            f"labels: no images to score (got {shape}); a split needs at least one image", parameter="labels"
        )
    if not isinstance(predictions, torch.Tensor) or tuple(predictions.shape) != tuple(labels.shape):
        shape = (
            tuple(predictions.shape) if isinstance(predictions, torch.Tensor) else type(predictions).__name__
        )
        raise ConvlensError(
            f"predictions: expected one per label, shape {tuple(labels.shape)}, got {shape}",
            parameter="predictions",
        )

    classes = list(range(len(class_names)))
    precision, recall, _, support = precision_recall_fscore_support(
        labels.numpy(), predictions.numpy(), labels=classes, zero_division=0
    )
    per_class = [
        {"class": name, "precision": float(p), "recall": float(r), "support": int(s)}
        for name, p, r, s in zip(class_names, precision, recall, support, strict=True)
    ]
    confusion = confusion_matrix(labels.numpy(), predictions.numpy(), labels=classes).tolist()
    return per_class, confusion
