"""What one unit responds to: its optimum cropped to its receptive field, beside the best test patch."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

from convlens.views.plots.colours import picture


def unit_optima(optima: list, best_images: torch.Tensor | None = None) -> Figure:
    """One row per channel: the centre unit's optimum inside its window (``UnitOptimum.crop``),
    and, given ``best_images`` (K, C, H, W), the same window of the test image that drives the
    unit hardest. Pixels only; the activations are in the titles."""
    columns = 1 if best_images is None else 2
    figure = Figure(figsize=(1.5 * columns + 0.8, 1.55 * len(optima) + 0.6), layout="constrained")
    axes = figure.subplots(len(optima), columns, squeeze=False)
    for row, optimum in enumerate(optima):
        top, left, bottom, right = optimum.window
        picture(axes[row, 0], optimum.crop, f"ch {optimum.channel}: {optimum.activation:.2f}")
        axes[row, 0].set_ylabel(f"rows {top}..{bottom - 1}\ncols {left}..{right - 1}", fontsize=7)
        if best_images is None:
            continue
        label = (
            "dead" if optimum.dead else f"#{optimum.best_image_index}: {optimum.best_image_activation:.2f}"
        )
        picture(axes[row, 1], best_images[row][:, top:bottom, left:right], label)
    first = optima[0]
    unit = "each unit" if first.cell is None else f"the centre unit {first.cell}"
    title = f"{first.stage}: what {unit} responds to, cropped to its receptive field (input rows, cols)"
    if first.closed_form:
        title += (
            "\nlinear in the pixels: the exact optimum is the kernel's sign pattern"
            " (white + / black −); the whole-image optimum would be a nearly flat square"
        )
    if best_images is not None:
        title += "\nleft: optimum; right: the test patch that drives the unit hardest"
    figure.suptitle(title, fontsize=10)
    return figure
