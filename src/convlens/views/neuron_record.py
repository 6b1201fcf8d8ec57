"""A ``Neuron`` (``convlens.inspect.neurons``) as one JSON-ready record: the neuron panel's contract.

The explorer sends it (tensors packed as base64 float32), ``convlens neuron --json`` prints it
(tensors as nested lists); both build it here, so the two can never drift apart. The keys are
documented in docs/explorer.md ("Neuron panel").
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from convlens.inspect._data import as_dict
from convlens.views.arithmetic import arithmetic_steps
from convlens.views.maps import map_limits
from convlens.views.tables import Table

Encode = Callable[[torch.Tensor], object]  # a tensor → what JSON carries (nested lists, or packed)


def _lists(tensor: torch.Tensor) -> list:
    return as_dict(tensor)


def _class(index: int | None, class_names: list[str]) -> str | None:
    return class_names[index] if index is not None and 0 <= index < len(class_names) else None


def _region(region: tuple[int, int, int, int]) -> dict:
    top, bottom, left, right = region
    return {"top": top, "bottom": bottom, "left": left, "right": right}


def _patches(patches, labels: torch.Tensor | None, class_names: list[str], encode: Encode) -> list[dict]:
    rows = []
    for patch in patches:
        label = None
        if labels is not None and labels[patch.index].ndim == 0:  # a segmentation mask is no class
            label = int(labels[patch.index])
        rows.append(
            {
                "index": patch.index,
                "label": label,
                "class": _class(label, class_names),
                "value": patch.value,
                "row": patch.row,
                "col": patch.col,
                "region": _region(patch.region),
                "pixels": encode(patch.pixels),
            }
        )
    return rows


def neuron_record(
    neuron,
    class_names: list[str],
    labels: torch.Tensor | None = None,
    encode: Encode = _lists,
) -> dict:
    """Everything of ``neuron`` as plain JSON values; ``labels``: the test images' classes (to
    name each patch's), ``encode``: how tensors travel (default: nested lists)."""
    kernel = neuron.kernel
    ablation, sample, share = neuron.ablation, neuron.sample_ablation, neuron.grad_cam
    row, col = neuron.strongest
    return {
        "stage": neuron.stage,
        "channel": neuron.channel,
        "kind": neuron.kind,
        "channels": neuron.channels,
        "map_size": list(neuron.map_size),
        "dead": neuron.dead,
        "dead_label": neuron.dead_label,
        "image_count": neuron.image_count,
        "kernel": None
        if kernel is None
        else {
            "stage": kernel.stage,
            "weight": encode(kernel.weight),
            "bias": kernel.bias,
            "input_stage": kernel.input_stage,
            "input_channels": kernel.input_channels,
            "limits": map_limits(kernel.weight, signed=True),  # weights: diverging around 0
        },
        "feeders": as_dict(neuron.feeders),
        "feeder_measure": "sum of |kernel weight| over the window",
        "feature_map": encode(neuron.feature_map),
        "feature_map_limits": map_limits(neuron.feature_map),
        "strongest": {"row": row, "col": col, "value": float(neuron.feature_map[row, col])},
        "receptive_field": _region(neuron.receptive_field),
        "cell": {"type": type(neuron.cell).__name__, **as_dict(neuron.cell)},
        "steps": arithmetic_steps(neuron.cell, class_names),
        "top_patches": _patches(neuron.top_patches, labels, class_names, encode),
        "bottom_patches": _patches(neuron.bottom_patches, labels, class_names, encode),
        "ablation": None
        if ablation is None
        else {
            **as_dict(ablation),
            "class": _class(ablation.target, class_names),
            "predicted_after_class": _class(ablation.predicted_after, class_names),
        },
        "sample_ablation": as_dict(sample) if sample is not None else None,
        "grad_cam": None if share is None else {**as_dict(share), "class": _class(share.target, class_names)},
        "optimum": optimum_record(neuron.optimum, encode),
        "visualization": visualization_record(neuron.visualization, encode),
    }


def optimum_record(optimum, encode: Encode = _lists) -> dict | None:
    """What the centre unit responds to most (``unit_optimum``), when the neuron was asked for it."""
    if optimum is None:
        return None
    top, left, bottom, right = optimum.window  # end-exclusive there; inclusive like every region here
    return {
        "cell": list(optimum.cell) if optimum.cell is not None else None,
        "region": _region((top, bottom - 1, left, right - 1)),
        "crop": encode(optimum.crop),
        "activation": optimum.activation,
        "closed_form": optimum.closed_form,
        "steps": optimum.steps,
        "best_image_activation": optimum.best_image_activation,
        "best_image_index": optimum.best_image_index,
    }


def visualization_record(visualization, encode: Encode = _lists) -> dict | None:
    """The whole channel's regularised visualization (``regularised_visualization``) beside the
    best test image's activation, when the neuron was asked for it."""
    if visualization is None:
        return None
    return {
        "image": encode(visualization.image),
        "activation": visualization.activation,
        "best_image_activation": visualization.best_image_activation,
        "best_image_index": visualization.best_image_index,
        "steps": visualization.steps,
    }


