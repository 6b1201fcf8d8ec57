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
        "optimum": _optimum(neuron.optimum, encode),
    }


def _optimum(optimum, encode: Encode) -> dict | None:
    """The unit's optimum image, when the neuron was asked for it."""
    if optimum is None:
        return None
    return {
        key: encode(value) if isinstance(value, torch.Tensor) and value.ndim > 0 else as_dict(value)
        for key, value in vars(optimum).items()
    }
