"""Adversarial attacks: example images with their perturbation, and the robustness curve."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

from convlens.attacks import AttackResult, RobustnessCurve
from convlens.views.plots.colours import colour_bar, picture, show_map, symmetric_limits

COLORS = {"fgsm": "tab:orange", "pgd": "tab:red"}


def attack_examples(
    result: AttackResult, class_names: list[str], count: int = 8, indices: list[int] | None = None
) -> Figure:
    """Columns of examples: original, perturbation, adversarial.

    A one-channel perturbation is a SIGNED map from −ε to ε (its known bound, so nothing is
    clipped) with a colour bar; an RGB one is drawn as pixels, ±ε stretched to [0, 1] (grey = 0).
    """
    if indices is None:
        flipped = torch.nonzero(result.flipped).flatten().tolist()
        others = [i for i in range(result.labels.numel()) if i not in set(flipped)]
        indices = (flipped + others)[:count]  # fooled images first: they are the point
    columns = max(len(indices), 1)
    figure = Figure(figsize=(1.6 * columns + 1.4, 5.6), layout="constrained")
    axes = figure.subplots(3, columns, squeeze=False)
    scale = result.eps if result.eps > 0 else 1.0
    limits = symmetric_limits(scale)
    drawn = None
    for column, index in enumerate(indices):
        delta = result.perturbations[index]
        picture(axes[0, column], result.clean_images[index])
        if delta.shape[0] == 1:
            drawn = show_map(axes[1, column], delta[0], limits)
        else:
            picture(axes[1, column], (delta / (2 * scale) + 0.5).clamp(0, 1))
        picture(axes[2, column], result.adversarial_images[index])
        before = int(result.clean_predictions[index])
        after = int(result.adversarial_predictions[index])
        axes[0, column].set_title(
            f"{class_names[before]} {100 * float(result.clean_confidences[index]):.0f}%", fontsize=9
        )
        axes[2, column].set_title(
            f"{class_names[after]} {100 * float(result.adversarial_confidences[index]):.0f}%",
            fontsize=9,
            color="tab:red" if after != int(result.labels[index]) else "black",
        )
    for index in range(len(indices), columns):
        for row in range(3):
            axes[row, index].axis("off")
    noise = "perturbation" if drawn is not None else f"perturbation ±{result.eps:g}\n(RGB, grey = 0)"
    for row, label in enumerate(("original", noise, "adversarial")):
        axes[row, 0].set_ylabel(label, fontsize=9)
    if drawn is not None:
        colour_bar(figure, drawn, list(axes[1, :]), "pixel change", limits, shrink=1.0)
    target = f", target {class_names[result.target]}" if result.target is not None else ""
    figure.suptitle(
        f"{result.label} ε = {result.eps:g}{target}: accuracy "
        f"{100 * result.clean_accuracy:.1f}% → {100 * result.adversarial_accuracy:.1f}%",
        fontsize=11,
    )
    return figure


def robustness_curve(curve: RobustnessCurve) -> Figure:
    figure = Figure(figsize=(6, 4), layout="constrained")
    axis = figure.subplots()
    labels = curve.labels()
    for method, accuracy in curve.accuracy.items():
        axis.plot(
            curve.eps, [100 * a for a in accuracy], "o-", label=labels[method], color=COLORS.get(method)
        )
    axis.axhline(100 * curve.clean_accuracy, color="gray", linestyle=":", label="clean")
    axis.set_xlabel("ε (L∞, pixel units)")
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(-2, 102)
    axis.set_title(f"robustness curve on {curve.images} test images")
    axis.grid(alpha=0.3)
    axis.legend()
    return figure
