"""What one output cell of each kind of layer computes, recomputed by hand in float64.

One function per kind, ``(module, stage_input, stage, channel, row, col, output) -> Cell``:
the input patch, kernel, products and sums of a convolution, the window of a pooling layer,
BatchNorm's statistics, a linear unit's weighted sum, softmax over the logits. Each returns
every intermediate number next to the layer's own ``output``, so a learner (and a test) can
see they agree. The layer-kind table (``convlens.inspect.layer_kinds``) says which function
explains which module; ``convlens.inspect.arithmetic.cell_arithmetic`` runs it on a real input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect._stages import SOFTMAX
from convlens.inspect.geometry import conv_padding, pair, pool_geometry
from convlens.models._registry import Normalize

TOP_INPUTS = 10  # how many of a linear unit's inputs to list, by |weight x input|


@dataclass(kw_only=True)
class Cell:
    """What every kind shares: where the cell is, the hand-computed total and the layer's own output."""

    stage: str
    kind: str
    channel: int  # output channel (or unit / class index for flat stages)
    row: int
    col: int
    total: float  # recomputed here, in float64
    output: float  # what the layer itself produced


@dataclass(kw_only=True)
class ConvCell(Cell):
    input_channels: list[int]  # the input channels of this output channel's group
    rows: list[int]  # input row of each kernel row (outside 0..H-1 means padding)
    cols: list[int]
    patch: torch.Tensor  # (C_in/groups, kH, kW) input values under the kernel, padding included
    padding: torch.Tensor  # (C_in/groups, kH, kW) bool, True where the patch lies in the padding
    kernel: torch.Tensor  # (C_in/groups, kH, kW)
    products: torch.Tensor  # patch * kernel
    channel_sums: torch.Tensor  # (C_in/groups,) one sum per input channel
    bias: float


@dataclass(kw_only=True)
class ReluCell(Cell):
    before: float
    after: float


@dataclass(kw_only=True)
class PoolCell(Cell):
    rows: list[int]
    cols: list[int]
    window: torch.Tensor  # (kH, kW) values under the window (padding: -inf for max, 0 for average)
    padding: torch.Tensor  # (kH, kW) bool
    winner: tuple[int, int] | None = None  # max-pool: input (row, col) of the largest value
    sum: float | None = None  # average-pool: the sum and what it is divided by
    divisor: float | None = None


@dataclass(kw_only=True)
class BatchNormCell(Cell):
    before: float
    mean: float  # running mean of the channel
    var: float  # running variance
    eps: float
    gamma: float
    beta: float
    normalized: float  # (before - mean) / sqrt(var + eps)


@dataclass(kw_only=True)
class NormalizeCell(Cell):
    before: float
    mean: float
    std: float


@dataclass(kw_only=True)
class FlattenCell(Cell):
    source: tuple[int, ...]  # (channel, row, col) of the input value that lands here


@dataclass(kw_only=True)
class LinearCell(Cell):
    inputs: torch.Tensor  # (F,)
    weights: torch.Tensor  # (F,) the unit's row of the weight matrix
    products: torch.Tensor  # (F,)
    bias: float
    top_inputs: list[int]  # indices of the largest |products|, largest first


@dataclass(kw_only=True)
class SoftmaxCell(Cell):
    logits: torch.Tensor  # (classes,)
    exp: torch.Tensor  # exp(logit - max logit): shifting by the max changes nothing but avoids overflow
    exp_sum: float
    probabilities: torch.Tensor


@dataclass(kw_only=True)
class ElementwiseCell(Cell):
    """A layer that maps each value on its own (an activation): ``after = formula(before)``."""

    before: float
    formula: str  # how ``after`` follows from x, e.g. "min(max(x, -1), 1)"
    after: float


# (module, stage input (C, H, W) or (F,) in float64, stage, channel, row, col, the layer's output) -> Cell
Arithmetic = Callable[[nn.Module, torch.Tensor, str, int, int, int, float], Cell]


def input_value(x: torch.Tensor, channel: int, row: int, col: int) -> float:
    """The stage input's value at the output cell's own position (a layer that works cell by cell)."""
    return float(x[channel, row, col]) if x.ndim == 3 else float(x[channel])


def elementwise(
    formula: str | Callable[[nn.Module], str],
    function: Callable[[nn.Module, float], float],
    kind: str | None = None,
) -> Arithmetic:
    """The cell arithmetic of an activation that maps each value on its own: ``function(module,
    x)`` of the input value x at the cell's position, shown as ``formula`` (a text in x, or a
    function of the module for one with settings, e.g. a slope). ``kind`` names the cell
    (default: the module's class name)."""

    def arithmetic(module, x, stage: str, channel: int, row: int, col: int, real: float) -> ElementwiseCell:
        before = input_value(x, channel, row, col)
        after = float(function(module, before))
        return ElementwiseCell(
            stage=stage, kind=kind or type(module).__name__, channel=channel, row=row, col=col,
            total=after, output=real, before=before,
            formula=formula(module) if callable(formula) else formula, after=after,
        )  # fmt: skip

    return arithmetic


