"""Figures of a segmentation model's results: mask overlays, the pixel confusion, reliability.

Masks are drawn in ``views.segmentation_colours`` (one colour per class, the same in every
picture; background left as the photo), so the report's overlays read like the CLI's. The
numbers drawn (IoU per image, confusion shares, reliability bins) are computed by
``convlens.inspect.segmentation_quality``; nothing here computes a score.
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from convlens.views.plots.colours import MAGNITUDE, Limits, picture
from convlens.views.plots.training import confusion_figure

OVERLAY_ALPHA = 0.55  # enough colour to tell classes apart, enough photo to see what is under it


def _legend(figure: Figure, class_names: list[str]) -> None:
    from convlens.views.segmentation_colours import class_palette

    palette = class_palette(len(class_names))
    handles = [
        Patch(facecolor=tuple(int(v) / 255 for v in palette[i]), edgecolor="black", label=name)
        for i, name in enumerate(class_names)
    ]
    figure.legend(
        handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8, frameon=False
    )


def mask_overlays(
    images: list[torch.Tensor],
    masks: list[torch.Tensor],
    predicted: list[torch.Tensor],
    titles: list[str],
    class_names: list[str],
) -> Figure:
    """One row per image: the image | its true mask over it | the predicted mask over it."""
    from convlens.views.segmentation_colours import overlay

    rows = max(len(images), 1)
    figure = Figure(figsize=(6.6, 2.1 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, 3, squeeze=False)
    k = len(class_names)
    for row, (image, mask, guess, title) in enumerate(zip(images, masks, predicted, titles, strict=True)):
        picture(axes[row, 0], image)
        picture(axes[row, 1], torch.from_numpy(overlay(image, mask, OVERLAY_ALPHA, k)).permute(2, 0, 1) / 255)
        picture(
            axes[row, 2], torch.from_numpy(overlay(image, guess, OVERLAY_ALPHA, k)).permute(2, 0, 1) / 255
        )
        if row == 0:
            axes[row, 0].set_title("image", fontsize=9)
            axes[row, 1].set_title("true mask", fontsize=9)
            axes[row, 2].set_title("predicted mask", fontsize=9)
        axes[row, 0].set_ylabel(title, fontsize=8)
    for row in range(len(images), rows):
        for axis in axes[row]:
            axis.axis("off")
    _legend(figure, class_names)
    return figure


def pixel_confusion_matrix(shares: torch.Tensor, class_names: list[str]) -> Figure:
    """Row-normalised pixel confusion (shares of each true class's pixels), 0 to 1 in MAGNITUDE."""
    matrix = shares.double().reshape(len(class_names), len(class_names))
    return confusion_figure(
        matrix,
        class_names,
        Limits(0.0, 1.0, MAGNITUDE),
        lambda value: f"{100 * value:.1f}",
        "share of the true class's pixels",
    )


def pixel_reliability(calibration) -> Figure:
    """The reliability diagram of pixel confidences (``PixelCalibration``), in the lab's drawing."""
    from convlens.views.plots.lab import reliability_axis

    figure = Figure(figsize=(5.2, 4.4), layout="constrained")
    reliability_axis(
        figure.subplots(), calibration.bins, f"{calibration.pixels:,} pixels: ECE {calibration.ece:.4f}"
    )
    return figure
