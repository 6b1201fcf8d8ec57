"""The inside view of a model: feature maps, filters (kernels), and what a channel looks for.

Rendering only: every number drawn here was computed by ``convlens.inspect``. The CLI
(``convlens explain`` / ``features``) and the report draw with the same functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from convlens.views.plots.colours import colour_bar, colour_limits, picture, show_map

MAX_TILES = 64  # feature maps per stage; the title says how many were left out
COLUMNS = 8  # tiles per mosaic row


def mosaic(tiles: torch.Tensor, columns: int) -> torch.Tensor:
    """(N, h, w) tiles → one (rows*(h+1)-1, columns*(w+1)-1) picture with NaN gaps (drawn grey).

    One ``imshow`` of a mosaic draws in milliseconds where hundreds of subplots take seconds.
    """
    count, height, width = tiles.shape
    rows = math.ceil(count / columns)
    grid = torch.full((rows * (height + 1) - 1, columns * (width + 1) - 1), float("nan"))
    for index in range(count):
        r, c = divmod(index, columns)
        grid[r * (height + 1) : r * (height + 1) + height, c * (width + 1) : c * (width + 1) + width] = tiles[
            index
        ]
    return grid


def _mosaic_axis(axis, tiles: torch.Tensor, columns: int, limits):
    """Draw ``tiles`` as a mosaic with row/column numbers at the tile centres; returns the image."""
    count, height, width = tiles.shape
    rows = math.ceil(count / columns)
    image = show_map(axis, mosaic(tiles, columns), limits, ticks=True)
    axis.set_xticks(
        [c * (width + 1) + (width - 1) / 2 for c in range(columns)], [str(c) for c in range(columns)]
    )
    axis.set_yticks([r * (height + 1) + (height - 1) / 2 for r in range(rows)], [str(r) for r in range(rows)])
    axis.tick_params(length=0, labelsize=7)
    for spine in axis.spines.values():
        spine.set_visible(False)
    return image


def feature_maps(
    stages: Sequence[tuple[str, str, torch.Tensor]],
    limit: int = MAX_TILES,
    image: torch.Tensor | None = None,
    columns: int = COLUMNS,
) -> Figure:
    """One mosaic per stage of its first ``limit`` feature maps (C, h, w), each with a colour bar.

    ``stages`` are (name, kind, output) triples: the CLI draws one stage per file, the report
    several stages (and the input ``image`` above them) with a small ``limit``. Each stage has
    its own colour scale: SIGNED when it has negative values, MAGNITUDE otherwise.
    """
    shown = [(name, kind, maps, maps[:limit].detach().cpu().float()) for name, kind, maps in stages]
    columns = max(1, min(columns, max((tiles.shape[0] for *_, tiles in shown), default=1)))
    heights = [math.ceil(tiles.shape[0] / columns) for *_, tiles in shown]
    if image is not None:
        heights.insert(0, 1)
    tile = 1.2 if len(shown) == 1 else 0.9
    figure = Figure(
        figsize=(tile * columns + 1.8, tile * sum(heights) + 0.7 * len(heights)), layout="constrained"
    )
    axes = list(figure.subplots(len(heights), 1, squeeze=False, height_ratios=heights)[:, 0])
    if image is not None:
        picture(axes.pop(0), image, "input")
    for axis, (name, kind, maps, tiles) in zip(axes, shown, strict=True):
        limits = colour_limits(tiles)
        drawn = _mosaic_axis(axis, tiles, columns, limits)
        count, height, width = maps.shape
        left_out = f" (first {tiles.shape[0]} of {count})" if count > tiles.shape[0] else ""
        kind = f" ({kind})" if kind else ""
        axis.set_title(f"{name}{kind}: {count} feature maps of {height}x{width}{left_out}", fontsize=9)
        colour_bar(figure, drawn, axis, "activation", limits)  # shrunk: apart from the next row's bar
    axes[-1].set_xlabel(f"channel = {columns} x row + column", fontsize=8)
    return figure


def filters(weight: torch.Tensor, stage: str, out_limit: int = 64, in_limit: int = 32) -> Figure:
    """Kernels (C_out, C_in, kh, kw) as tiles: rows output channels, columns input channels.

    Weights are signed: one SIGNED colour scale centred on 0 for all kernels shown.
    """
    out_channels, in_channels, kh, kw = weight.shape
    rows, cols = min(out_channels, out_limit), min(in_channels, in_limit)
    more = "" if (rows, cols) == (out_channels, in_channels) else f", first {rows}x{cols} shown"
    tiles = weight[:rows, :cols].detach().cpu().float().reshape(rows * cols, kh, kw)
    limits = colour_limits(tiles, signed=True)
    if in_channels == 1:  # one kernel per output channel: wrap them into rows of 8
        cols, rows = min(rows, COLUMNS), math.ceil(rows / COLUMNS)
    scale = 0.13 * (kw + 1)
    figure = Figure(
        figsize=(max(5.0, scale * cols + 2.0), max(2.4, scale * rows + 1.2)), layout="constrained"
    )
    axis = figure.subplots()
    drawn = _mosaic_axis(axis, tiles, cols, limits)
    if in_channels == 1:
        axis.set_xlabel(f"output channel = {COLUMNS} x row + column (one input channel)", fontsize=9)
    else:
        axis.set_xlabel("input channel", fontsize=9)
        axis.set_ylabel("output channel", fontsize=9)
    axis.set_title(
        f"{stage}: {out_channels}x{in_channels} kernels of {kh}x{kw}{more} (red +, blue −)", fontsize=10
    )
    colour_bar(figure, drawn, axis, "weight", limits)
    return figure


def feature_visualization(
    visualization,
    top_images: torch.Tensor | None = None,
    top_scores: torch.Tensor | None = None,
    dead: list[str | None] | None = None,
) -> Figure:
    """One row per channel: the optimized image, then the dataset images that excite it most.

    Only pixels here (no value map, so no colour bar); the numbers are in the titles. ``dead``:
    per channel, the label shown instead of its top images (``TopImages.dead_label``), or None.
    """
    channels = visualization.channels
    k = 0 if top_images is None else top_images.shape[1]
    figure = Figure(figsize=(1.3 * (k + 1) + 0.6, 1.45 * len(channels) + 0.5), layout="constrained")
    axes = figure.subplots(len(channels), k + 1, squeeze=False)
    for row, channel in enumerate(channels):
        picture(
            axes[row, 0],
            visualization.images[row],
            f"ch {channel}: {float(visualization.activation[row]):.2f}",
        )
        axes[row, 0].set_ylabel("optimized", fontsize=7)
        label = dead[row] if dead else None
        for j in range(k):
            if label:
                axes[row, j + 1].set_axis_off()
                continue
            picture(axes[row, j + 1], top_images[row, j], f"{float(top_scores[row, j]):.2f}")
        if label and k:
            axes[row, 1].text(0, 0.5, label, fontsize=8, va="center", transform=axes[row, 1].transAxes)
    title = f"{visualization.stage}: what each channel looks for (mean activation in titles)"
    if getattr(visualization, "closed_form", False):
        title += "\n(a stage linear in the pixels: the optimized images are its exact optimum)"
    if k:
        title += f"\nleft: optimized image; right: the {k} test images that excite it most"
    figure.suptitle(title, fontsize=10)
    return figure
