"""The learned kernels: every convolution's weights, per output and input channel.

Kernels of 3x3 are shown too (ConvNetJS hides them): at that size each weight is one
visible square, which is exactly what a learner wants to read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect._stages import find_stage, model_stages


@dataclass
class ConvFilters:
    """One convolution's kernels; ``weight[o, i]`` is the (kH, kW) kernel from input channel i to output o."""

    stage: str  # the stage name, or "block1.conv1" for a convolution inside a composite stage
    weight: torch.Tensor  # (C_out, C_in / groups, kH, kW)
    bias: torch.Tensor | None  # (C_out,)
    stride: tuple[int, int]
    padding: tuple[int, int] | str
    dilation: tuple[int, int]
    groups: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.weight.shape)


def _filters(name: str, conv: nn.Conv2d) -> ConvFilters:
    return ConvFilters(
        stage=name,
        weight=conv.weight.detach().cpu().clone(),
        bias=conv.bias.detach().cpu().clone() if conv.bias is not None else None,
        stride=tuple(conv.stride),
        padding=conv.padding if isinstance(conv.padding, str) else tuple(conv.padding),
        dilation=tuple(conv.dilation),
        groups=conv.groups,
    )


def _convolutions(name: str, module: nn.Module) -> list[ConvFilters]:
    if isinstance(module, nn.Conv2d):
        return [_filters(name, module)]
    return [
        _filters(f"{name}.{inner}", conv)
        for inner, conv in module.named_modules()
        if isinstance(conv, nn.Conv2d)
    ]


def conv_filters(model: nn.Module, stage: str | None = None) -> list[ConvFilters]:
    """The kernels of every convolution in the model, or only of ``stage`` (always a list)."""
    if stage is None:
        return [f for name, module in model_stages(model) for f in _convolutions(name, module)]
    found = _convolutions(stage, find_stage(model, stage))
    if not found:
        conv_stages = [n for n, m in model_stages(model) if _convolutions(n, m)]
        raise ConvlensError(
            f"stage {stage!r} has no convolution; stages with filters: {', '.join(conv_stages) or 'none'}"
        )
    return found