def _window(
    padded: torch.Tensor, top: int, left: int, size: tuple[int, int], dilation: tuple[int, int]
) -> torch.Tensor:
    """padded[..., rows, cols] for a (possibly dilated) window whose first cell is (top, left)."""
    (kh, kw), (dh, dw) = size, dilation
    return padded[..., top : top + dh * (kh - 1) + 1 : dh, left : left + dw * (kw - 1) + 1 : dw]


def _positions(start: int, size: int, step: int) -> list[int]:
    return [start + step * k for k in range(size)]


def _inside(rows: list[int], cols: list[int], height: int, width: int) -> torch.Tensor:
    row_in = torch.tensor([0 <= r < height for r in rows])
    col_in = torch.tensor([0 <= c < width for c in cols])
    return row_in[:, None] & col_in[None, :]  # (kH, kW)


def conv_cell(module: nn.Conv2d, x: torch.Tensor, stage: str, channel: int, row: int, col: int, real: float):
    top_pad, bottom_pad, left_pad, right_pad = conv_padding(module)
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    padded = F.pad(x.unsqueeze(0), (left_pad, right_pad, top_pad, bottom_pad), mode=mode)[0]  # (C, H', W')
    (sh, sw), (dh, dw) = module.stride, module.dilation
    per_group = module.in_channels // module.groups
    group = channel // (module.out_channels // module.groups)
    in_channels = list(range(group * per_group, (group + 1) * per_group))
    top, left = row * sh, col * sw  # first kernel cell, in padded coordinates
    patch = _window(padded[in_channels], top, left, module.kernel_size, (dh, dw))  # (Cg, kH, kW)
    rows = _positions(top - top_pad, module.kernel_size[0], dh)
    cols = _positions(left - left_pad, module.kernel_size[1], dw)
    outside = ~_inside(rows, cols, x.shape[1], x.shape[2])
    kernel = module.weight[channel].detach().double().cpu()  # (Cg, kH, kW)
    products = patch * kernel
    channel_sums = products.sum(dim=(1, 2))  # (Cg,)
    bias = float(module.bias[channel].detach()) if module.bias is not None else 0.0
    return ConvCell(
        stage=stage,
        kind="conv",
        channel=channel,
        row=row,
        col=col,
        total=float(channel_sums.sum()) + bias,
        output=real,
        input_channels=in_channels,
        rows=rows,
        cols=cols,
        patch=patch.float(),
        padding=outside.expand_as(patch).clone(),
        kernel=kernel.float(),
        products=products.float(),
        channel_sums=channel_sums.float(),
        bias=bias,
    )


def relu_cell(module: nn.ReLU, x: torch.Tensor, stage: str, channel: int, row: int, col: int, real: float):
    before = input_value(x, channel, row, col)
    after = max(before, 0.0)
    return ReluCell(
        stage=stage, kind="relu", channel=channel, row=row, col=col, total=after, output=real,
        before=before, after=after,
    )  # fmt: skip


def _padded_for_pool(x: torch.Tensor, module: nn.Module, fill: float) -> tuple[torch.Tensor, tuple, tuple]:
    """Pad like the pool does; with ceil_mode the last window may run past the padding, so pad more."""
    kernel, stride, padding, dilation = pool_geometry(module)
    extra = []
    for axis in (0, 1):
        size = x.shape[1 + axis] + 2 * padding[axis]
        span = dilation[axis] * (kernel[axis] - 1) + 1
        steps = (size - span) / stride[axis]
        out = (math.ceil(steps) if module.ceil_mode else math.floor(steps)) + 1
        extra.append(max(0, (out - 1) * stride[axis] + span - size))
    pads = (padding[1], padding[1] + extra[1], padding[0], padding[0] + extra[0])
    return F.pad(x.unsqueeze(0), pads, value=fill)[0], padding, extra


