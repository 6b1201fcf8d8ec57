"""What each stage's layer is, in the numbers a learner reads off it: filters and kernel size,
pooling window and stride, features in and out, what shape goes in and what comes out.

The explorer's explanations ("conv1 has 16 filters of 3×3, 160 parameters") and its model
card read these; they are taken from the modules themselves, never assumed from a model's
name, so a model built with other options is described as it really is.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from convlens.inspect._stages import SOFTMAX
from convlens.inspect.arithmetic import conv_padding, pool_geometry
from convlens.inspect.receptive_field import stage_output_shapes
from convlens.models import Normalize

# role: one word for what a stage does, so a face can pick its explanation without knowing torch
ROLES = (
    "normalize",
    "convolution",
    "batchnorm",
    "relu",
    "max_pool",
    "avg_pool",
    "global_pool",
    "flatten",
    "fully_connected",
    "softmax",
    "block",
    "other",
)


@dataclass
class LayerFacts:
    """One stage's layer: its role, shapes in and out, and the hyperparameters of that role."""

    stage: str
    role: str  # one of ROLES
    input_shape: tuple[int, ...]  # (C, H, W) or (F,), without the batch
    output_shape: tuple[int, ...]
    parameters: int  # learned numbers (weights and biases) of this stage alone
    kernel: tuple[int, int] | None = None  # convolution kernel or pooling window (rows, cols)
    stride: tuple[int, int] | None = None
    padding: tuple[int, int, int, int] | None = None  # zeros added (top, bottom, left, right)
    filters: int | None = None  # convolution: output channels; fully connected: output units
    weights_per_filter: int | None = None  # convolution: in-channels × kernel; fully connected: inputs
    bias: bool = False


def _role(module: nn.Module | None) -> str:
    if module is None:
        return "softmax"
    roles = (
        (Normalize, "normalize"),
        (nn.Conv2d, "convolution"),
        (nn.BatchNorm2d, "batchnorm"),
        (nn.ReLU, "relu"),
        (nn.MaxPool2d, "max_pool"),
        (nn.AvgPool2d, "avg_pool"),
        (nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d, "global_pool"),
        (nn.Flatten, "flatten"),
        (nn.Linear, "fully_connected"),
    )
    for kind, role in roles:
        if isinstance(module, kind):
            return role
    return "block" if any(True for _ in module.parameters()) else "other"


def _facts(name: str, module: nn.Module | None, before: tuple, after: tuple) -> LayerFacts:
    role = _role(module)
    parameters = sum(p.numel() for p in module.parameters()) if module is not None else 0
    facts = LayerFacts(name, role, before, after, parameters)
    if role == "convolution":
        kernel = tuple(int(k) for k in module.kernel_size)
        facts.kernel, facts.stride = kernel, tuple(int(s) for s in module.stride)
        facts.padding = conv_padding(module)
        facts.filters = module.out_channels
        facts.weights_per_filter = module.in_channels // module.groups * kernel[0] * kernel[1]
        facts.bias = module.bias is not None
    elif role in ("max_pool", "avg_pool"):
        kernel, stride, (pad_rows, pad_cols), _ = pool_geometry(module)
        facts.kernel, facts.stride = kernel, stride
        facts.padding = (pad_rows, pad_rows, pad_cols, pad_cols)
    elif role == "fully_connected":
        facts.filters, facts.weights_per_filter = module.out_features, module.in_features
        facts.bias = module.bias is not None
    return facts


def layer_facts(model: nn.Module) -> list[LayerFacts]:
    """The facts of every stage in forward order, ending with the softmax over the logits."""
    before, stages, classes = stage_output_shapes(model, "layer facts")
    facts = []
    for name, module, after in stages:
        facts.append(_facts(name, module, before, after))
        before = after
    facts.append(_facts(SOFTMAX, None, (classes,), (classes,)))
    return facts
