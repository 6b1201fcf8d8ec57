"""Why the model said what it said: the input, class probabilities, attribution and Grad-CAM maps.

Attribution maps are magnitudes (1 = most important): MAGNITUDE colours with robust limits,
laid over the grey input, with a colour bar.
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

from convlens.views.plots.colours import colour_bar, colour_limits, picture, show_map

OVERLAY_ALPHA = 0.55  # how much of the map covers the picture under it


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


def attribution_grid(image: torch.Tensor, maps: list[tuple[str, object]]) -> Figure:
    """The input, then each (label, attribution) laid over it, each with its own colour bar.

    Methods scale differently (a saliency map is a few bright pixels, Grad-CAM a smooth blob),
    so every map gets its own robust limits rather than one shared scale.
    """
    figure = Figure(figsize=(2.3 * (len(maps) + 1), 3.3), layout="constrained")
    axes = figure.subplots(1, len(maps) + 1, squeeze=False)[0]
    first = maps[0][1] if maps else None
    picture(axes[0], image, f"input\nclass {first.target}, p = {first.probability:.3f}" if first else "input")
    for axis, (label, attribution) in zip(axes[1:], maps, strict=True):
        heat = attribution.map.detach().cpu().float()
        limits = colour_limits(heat, signed=False)
        picture(axis, image)
        drawn = show_map(axis, heat, limits, alpha=OVERLAY_ALPHA)
        where = f"\nat {attribution.stage}" if getattr(attribution, "stage", None) else ""
        axis.set_title(f"{label}{where}", fontsize=9)
        colour_bar(figure, drawn, axis, "importance", limits, location="bottom", shrink=0.9)
    return figure


def misclassified(images, cams, labels, predictions, confidences, class_names) -> Figure:
    """Each wrong answer: the image, and Grad-CAM of the wrong class laid over it (one colour scale)."""
    count = max(len(images), 1)
    figure = Figure(figsize=(1.5 * count + 1.2, 3.6), layout="constrained")
    axes = figure.subplots(2, count, squeeze=False)
    limits = colour_limits(
        torch.stack([c.detach().cpu().float() for c in cams]) if cams else [], signed=False
    )
    drawn = None
    for column, (image, cam) in enumerate(zip(images, cams, strict=True)):
        picture(axes[0, column], image)
        axes[0, column].set_title(
            f"true {class_names[labels[column]]}\nsaid {class_names[predictions[column]]} "
            f"{100 * confidences[column]:.0f}%",
            fontsize=8,
        )
        picture(axes[1, column], image)
        drawn = show_map(axes[1, column], cam, limits, alpha=OVERLAY_ALPHA)
    for column in range(len(images), count):
        axes[0, column].axis("off")
        axes[1, column].axis("off")
    axes[0, 0].set_ylabel("image", fontsize=9)
    axes[1, 0].set_ylabel("Grad-CAM", fontsize=9)
    if drawn is not None:
        colour_bar(figure, drawn, list(axes[1, :]), "importance", limits, shrink=1.0)
    return figure
