"""Why the model said what it said: the input, class probabilities, attribution and Grad-CAM maps.

Attribution maps are magnitudes (1 = most important): MAGNITUDE colours with robust limits,
laid over the grey input, with a colour bar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from convlens.views.plots.colours import colour_bar, colour_limits, picture, show_map
from convlens.views.plots.fit import fit_titles
from convlens.views.plots.output import add_caption

OVERLAY_ALPHA = 0.55  # how much of the map covers the picture under it
TITLE_SIZE = 9  # pt: a tile's title, shrunk (never below fit.MIN_FONT_SIZE) or wrapped to fit it
PANEL_WIDTH = 1.9  # inches per panel of the attribution grid
PANELS_PER_ROW = 5  # 5 x PANEL_WIDTH at output.DPI stays under output.PAGE_WIDTH_PX: shown 1:1
MISTAKES_PER_ROW = 5  # wrong answers side by side; more go to a second block of rows


def input_picture(image: torch.Tensor, title: str = "input") -> Figure:
    figure = Figure(figsize=(3, 3), layout="constrained")
    picture(figure.subplots(), image, title)
    return figure


def class_probabilities(probabilities: torch.Tensor, class_names: list[str]) -> Figure:
    """Softmax probabilities as bars; the most probable class in orange."""
    values = probabilities.detach().cpu().tolist()
    top = max(range(len(values)), key=values.__getitem__)
    figure = Figure(figsize=(5, 0.3 * len(values) + 1), layout="constrained")
    axis = figure.subplots()
    colors = ["tab:orange" if i == top else "tab:blue" for i in range(len(values))]
    axis.barh(range(len(values)), values, color=colors)
    axis.set_yticks(range(len(values)), [str(n) for n in class_names], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel("probability (softmax)")
    axis.set_ylabel("class")
    axis.set_title(f"prediction: {class_names[top]} ({values[top]:.1%}, orange)", fontsize=10)
    for i, v in enumerate(values):
        axis.text(min(v + 0.01, 0.9), i, f"{v:.1%}", va="center", fontsize=7)
    return figure


def attribution_map(image: torch.Tensor, attribution, class_name: str) -> Figure:
    """The input, the attribution map, and the map laid over the input."""
    figure = Figure(figsize=(9.6, 3.4), layout="constrained")
    axes = figure.subplots(1, 3)
    picture(axes[0], image, "input")
    heat = attribution.map.detach().cpu().float()
    limits = colour_limits(heat, signed=False)
    drawn = show_map(axes[1], heat, limits)
    where = f" at {attribution.stage}" if attribution.stage else ""
    axes[1].set_title(f"{attribution.method}{where}", fontsize=9)
    picture(axes[2], image, "overlay")
    show_map(axes[2], heat, limits, alpha=OVERLAY_ALPHA)
    colour_bar(figure, drawn, list(axes[1:]), "importance (1 = most)", limits)
    figure.suptitle(
        f"why '{class_name}' (class {attribution.target}, p = {attribution.probability:.3f})", fontsize=10
    )
    return figure


def attribution_grid(
    image: torch.Tensor, maps: list[tuple[str, object]], class_names: Sequence[str] | None = None
) -> Figure:
    """The input, then each (label, attribution) laid over it, each with its own colour bar.

    Methods scale differently (a saliency map is a few bright pixels, Grad-CAM a smooth blob),
    so every map gets its own robust limits rather than one shared scale. The class explained is
    named (from ``class_names``) over the input and in the caption, as the report's text names it.
    """
    panels = len(maps) + 1
    columns = min(panels, PANELS_PER_ROW)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(PANEL_WIDTH * columns, 3.1 * rows), layout="constrained")
    axes = list(figure.subplots(rows, columns, squeeze=False).ravel())
    for unused in axes[panels:]:
        unused.axis("off")
    titles = [(axes[0], "input")]
    if maps:
        first = maps[0][1]
        name = str(class_names[first.target]) if class_names else str(first.target)
        shown = name if class_names else f"class {name}"  # a bare index over a picture says nothing
        titles = [(axes[0], f"input\n{shown}, p = {first.probability:.3f}")]
        add_caption(
            figure, f"Every map explains the class {name} (p = {first.probability:.3f} on this image)."
        )
    picture(axes[0], image)
    for axis, (label, attribution) in zip(axes[1:panels], maps, strict=True):
        heat = attribution.map.detach().cpu().float()
        limits = colour_limits(heat, signed=False)
        picture(axis, image)
        drawn = show_map(axis, heat, limits, alpha=OVERLAY_ALPHA)
        stage = getattr(attribution, "stage", None)
        where = f" at {stage}" if stage and f"at {stage}" not in label else ""  # named once
        titles.append((axis, f"{label}{where}"))  # fitted: wrapped at spaces when wider than the map
        colour_bar(figure, drawn, axis, "importance", limits, location="bottom", shrink=0.9)
    fit_titles(figure, titles, TITLE_SIZE)
    return figure


def misclassified(images, cams, labels, predictions, confidences, class_names) -> Figure:
    """Each wrong answer: the image, and Grad-CAM of the wrong class laid over it (one colour scale).

    At most ``MISTAKES_PER_ROW`` answers side by side, so the figure is shown at full size in the
    report and its titles stay readable; the class names are fitted to the tile, never cut.
    """
    count = max(len(images), 1)
    columns = min(count, MISTAKES_PER_ROW)
    blocks = math.ceil(count / columns)  # each block: a row of images over a row of Grad-CAMs
    figure = Figure(figsize=(1.5 * columns + 1.3, 3.4 * blocks), layout="constrained")
    axes = figure.subplots(2 * blocks, columns, squeeze=False)
    limits = colour_limits(
        torch.stack([c.detach().cpu().float() for c in cams]) if cams else [], signed=False
    )
    drawn, titles = None, []
    for index, (image, cam) in enumerate(zip(images, cams, strict=True)):
        block, column = divmod(index, columns)
        above, below = axes[2 * block, column], axes[2 * block + 1, column]
        picture(above, image)
        titles.append(
            (
                above,
                f"true {class_names[labels[index]]}\nsaid {class_names[predictions[index]]} "
                f"{100 * confidences[index]:.0f}%",
            )
        )
        picture(below, image)
        drawn = show_map(below, cam, limits, alpha=OVERLAY_ALPHA)
    for index in range(len(images), blocks * columns):
        block, column = divmod(index, columns)
        axes[2 * block, column].axis("off")
        axes[2 * block + 1, column].axis("off")
    for block in range(blocks):
        axes[2 * block, 0].set_ylabel("image", fontsize=TITLE_SIZE)
        axes[2 * block + 1, 0].set_ylabel("Grad-CAM", fontsize=TITLE_SIZE)
    if drawn is not None:
        colour_bar(figure, drawn, list(axes[1::2].ravel()), "importance", limits, shrink=0.6)
    fit_titles(figure, titles, TITLE_SIZE)
    return figure
