"""A hand-made convolution: input, kernel and feature map side by side (``convlens convolve``)."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from convlens.views.plots.colours import Limits, colour_bar, colour_limits, pixel_limits, show_map

HIGHLIGHT = "tab:orange"  # the chosen cell and the patch it reads
NUMBERS = "tab:green"  # readable on white, red, blue and black alike


def _matrix(figure, axis, values: torch.Tensor, title: str, limits: Limits, label: str, annotate: bool):
    drawn = show_map(axis, values, limits, ticks=True)
    axis.set_title(f"{title}\n{limits.note}" if limits.note else title, fontsize=9)
    height, width = values.shape
    if annotate:
        for r in range(height):
            for c in range(width):
                axis.text(c, r, f"{float(values[r, c]):.3g}", ha="center", va="center", fontsize=7,
                          color=NUMBERS)  # fmt: skip
    axis.set_xlabel("column")
    axis.set_ylabel("row")
    axis.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))  # 4-digit columns must not run together
    axis.yaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    colour_bar(figure, drawn, axis, label, limits, shrink=0.7)
    return drawn


def convolution(result, at: tuple[int, int] | None = None) -> Figure:
    """``result`` of ``convlens.inspect.convolve``; ``at`` outlines one cell and the patch it reads.

    The input is drawn as pixels, kernel and feature map as signed values centred on 0.
    """
    figure = Figure(figsize=(13, 4.4), layout="constrained")
    axes = figure.subplots(1, 3, width_ratios=[4, 2, 4])
    image, kernel, output = (t.detach().cpu().float() for t in (result.image, result.kernel, result.output))
    _matrix(
        figure, axes[0], image, f"input {image.shape[0]}x{image.shape[1]}", pixel_limits(), "pixel value",
        max(image.shape) <= 12,
    )  # fmt: skip
    _matrix(
        figure, axes[1], kernel, f"kernel {kernel.shape[0]}x{kernel.shape[1]}",
        colour_limits(kernel, signed=True), "weight", max(kernel.shape) <= 7,
    )  # fmt: skip
    _matrix(
        figure, axes[2], output, f"feature map {output.shape[0]}x{output.shape[1]} "
        f"(stride {result.stride}, padding {result.padding})", colour_limits(output, signed=True),
        "sum of products", max(output.shape) <= 12,
    )  # fmt: skip
    if at is not None:
        cell = result.cell(*at)
        kh, kw = kernel.shape
        axes[0].add_patch(
            Rectangle((cell.cols[0] - 0.5, cell.rows[0] - 0.5), kw, kh, fill=False, lw=2.5, ec=HIGHLIGHT)
        )
        axes[2].add_patch(Rectangle((at[1] - 0.5, at[0] - 0.5), 1, 1, fill=False, lw=2.5, ec=HIGHLIGHT))
        axes[2].set_title(axes[2].get_title() + f"\ncell ({at[0]}, {at[1]}) = {cell.sum:.4g}", fontsize=9)
    return figure
