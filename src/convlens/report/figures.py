"""Figures of a trained run for the report: rendering only, from numbers the core computed."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

from convlens.lab.plots import _picture


def training_curves(history: list[dict]) -> Figure:
    """Loss and accuracy per epoch, train vs held-out."""
    figure = Figure(figsize=(10, 3.6), layout="constrained")
    loss, accuracy = figure.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    for key, label in (("train_loss", "train"), ("test_loss", "held-out")):
        if all(key in row for row in history):
            loss.plot(epochs, [row[key] for row in history], "o-", label=label)
    for key, label in (("train_accuracy", "train"), ("test_accuracy", "held-out")):
        if all(key in row for row in history):
            accuracy.plot(epochs, [100 * row[key] for row in history], "o-", label=label)
    loss.set_ylabel("loss")
    accuracy.set_ylabel("accuracy (%)")
    for axis in (loss, accuracy):
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    return figure


def confusion_matrix(confusion: list[list[int]], class_names: list[str]) -> Figure:
    size = max(4.0, 0.45 * len(class_names) + 2)
    figure = Figure(figsize=(size, size * 0.85), layout="constrained")
    axis = figure.subplots()
    matrix = torch.tensor(confusion, dtype=torch.float64)
    axis.imshow(matrix.numpy(), cmap="Blues")
    threshold = float(matrix.max()) / 2 if matrix.numel() else 0
    for row in range(matrix.shape[0]):
        for col in range(matrix.shape[1]):
            value = int(matrix[row, col])
            if value:
                color = "white" if value > threshold else "black"
                axis.text(col, row, str(value), ha="center", va="center", fontsize=8, color=color)
    short = [name[:8] for name in class_names]
    axis.set_xticks(range(len(short)), short, rotation=45, ha="right")
    axis.set_yticks(range(len(short)), short)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    return figure


def misclassified(images, cams, labels, predictions, confidences, class_names) -> Figure:
    """Each wrong answer: the image, and Grad-CAM of the wrong class laid over it."""
    count = max(len(images), 1)
    figure = Figure(figsize=(1.5 * count, 3.4), layout="constrained")
    axes = figure.subplots(2, count, squeeze=False)
    for column, (image, cam) in enumerate(zip(images, cams, strict=True)):
        _picture(axes[0, column], image)
        axes[0, column].set_title(
            f"true {class_names[labels[column]]}\nsaid {class_names[predictions[column]]} "
            f"{100 * confidences[column]:.0f}%",
            fontsize=8,
        )
        _picture(axes[1, column], image)
        axes[1, column].imshow(cam.numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
    axes[0, 0].set_ylabel("image", fontsize=9)
    axes[1, 0].set_ylabel("Grad-CAM", fontsize=9)
    return figure


def filters(weight: torch.Tensor, stage: str, limit: int = 32) -> Figure:
    """The first convolution's kernels (C_out, C_in, k, k), each in its own symmetric colour range."""
    shown = weight[:limit]
    columns = min(8, shown.shape[0])
    rows = -(-shown.shape[0] // columns)
    figure = Figure(figsize=(1.1 * columns, 1.15 * rows + 0.4), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, axis in enumerate(axes.flat):
        if index >= shown.shape[0]:
            axis.axis("off")
            continue
        kernel = shown[index]  # (C_in, k, k)
        if kernel.shape[0] == 3:
            top = kernel.abs().max().clamp_min(1e-12)
            _picture(axis, kernel, vmin=-float(top), vmax=float(top))
        else:
            kernel = kernel.sum(dim=0, keepdim=True)  # (1, k, k)
            top = float(kernel.abs().max().clamp_min(1e-12))
            _picture(axis, kernel, cmap="RdBu_r", vmin=-top, vmax=top)
        axis.set_title(str(index), fontsize=7)
    figure.suptitle(f"{stage} kernels (red +, blue −)", fontsize=10)
    return figure


def feature_maps(image: torch.Tensor, stages: list[tuple[str, torch.Tensor]], channels: int = 8) -> Figure:
    """The sample, then the first ``channels`` feature maps (C, h, w) of each spatial stage."""
    rows = len(stages) + 1
    figure = Figure(figsize=(1.2 * channels, 1.25 * rows), layout="constrained")
    axes = figure.subplots(rows, channels, squeeze=False)
    _picture(axes[0, 0], image)
    axes[0, 0].set_ylabel("input", fontsize=8)
    for axis in axes[0, 1:]:
        axis.axis("off")
    for row, (name, output) in enumerate(stages, start=1):
        for column in range(channels):
            axis = axes[row, column]
            if column >= output.shape[0]:
                axis.axis("off")
                continue
            feature_map = output[column]  # (h, w)
            axis.imshow(feature_map.numpy(), cmap="viridis", interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row, 0].set_ylabel(f"{name}\n{output.shape[1]}×{output.shape[2]}", fontsize=8)
    return figure
