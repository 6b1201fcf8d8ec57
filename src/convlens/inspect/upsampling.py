"""Layers that make maps larger, as a segmentation decoder (U-Net, FCN) does: their cells by hand.

A transposed convolution runs a convolution backwards: each input cell stamps a copy of the
kernel, scaled by its value, onto the output (stride s apart, shifted by the padding), and an
output cell adds up the stamps that cover it, plus the bias. Input cell i, kernel tap k land on
output ``i * s - p + k * d``, so a cell may be covered by several stamps, one, or none (its value
is then the bias alone). An upsampling layer copies (nearest) or blends (bilinear) the input cells
around the output cell's position in the input, with the weights PyTorch itself computes (in
float32, the way its kernels do, so a weight that is exactly 0 there is 0 here too).

This module gives their cells (``TransposedConvCell``, ``UpsampleCell``), how they move the
receptive field (per output index: the first..last input index it reads, ``geometry.Resampled``)
and their facts; ``LAYER_KINDS`` is what ``convlens.inspect.layer_kinds`` registers. It imports
neither the table nor the walk, so the table can import it without a cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect.cells import Cell
from convlens.inspect.geometry import Window, pair, resample

UPSAMPLE_MODES = ("nearest", "nearest-exact", "bilinear")  # the modes with cell arithmetic


@dataclass(kw_only=True)
class TransposedConvCell(Cell):
    """Every stamp that covers one output cell: the input cells, the kernel taps they land with."""

    input_channels: list[int]  # the input channels of this output channel's group
    rows: list[int]  # input row of each stamp row that covers the cell
    kernel_rows: list[int]  # the kernel row each of those input rows lands with
    cols: list[int]
    kernel_cols: list[int]
    inputs: torch.Tensor  # (C_in/groups, len(rows), len(cols)) the input values stamping here
    kernel: torch.Tensor  # (C_in/groups, len(rows), len(cols)) the kernel taps they land with
    products: torch.Tensor  # inputs * kernel
    channel_sums: torch.Tensor  # (C_in/groups,) one sum per input channel
    bias: float
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]


@dataclass(kw_only=True)
class UpsampleCell(Cell):
    """The input cells an upsampled cell copies or blends, with their weights."""

    mode: str  # nearest, nearest-exact or bilinear
    align_corners: bool
    rows: list[int]  # source rows (one for nearest, up to two for bilinear)
    row_weights: list[float]
    cols: list[int]
    col_weights: list[float]
    positions: tuple[
        float, float
    ]  # where the cell's centre falls in the input (row, col), as PyTorch computes it
    values: torch.Tensor  # (len(rows), len(cols)) the source values
    weights: torch.Tensor  # (len(rows), len(cols)) row weight x col weight
    products: torch.Tensor  # values * weights


# --- transposed convolution -------------------------------------------------------------------


def _stamps(index: int, length: int, kernel: int, stride: int, padding: int, dilation: int) -> list:
    """(input index, kernel tap) pairs whose stamp covers output ``index`` on one axis."""
    return [
        (i, k)
        for k in range(kernel)
        for i in [(index + padding - k * dilation) // stride]
        if (index + padding - k * dilation) % stride == 0 and 0 <= i < length
    ]


def _transposed_axes(module: nn.ConvTranspose2d) -> tuple:
    kernel, stride = pair(module.kernel_size), pair(module.stride)
    padding, dilation = pair(module.padding), pair(module.dilation)
    return kernel, stride, padding, dilation, pair(module.output_padding)


def transposed_conv_cell(module: nn.ConvTranspose2d, x: torch.Tensor, stage, channel, row, col, real):
    kernel, stride, padding, dilation, _ = _transposed_axes(module)
    per_group = module.in_channels // module.groups
    out_per_group = module.out_channels // module.groups
    group = channel // out_per_group
    in_channels = list(range(group * per_group, (group + 1) * per_group))
    row_stamps = sorted(_stamps(row, x.shape[1], kernel[0], stride[0], padding[0], dilation[0]))
    col_stamps = sorted(_stamps(col, x.shape[2], kernel[1], stride[1], padding[1], dilation[1]))
    rows, kernel_rows = [i for i, _ in row_stamps], [k for _, k in row_stamps]
    cols, kernel_cols = [i for i, _ in col_stamps], [k for _, k in col_stamps]
    weight = module.weight.detach().double().cpu()  # (C_in, C_out/groups, kH, kW)
    inputs = x[in_channels][:, rows][:, :, cols]  # (Cg, len(rows), len(cols))
    taps = weight[in_channels, channel % out_per_group][:, kernel_rows][:, :, kernel_cols]
    products = inputs * taps
    channel_sums = products.sum(dim=(1, 2))
    bias = float(module.bias[channel].detach()) if module.bias is not None else 0.0
    return TransposedConvCell(
        stage=stage, kind="transposed-conv", channel=channel, row=row, col=col,
        total=float(channel_sums.sum()) + bias, output=real, input_channels=in_channels,
        rows=rows, kernel_rows=kernel_rows, cols=cols, kernel_cols=kernel_cols, inputs=inputs.float(),
        kernel=taps.float(), products=products.float(), channel_sums=channel_sums.float(), bias=bias,
        stride=stride, padding=padding, dilation=dilation,
    )  # fmt: skip


def transposed_output_length(length: int, axis: int, module: nn.ConvTranspose2d) -> int:
    kernel, stride, padding, dilation, output_padding = _transposed_axes(module)
    span = dilation[axis] * (kernel[axis] - 1)
    return (length - 1) * stride[axis] - 2 * padding[axis] + span + output_padding[axis] + 1


def transposed_window(module: nn.ConvTranspose2d, geometry) -> None:
    """The receptive-field step: output index o reads the first..last input index whose stamp covers it."""
    kernel, stride, padding, dilation, _ = _transposed_axes(module)
    windows = []
    for axis in (0, 1):
        length = geometry.length[axis]
        axis_windows: list[Window] = []
        for index in range(transposed_output_length(length, axis, module)):
            found = [
                i
                for i, _ in _stamps(index, length, kernel[axis], stride[axis], padding[axis], dilation[axis])
            ]
            axis_windows.append((min(found), max(found)) if found else None)
        windows.append(axis_windows)
    resample(geometry, windows, stride)


def transposed_facts(module: nn.ConvTranspose2d) -> dict:
    kernel, stride, padding, _, _ = _transposed_axes(module)
    return {
        "kernel": kernel,
        "stride": stride,
        "padding": (padding[0], padding[0], padding[1], padding[1]),  # cropped from the stamped output
        "filters": module.out_channels,
        "weights_per_filter": module.in_channels // module.groups * kernel[0] * kernel[1],
        "bias": module.bias is not None,
    }


def transposed_mixes(module: nn.ConvTranspose2d) -> bool:
    return module.groups == 1 or module.groups < module.in_channels


# --- upsampling -------------------------------------------------------------------------------


def _factor(module: nn.Upsample, axis: int) -> float | None:
    """The scale factor PyTorch's kernel is given on ``axis`` (None: it uses input / output size)."""
    factor = module.scale_factor
    if factor is None or module.recompute_scale_factor:
        return None
    return float(factor[axis] if isinstance(factor, tuple | list) else factor)


