"""How training went: loss/accuracy curves and the confusion matrix (for the report)."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from convlens.views.plots.colours import SPLIT_COLOURS, colour_bar, count_limits, show_map, text_colour

MAX_EPOCH_LABELS = 10  # a 230-epoch run still gets a readable axis
CELL = 0.45  # inches per class in a confusion matrix: slanted names one line apart stay clear
NAME_INCHES_PER_CHARACTER = 0.075  # room a class name takes beside (and, slanted, under) the matrix


def training_curves(history: list[dict]) -> Figure:
    """Loss and accuracy per epoch on the training, validation and test splits; the kept epoch marked.

    A segmentation run gets a third panel, mean IoU (its headline score and what chooses its
    kept epoch), and its accuracy is labelled pixel accuracy: the share of pixels right.
    """
    segmentation = any(key.endswith("_mean_iou") for row in history for key in row)
    # 2 panels: at most output.PAGE_WIDTH_PX wide, shown 1:1; 3 need 13 in for their legends (shown at 3/4)
    figure = Figure(figsize=(13 if segmentation else 9.6, 3.6), layout="constrained")
    axes = figure.subplots(1, 3 if segmentation else 2)
    loss, accuracy = axes[0], axes[1]
    epochs = [row["epoch"] for row in history]
    splits = (("train", "train"), ("val", "validation (chooses)"), ("test", "test (reported)"))
    for prefix, label in splits:
        style = {"label": label, "color": SPLIT_COLOURS[prefix], "marker": "o" if len(epochs) <= 30 else None}
        if all(f"{prefix}_loss" in row for row in history):
            loss.plot(epochs, [row[f"{prefix}_loss"] for row in history], **style)
        if all(f"{prefix}_accuracy" in row for row in history):
            accuracy.plot(epochs, [100 * row[f"{prefix}_accuracy"] for row in history], **style)
        if segmentation and all(f"{prefix}_mean_iou" in row for row in history):
            axes[2].plot(epochs, [100 * row[f"{prefix}_mean_iou"] for row in history], **style)
    kept = [row["epoch"] for row in history if row.get("selected")]
    for axis in axes if kept else ():
        axis.axvline(kept[0], color="gray", linestyle=":", label=f"kept: epoch {kept[0]}")
    loss.set_ylabel("loss")
    accuracy.set_ylabel("pixel accuracy (%)" if segmentation else "accuracy (%)")
    if segmentation:
        axes[2].set_ylabel("mean IoU (%)")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(nbins=MAX_EPOCH_LABELS, integer=True))
        axis.grid(alpha=0.3)
        if axis.lines:  # above the plot, so it never covers a curve
            axis.legend(loc="lower left", bbox_to_anchor=(0, 1.02), ncols=2, fontsize="small", frameon=False)
    return figure


def confusion_matrix(confusion: list[list[int]], class_names: list[str]) -> Figure:
    """Counts per (true, predicted) class in MAGNITUDE colours, from 0 to the largest count."""
    matrix = torch.tensor(confusion, dtype=torch.float64).reshape(len(class_names), len(class_names))
    return confusion_figure(
        matrix, class_names, count_limits(matrix), lambda value: str(int(value)), "images"
    )


def confusion_figure(
    matrix: torch.Tensor, class_names: list[str], limits, cell_text, bar_label: str
) -> Figure:
    """A (true, predicted) matrix as a map: each non-zero cell written with ``cell_text(value)``,
    true classes down, predicted across, and a colour bar named ``bar_label``."""
    names = [str(name) for name in class_names]  # whole: cut to 8 letters, "astronaut" read "astronau"
    size = max(4.0, CELL * len(names) + 2)
    room = NAME_INCHES_PER_CHARACTER * max(map(len, names), default=0)  # long names leave the cells
    figure = Figure(figsize=(size + 0.8 + room, size * 0.85 + room), layout="constrained")
    axis = figure.subplots()
    drawn = show_map(axis, matrix, limits, ticks=True)
    for row in range(matrix.shape[0]):
        for col in range(matrix.shape[1]):
            value = float(matrix[row, col])
            if value:
                axis.text(col, row, cell_text(value), ha="center", va="center", fontsize=8,
                          color=text_colour(value, limits))  # fmt: skip
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right", rotation_mode="anchor")
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    colour_bar(figure, drawn, axis, bar_label, limits)
    return figure
