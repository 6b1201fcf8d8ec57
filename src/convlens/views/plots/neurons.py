"""The neuron panel as figures: one channel in full (``neuron_figure``), or a few channels of a
stage side by side, one row each (``neuron_rows``, the report's section).

Rendering only: every number drawn here is a field of ``convlens.inspect.neurons.Neuron``.
Kernels and feature maps use the convention's colours (weights diverging around 0); patches,
optimum and visualization images are pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from convlens.views.plots.colours import colour_bar, colour_limits, picture, show_map
from convlens.views.plots.inside import mosaic

KERNEL_TILES = 16  # input-channel slices of a kernel drawn; the title says how many were left out


def _kernel(axis, figure: Figure, neuron, bar: bool = True) -> None:
    """The kernel's input-channel slices as one signed mosaic (or why there is none)."""
    kernel = neuron.kernel
    if kernel is None:
        axis.text(0.5, 0.5, "no single\nconvolution\ncomputes it", ha="center", va="center", fontsize=8)
        axis.set_axis_off()
        return
    slices = kernel.weight[:KERNEL_TILES].float()  # (k, kH, kW)
    columns = min(4, slices.shape[0])
    limits = colour_limits(slices, signed=True)
    drawn = show_map(axis, mosaic(slices, columns), limits)
    shown = "" if slices.shape[0] == kernel.weight.shape[0] else f", first {slices.shape[0]}"
    bias = "no bias" if kernel.bias is None else f"bias {kernel.bias:.3g}"
    axis.set_title(
        f"kernel {kernel.stage}[{neuron.channel}]\n{kernel.weight.shape[0]} input ch.{shown}, {bias}",
        fontsize=8,
    )
    if bar:
        colour_bar(figure, drawn, axis, "weight", limits)


def _optimum(axis, neuron) -> None:
    optimum = neuron.optimum
    if optimum is None:
        axis.set_axis_off()
        return
    label = "exact optimum" if optimum.closed_form else f"optimum ({optimum.steps} steps)"
    picture(axis, optimum.crop, f"{label}\nreaches {optimum.activation:.3g}")


def _visualization(axis, neuron) -> None:
    found = neuron.visualization
    best = (
        "" if found.best_image_activation is None else f"\nbest test image {found.best_image_activation:.3g}"
    )
    picture(axis, found.image, f"channel visualization\nreaches {found.activation:.3g}{best}")


def _patch_title(patch, class_names: Sequence[str] | None, labels: torch.Tensor | None) -> str:
    title = f"#{patch.index}: {patch.value:.2f}"
    if labels is not None and class_names and labels[patch.index].ndim == 0:
        title += f"\n{class_names[int(labels[patch.index])]}"
    return title


def _effect_line(neuron) -> str:
    """Ablation and Grad-CAM's share in one line (what the panel says under "where it matters")."""
    parts = []
    if neuron.sample_ablation is not None:
        sample = neuron.sample_ablation
        parts.append(
            f"zeroed: predicted-class prob. {100 * sample.mean_change:+.2f} pts on {sample.images} images"
        )
        if sample.accuracy_before is not None:
            parts.append(f"accuracy {100 * sample.accuracy_before:.1f} → {100 * sample.accuracy_after:.1f} %")
    elif neuron.ablation is not None:
        parts.append(f"zeroed: {neuron.ablation.before:.3f} → {neuron.ablation.after:.3f}")
    return "; ".join(parts)


def neuron_figure(
    neuron,
    image: torch.Tensor,
    class_names: Sequence[str] | None = None,
    labels: torch.Tensor | None = None,
) -> Figure:
    """One channel in full: kernel, feature map on ``image`` (its strongest cell outlined), the
    image with that cell's receptive field, the unit's optimum, the channel's regularised
    visualization (when the neuron has one), and the top and bottom patches."""
    k = max(len(neuron.top_patches), len(neuron.bottom_patches))
    columns = max(4, k)
    bands = [(neuron.top_patches, "top"), (neuron.bottom_patches, "bottom")]
    bands = [(patches, what) for patches, what in bands if patches]
    figure = Figure(figsize=(1.35 * columns + 1.2, 2.3 + 1.7 * len(bands) + 0.6), layout="constrained")
    panel, *rows = figure.subfigures(
        1 + len(bands), 1, height_ratios=[2.3] + [1.7] * len(bands), squeeze=False
    )[:, 0]
    drawn_visualization = neuron.visualization is not None
    kernel_axis, map_axis, field_axis, optimum_axis, *picture_axis = panel.subplots(
        1, 4 + drawn_visualization
    )
    _kernel(kernel_axis, panel, neuron)
    limits = colour_limits(neuron.feature_map)
    drawn = show_map(map_axis, neuron.feature_map, limits)
    row, col = neuron.strongest
    map_axis.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5))
    value = float(neuron.feature_map[row, col])
    map_axis.set_title(
        f"feature map {neuron.map_size[0]}x{neuron.map_size[1]}\nmax {value:.3g} at ({row}, {col})",
        fontsize=8,
    )
    colour_bar(panel, drawn, map_axis, "activation", limits)
    picture(field_axis, image, "its receptive field")
    top, bottom, left, right = neuron.receptive_field
    field_axis.add_patch(
        Rectangle(
            (left - 0.5, top - 0.5),
            right - left + 1,
            bottom - top + 1,
            fill=False,
            edgecolor="red",
            linewidth=1.5,
        )
    )
    _optimum(optimum_axis, neuron)
    if drawn_visualization:
        _visualization(picture_axis[0], neuron)
    for band, (patches, what) in zip(rows, bands, strict=True):
        axes = band.subplots(1, columns)
        for j, axis in enumerate(axes):
            if j < len(patches):
                picture(axis, patches[j].pixels, _patch_title(patches[j], class_names, labels))
            else:
                axis.set_axis_off()
        band.suptitle(
            f"{what} test patches (cropped to the receptive field of their strongest cell)", fontsize=9
        )
    title = f"{neuron.stage} channel {neuron.channel} ({neuron.kind})"
    if neuron.dead_label:
        title += f" — {neuron.dead_label}"
    effect = _effect_line(neuron)
    figure.suptitle(title + (f"\n{effect}" if effect else ""), fontsize=10)
    return figure


def neuron_rows(
    neurons: Sequence,
    class_names: Sequence[str] | None = None,
    labels: torch.Tensor | None = None,
    patches: int = 6,
) -> Figure:
    """A few channels of one stage, one row each: kernel, unit optimum, the top ``patches``
    patches; the row's heading gives the ablation effect (the report's "important channels")."""
    columns = 2 + patches
    figure = Figure(figsize=(1.25 * columns + 0.4, 2.0 * len(neurons) + 0.4), layout="constrained")
    for band, neuron in zip(figure.subfigures(len(neurons), 1, squeeze=False)[:, 0], neurons, strict=True):
        axes = band.subplots(1, columns)
        _kernel(axes[0], band, neuron, bar=False)
        _optimum(axes[1], neuron)
        shown = [] if neuron.dead else neuron.top_patches[:patches]
        for j, axis in enumerate(axes[2:]):
            if j < len(shown):
                picture(axis, shown[j].pixels, _patch_title(shown[j], class_names, labels))
            else:
                axis.set_axis_off()
        heading = f"{neuron.stage} channel {neuron.channel}"
        heading += f" — {neuron.dead_label}" if neuron.dead_label else ""
        effect = _effect_line(neuron)
        band.suptitle(f"{heading}: {effect}" if effect else heading, fontsize=9, x=0.02, ha="left")
    return figure