def upsample_output_length(module: nn.Upsample, axis: int, length: int) -> int:
    if module.size is not None:
        return pair(module.size)[axis]
    factor = module.scale_factor
    return math.floor(length * float(factor[axis] if isinstance(factor, tuple | list) else factor))


def _mode(module: nn.Upsample, where: str) -> str:
    if module.mode not in UPSAMPLE_MODES:
        raise ConvlensError(
            f"{where}: upsampling mode {module.mode!r} has no cell arithmetic here; "
            f"expected one of {', '.join(UPSAMPLE_MODES)}",
            parameter="mode",
        )
    return module.mode


def sources(module: nn.Upsample, axis: int, index: int, length: int, out: int) -> tuple[list, list, float]:
    """Input indices output ``index`` reads on ``axis``, their weights, and its source position,
    computed as PyTorch's CPU kernels do (float32 scale and position)."""
    f32 = np.float32
    factor = _factor(module, axis)
    mode = module.mode
    if mode in ("nearest", "nearest-exact"):
        scale = f32(1.0 / factor) if factor and factor > 0 else f32(length) / f32(out)
        if mode == "nearest" and out == length:
            source = index
        elif mode == "nearest" and out == 2 * length:
            source = index >> 1
        elif mode == "nearest":
            source = min(int(np.floor(f32(index) * scale)), length - 1)
        else:  # nearest-exact: the centre of the output cell
            source = min(int(np.floor(f32((index + 0.5) * float(scale)))), length - 1)
        return [source], [1.0], float(source)
    if module.align_corners:
        scale = f32(length - 1) / f32(out - 1) if out > 1 else f32(0)
        position = f32(scale * f32(index))
    else:
        scale = f32(1.0 / factor) if factor and factor > 0 else f32(length) / f32(out)
        position = max(f32(scale * (f32(index) + f32(0.5)) - f32(0.5)), f32(0))
    if out == length:  # PyTorch copies when the size does not change
        return [index], [1.0], float(index)
    first = min(int(np.floor(position)), length - 1)
    share = min(max(f32(position - f32(first)), f32(0)), f32(1))  # float32, as the kernel's lambda
    second = first + (1 if first < length - 1 else 0)
    pairs = [(first, float(f32(1) - share)), (second, float(share))]
    if second == first:
        pairs = [(first, 1.0)]
    return [i for i, _ in pairs], [w for _, w in pairs], float(position)


