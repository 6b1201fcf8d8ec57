"""Classification metrics of a held-out split: per-class precision/recall and the confusion matrix."""

from __future__ import annotations

import torch


def classification_summary(labels: torch.Tensor, predictions: torch.Tensor, class_names: list[str]) -> tuple:
    """Per-class precision/recall and the confusion matrix (scikit-learn's definitions)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

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
