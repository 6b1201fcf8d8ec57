"""Output sizes and receptive fields of every stage: which input pixels one cell can see.

Each stage maps its output cell ``i`` to input pixels ``start + i * jump .. + size - 1``
(per axis). A layer with kernel k, stride s, padding p and dilation d turns (size, jump,
start) into (size + d(k-1) jump, jump s, start - p jump). Residual blocks follow their main
path (their shortcut sees a subset of it); global pooling and linear layers see everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect._stages import (
    SOFTMAX,
    eval_mode,
    find_stage,
    input_shape,
    model_device,
    model_stages,
)
from convlens.inspect.arithmetic import conv_padding
from convlens.inspect.hooks import StageRecorder

PARALLEL_BRANCHES = {"shortcut", "downsample", "skip"}  # children added back in, not run in sequence


@dataclass
class ReceptiveField:
    """Geometry of one stage's output: shape, and the input region each cell depends on."""

    stage: str
    kind: str
    output_shape: tuple[int, ...]  # (C, H, W) or (F,)
    parameters: int
    size: tuple[int, int]  # input pixels one cell sees (rows, cols), before clipping to the image
    jump: tuple[int, int]  # input pixels between neighbouring cells (the product of strides so far)
    start: tuple[int, int]  # input row/col of the first cell's top-left corner (negative: in padding)
    whole_image: bool = False  # every cell sees the whole input (after flatten, linear, global pooling)

    def region(self, row: int, col: int, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """Input rows top..bottom and cols left..right (inclusive, clipped) that cell (row, col) sees."""
        height, width = image_size
        if self.whole_image:
            return 0, height - 1, 0, width - 1
        top = self.start[0] + row * self.jump[0]
        left = self.start[1] + col * self.jump[1]
        return (
            max(top, 0),
            min(top + self.size[0] - 1, height - 1),
            max(left, 0),
            min(left + self.size[1] - 1, width - 1),
        )


@dataclass
class _Geometry:
    size: list[int]
    jump: list[int]
    start: list[int]
    whole: bool = False

    def apply(self, kernel, stride, padding, dilation) -> None:
        for axis in (0, 1):
            span = dilation[axis] * (kernel[axis] - 1) + 1
            self.size[axis] += (span - 1) * self.jump[axis]
            self.start[axis] -= padding[axis] * self.jump[axis]
            self.jump[axis] *= stride[axis]


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _step(module: nn.Module, geometry: _Geometry) -> None:
    """Advance the geometry through one module (containers: their children in order)."""
    if geometry.whole:
        return
    if isinstance(module, nn.Conv2d):
        top, _, left, _ = conv_padding(module)
        geometry.apply(module.kernel_size, module.stride, (top, left), module.dilation)
    elif isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
        kernel = _pair(module.kernel_size)
        stride = _pair(module.stride or module.kernel_size)
        geometry.apply(kernel, stride, _pair(module.padding), _pair(getattr(module, "dilation", 1)))
    elif isinstance(module, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d | nn.Flatten | nn.Linear):
        geometry.whole = True  # every output mixes all positions (exact for global pooling)
    else:
        for name, child in module.named_children():
            if name not in PARALLEL_BRANCHES:
                _step(child, geometry)


def receptive_fields(model: nn.Module) -> list[ReceptiveField]:
    """Output shape, parameters and receptive field of every stage, in order, ending with softmax."""
    shape = input_shape(model)
    if shape is None:
        raise ConvlensError("model: receptive fields need a model with an input shape (in_shape)")
    with eval_mode(model), torch.no_grad(), StageRecorder(model) as recorder:
        logits = model(torch.zeros(1, *shape, device=model_device(model)))  # (1, classes)
    geometry = _Geometry(size=[1, 1], jump=[1, 1], start=[0, 0])
    fields = []
    for name, module in model_stages(model):
        _step(module, geometry)
        fields.append(_field(name, type(module).__name__, recorder.outputs[name][0].shape, module, geometry))
    fields.append(_field(SOFTMAX, "Softmax", logits[0].shape, None, _Geometry([1, 1], [1, 1], [0, 0], True)))
    return fields


def _field(name, kind, shape, module, geometry: _Geometry) -> ReceptiveField:
    whole = geometry.whole
    return ReceptiveField(
        stage=name,
        kind=kind,
        output_shape=tuple(int(s) for s in shape),
        parameters=sum(p.numel() for p in module.parameters()) if module is not None else 0,
        size=tuple(geometry.size),
        jump=tuple(geometry.jump),
        start=tuple(geometry.start),
        whole_image=whole,
    )


def receptive_field(model: nn.Module, stage: str) -> ReceptiveField:
    """The receptive field of one stage (an unknown name lists the valid ones)."""
    if stage != SOFTMAX:
        find_stage(model, stage)
    return next(field for field in receptive_fields(model) if field.stage == stage)