def upsample_cell(module: nn.Upsample, x: torch.Tensor, stage, channel, row, col, real):
    mode = _mode(module, f"stage {stage!r}")
    found = []
    for axis, index in ((0, row), (1, col)):
        length = x.shape[1 + axis]
        found.append(sources(module, axis, index, length, upsample_output_length(module, axis, length)))
    (rows, row_weights, row_at), (cols, col_weights, col_at) = found
    values = x[channel][rows][:, cols]  # (len(rows), len(cols))
    weights = torch.tensor(row_weights, dtype=torch.float64)[:, None] * torch.tensor(
        col_weights, dtype=torch.float64
    )
    products = values * weights
    return UpsampleCell(
        stage=stage, kind="upsample", channel=channel, row=row, col=col, total=float(products.sum()),
        output=real, mode=mode, align_corners=bool(module.align_corners), rows=rows,
        row_weights=row_weights, cols=cols, col_weights=col_weights, positions=(row_at, col_at),
        values=values.float(), weights=weights.float(), products=products.float(),
    )  # fmt: skip


def upsample_window(module: nn.Upsample, geometry) -> None:
    """The receptive-field step: each output index reads its source cells with a nonzero weight."""
    _mode(module, "receptive field")
    windows, factors = [], []
    for axis in (0, 1):
        length = geometry.length[axis]
        out = upsample_output_length(module, axis, length)
        axis_windows: list[Window] = []
        for index in range(out):
            read = [i for i, w in zip(*sources(module, axis, index, length, out)[:2], strict=True) if w != 0]
            axis_windows.append((min(read), max(read)) if read else None)
        windows.append(axis_windows)
        factors.append(out / length)
    resample(geometry, windows, factors)


def _interpolate(
    input,
    size=None,
    scale_factor=None,
    mode="nearest",
    align_corners=None,
    recompute_scale_factor=None,
    antialias=False,
):
    """``F.interpolate`` in a traced model as the ``nn.Upsample`` that computes the same (a mode with
    cell arithmetic, no antialiasing); the trace keeps the call itself if the outputs differ."""
    if antialias or mode not in UPSAMPLE_MODES or not isinstance(input, torch.Tensor) or input.ndim != 4:
        return None
    return nn.Upsample(size, scale_factor, mode, align_corners, recompute_scale_factor)


LAYER_KINDS = [
    {
        "module_type": nn.ConvTranspose2d,
        "role": "transposed_convolution",
        "help": "a transposed convolution: each input cell stamps the kernel, scaled by its value, onto "
        "a larger output; each output cell adds up the stamps that cover it, plus a bias",
        "arithmetic": transposed_conv_cell,
        "geometry": transposed_window,
        "mixes_channels": transposed_mixes,
        "grad_cam_target": True,
        "hyperparameters": transposed_facts,
        "affine": True,
    },
    {
        "module_type": nn.Upsample,
        "role": "upsample",
        "help": "upsampling: each output cell copies (nearest) or blends (bilinear) the input cells "
        "around its position, channel by channel",
        "arithmetic": upsample_cell,
        "geometry": upsample_window,
        "grad_cam_target": True,
        "affine": True,
        "calls": {F.interpolate: _interpolate},
    },
]