def max_pool_cell(module: nn.MaxPool2d, x: torch.Tensor, stage: str, channel: int, row: int, col: int, real):
    kernel, stride, _, dilation = pool_geometry(module)
    padded, padding, _ = _padded_for_pool(x, module, float("-inf"))
    top, left = row * stride[0], col * stride[1]
    window = _window(padded[channel], top, left, kernel, dilation)  # (kH, kW)
    rows = _positions(top - padding[0], kernel[0], dilation[0])
    cols = _positions(left - padding[1], kernel[1], dilation[1])
    flat = int(window.argmax())  # the first largest value, as PyTorch picks it
    winner = (rows[flat // kernel[1]], cols[flat % kernel[1]])
    return PoolCell(
        stage=stage, kind="max-pool", channel=channel, row=row, col=col, total=float(window.max()),
        output=real, rows=rows, cols=cols, window=window.float(),
        padding=~_inside(rows, cols, x.shape[1], x.shape[2]), winner=winner,
    )  # fmt: skip


def avg_pool_cell(module: nn.AvgPool2d, x: torch.Tensor, stage: str, channel: int, row: int, col: int, real):
    kernel, stride, padding, _ = pool_geometry(module)
    padded, _, _ = _padded_for_pool(x, module, 0.0)
    top, left = row * stride[0], col * stride[1]
    window = _window(padded[channel], top, left, kernel, (1, 1))  # (kH, kW)
    rows, cols = _positions(top - padding[0], kernel[0], 1), _positions(left - padding[1], kernel[1], 1)
    # PyTorch's divisor: the window clipped to the padded input, or to the image without count_include_pad
    height, width = x.shape[1], x.shape[2]
    h_end, w_end = min(rows[-1] + 1, height + padding[0]), min(cols[-1] + 1, width + padding[1])
    divisor = (h_end - rows[0]) * (w_end - cols[0])
    if module.divisor_override:
        divisor = module.divisor_override
    elif not module.count_include_pad:
        divisor = (min(h_end, height) - max(rows[0], 0)) * (min(w_end, width) - max(cols[0], 0))
    total = float(window.sum())
    return PoolCell(
        stage=stage, kind="avg-pool", channel=channel, row=row, col=col, total=total / divisor,
        output=real, rows=rows, cols=cols, window=window.float(),
        padding=~_inside(rows, cols, height, width), sum=total, divisor=float(divisor),
    )  # fmt: skip


def adaptive_avg_pool_cell(
    module: nn.AdaptiveAvgPool2d, x, stage: str, channel: int, row: int, col: int, real
):
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = pair(module.output_size)
    out_h, out_w = out_h or height, out_w or width
    rows = list(range(row * height // out_h, -(-(row + 1) * height // out_h)))
    cols = list(range(col * width // out_w, -(-(col + 1) * width // out_w)))
    window = x[channel, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # (h, w)
    total = float(window.sum())
    return PoolCell(
        stage=stage, kind="avg-pool", channel=channel, row=row, col=col, total=total / window.numel(),
        output=real, rows=rows, cols=cols, window=window.float(),
        padding=torch.zeros(window.shape, dtype=torch.bool), sum=total, divisor=float(window.numel()),
    )  # fmt: skip


def batchnorm_cell(module: nn.BatchNorm2d, x, stage: str, channel: int, row: int, col: int, real: float):
    if module.running_mean is None:
        raise ConvlensError(f"stage {stage!r}: BatchNorm without running statistics has no fixed arithmetic")
    before = input_value(x, channel, row, col)
    mean, var = float(module.running_mean[channel]), float(module.running_var[channel])
    gamma = float(module.weight[channel].detach()) if module.weight is not None else 1.0
    beta = float(module.bias[channel].detach()) if module.bias is not None else 0.0
    normalized = (before - mean) / math.sqrt(var + module.eps)
    return BatchNormCell(
        stage=stage, kind="batchnorm", channel=channel, row=row, col=col,
        total=normalized * gamma + beta, output=real, before=before, mean=mean, var=var,
        eps=module.eps, gamma=gamma, beta=beta, normalized=normalized,
    )  # fmt: skip


def normalize_cell(module: Normalize, x, stage: str, channel: int, row: int, col: int, real: float):
    before = float(x[channel, row, col])
    mean, std = float(module.mean.flatten()[channel]), float(module.std.flatten()[channel])
    return NormalizeCell(
        stage=stage, kind="normalize", channel=channel, row=row, col=col, total=(before - mean) / std,
        output=real, before=before, mean=mean, std=std,
    )  # fmt: skip


def flatten_cell(module: nn.Flatten, x, stage: str, channel: int, row: int, col: int, real: float):
    source = tuple(int(i) for i in torch.unravel_index(torch.tensor(channel), x.shape))
    return FlattenCell(
        stage=stage, kind="flatten", channel=channel, row=row, col=col, total=float(x[source]),
        output=real, source=source,
    )  # fmt: skip


def linear_cell(module: nn.Linear, x, stage: str, channel: int, row: int, col: int, real: float):
    inputs = x.reshape(-1)  # (F,)
    weights = module.weight[channel].detach().double().cpu()  # (F,)
    products = inputs * weights
    bias = float(module.bias[channel].detach()) if module.bias is not None else 0.0
    top = products.abs().argsort(descending=True)[:TOP_INPUTS].tolist()
    return LinearCell(
        stage=stage, kind="linear", channel=channel, row=row, col=col,
        total=float(products.sum()) + bias, output=real, inputs=inputs.float(), weights=weights.float(),
        products=products.float(), bias=bias, top_inputs=top,
    )  # fmt: skip


def softmax_cell(logits: torch.Tensor, index: int) -> SoftmaxCell:
    values = logits.double()
    exp = torch.exp(values - values.max())  # (classes,)
    exp_sum = float(exp.sum())
    return SoftmaxCell(
        stage=SOFTMAX, kind="softmax", channel=index, row=0, col=0, total=float(exp[index]) / exp_sum,
        output=float(torch.softmax(logits.float(), dim=0)[index]), logits=logits.float(),
        exp=exp.float(), exp_sum=exp_sum, probabilities=(exp / exp_sum).float(),
    )  # fmt: skip
