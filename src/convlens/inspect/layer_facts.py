"""What each stage's layer is, in the numbers a learner reads off it: filters and kernel size,
pooling window and stride, features in and out, what shape goes in and what comes out.

The explorer's explanations ("conv1 has 16 filters of 3×3, 160 parameters") and its model
card read these; they are taken from the modules themselves, never assumed from a model's
name, so a model built with other options is described as it really is.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect._stages import SOFTMAX, stage_inputs
from convlens.inspect.layer_kinds import layer_kind, stage_traits
from convlens.inspect.receptive_field import stage_output_shapes
from convlens.models.traced import INPUT


@dataclass
class LayerFacts:
    """One stage's layer: its role, shapes in and out, and the hyperparameters of that role."""

    stage: str
    role: str  # its layer kind's role (convlens.inspect.layer_kinds), or softmax, block, other
    input_shape: tuple[int, ...]  # (C, H, W) or (F,), without the batch
    output_shape: tuple[int, ...]
    parameters: int  # learned numbers (weights and biases) of this stage alone
    kernel: tuple[int, int] | None = None  # convolution kernel or pooling window (rows, cols)
    stride: tuple[int, int] | None = None
    padding: tuple[int, int, int, int] | None = None  # zeros added (top, bottom, left, right)
    filters: int | None = None  # convolution: output channels; fully connected: output units
    weights_per_filter: int | None = None  # convolution: in-channels × kernel; fully connected: inputs
    bias: bool = False
    mixes_channels: bool = False  # each output channel reads every input channel
    rectifies: bool = False  # the stage is, or contains, a rectifier (ReLU)
    grad_cam_target: bool = False  # Grad-CAM may look at this stage's map (the explorer's stage menu)


# what a layer kind's ``hyperparameters`` may fill in
_HYPERPARAMETERS = {"kernel", "stride", "padding", "filters", "weights_per_filter", "bias"}


def _facts(name: str, module: nn.Module | None, before: tuple, after: tuple) -> LayerFacts:
    traits = stage_traits(module, after)
    parameters = sum(p.numel() for p in module.parameters()) if module is not None else 0
    kind = layer_kind(module) if module is not None else None
    numbers = kind.hyperparameters(module) if kind is not None and kind.hyperparameters else {}
    unknown = set(numbers) - _HYPERPARAMETERS
    if unknown:
        raise ConvlensError(
            f"hyperparameters of layer kind {kind.role!r} gave {', '.join(sorted(unknown))}; "
            f"expected some of {', '.join(sorted(_HYPERPARAMETERS))}",
            parameter="hyperparameters",
        )
    return LayerFacts(
        name,
        traits.role,
        before,
        after,
        parameters,
        mixes_channels=traits.mixes_channels,
        rectifies=traits.rectifies,
        grad_cam_target=traits.grad_cam_target,
        **numbers,
    )


def layer_facts(model: nn.Module) -> list[LayerFacts]:
    """The facts of every stage in forward order, ending with the softmax over the logits."""
    before, stages, classes = stage_output_shapes(model, "layer facts")
    reads = stage_inputs(model)  # a graph: a stage's input is its first input's output, not the last stage's
    shapes = {INPUT: before}
    facts = []
    for name, module, after in stages:
        if reads is not None and reads.get(name):
            before = shapes[reads[name][0]]
        facts.append(_facts(name, module, before, after))
        shapes[name] = before = after
    facts.append(_facts(SOFTMAX, None, (classes,), (classes,)))
    return facts