def grad_cam_ranking_record(ranking, class_names: list[str]) -> dict:
    """A stage's channels by Grad-CAM contribution (``grad_cam_ranking``) as plain JSON values."""
    return {
        "stage": ranking.stage,
        "target": ranking.target,
        "class": _class(ranking.target, class_names),
        "map_mean": ranking.map_mean,
        "channels": as_dict(ranking.channels),
    }


def _patch_list(patches, labels: torch.Tensor | None, class_names: list[str]) -> str:
    shown = []
    for patch in patches:
        label = None if labels is None or labels[patch.index].ndim else int(labels[patch.index])
        name = f" ({_class(label, class_names)})" if label is not None else ""
        shown.append(f"#{patch.index}{name} {patch.value:.3g}")
    return ", ".join(shown)


def neuron_lines(neuron, class_names: list[str], labels: torch.Tensor | None = None) -> list[str]:
    """The panel as plain sentences, one fact a line (``convlens neuron``'s text summary)."""
    lines = [f"{neuron.stage} channel {neuron.channel} ({neuron.kind}, one of {neuron.channels})"]
    if neuron.dead_label:
        lines.append(neuron.dead_label)
    kernel = neuron.kernel
    if kernel is None:
        lines.append("kernel: none (no single convolution computes this channel)")
    else:
        size = "x".join(map(str, kernel.weight.shape[1:]))
        source = f" reading {kernel.input_stage}" if kernel.input_stage else ""
        bias = "no bias" if kernel.bias is None else f"bias {kernel.bias:.4g}"
        lines.append(
            f"kernel {kernel.stage}[{neuron.channel}]: {kernel.weight.shape[0]} input channels of {size}{source}, {bias}"
        )
    if neuron.feeders:
        fed = ", ".join(
            f"{f.stage}:{f.channel} {f.strength:.3g} ({f.weight_sum:+.3g})" for f in neuron.feeders
        )
        lines.append(f"fed most by (sum of |kernel weight|, signed sum): {fed}")
    row, col = neuron.strongest
    top, bottom, left, right = neuron.receptive_field
    lines.append(
        f"on the image: map {neuron.map_size[0]}x{neuron.map_size[1]}, strongest cell ({row}, {col}) = "
        f"{float(neuron.feature_map[row, col]):.4g} (by hand {neuron.cell.total:.4g}), seeing input rows "
        f"{top}..{bottom}, cols {left}..{right}"
    )
    if neuron.optimum is not None:
        optimum = neuron.optimum
        how = "exact" if optimum.closed_form else f"{optimum.steps} steps"
        best = optimum.best_image_activation
        beside = f" (best test image: {best:.4g})" if best is not None else ""
        lines.append(f"responds to: its optimum ({how}) reaches {optimum.activation:.4g}{beside}")
    picture = neuron.visualization
    if picture is not None:
        best = ""
        if picture.best_image_activation is not None:
            best = f"; best test image {picture.best_image_activation:.4g} (#{picture.best_image_index})"
        lines.append(
            f"channel visualization reaches {picture.activation:.4g}{best} "
            f"(regularised: {picture.steps} steps, each jittered, scaled and rotated)"
        )
    if neuron.top_patches:
        lines.append(
            f"top patches of {neuron.image_count} test images: {_patch_list(neuron.top_patches, labels, class_names)}"
        )
        lines.append(f"bottom patches: {_patch_list(neuron.bottom_patches, labels, class_names)}")
    if neuron.ablation is not None:
        effect = neuron.ablation
        lines.append(
            f"zeroed on the image: P({_class(effect.target, class_names)}) {effect.before:.4f} → {effect.after:.4f}"
            f", predicted {_class(effect.predicted_after, class_names)}"
        )
    sample = neuron.sample_ablation
    if sample is not None:
        accuracy = ""
        if sample.accuracy_before is not None:
            accuracy = f"; accuracy {100 * sample.accuracy_before:.2f} → {100 * sample.accuracy_after:.2f} %"
        lines.append(
            f"zeroed on {sample.images} test images: predicted-class probability {100 * sample.mean_change:+.2f} "
            f"points on average, {sample.changed_predictions} predictions change{accuracy}"
        )
    share = neuron.grad_cam
    if share is not None:
        lines.append(
            f"Grad-CAM at {neuron.stage} for {_class(share.target, class_names)}: weight {share.weight:.3g}, "
            f"weight x mean activation {share.contribution:.3g} (rank {share.rank} of {share.channels})"
        )
    return lines


def ablation_table(neurons) -> Table:
    """What zeroing each channel does on the test images, one row per neuron (the report's table)."""
    rows = []
    for neuron in neurons:
        sample = neuron.sample_ablation
        accuracy = ""
        if sample.accuracy_before is not None:
            accuracy = f"{100 * sample.accuracy_before:.1f} → {100 * sample.accuracy_after:.1f}"
        rows.append(
            [
                neuron.stage,
                str(neuron.channel),
                f"{100 * sample.mean_change:+.2f}",
                accuracy,
                str(sample.changed_predictions),
                "dead" if neuron.dead else "",
            ]
        )
    return Table(
        title=f"zeroing one channel on {neurons[0].sample_ablation.images if neurons else 0} test images",
        columns=["stage", "channel", "predicted-class prob. (pts)", "accuracy %", "changed", ""],
        rows=rows,
    )
