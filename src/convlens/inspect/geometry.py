"""How a layer moves the receptive field: window geometry per kind of layer.

A windowed layer with kernel k, stride s, padding p and dilation d turns a map's (size, jump,
start) into (size + d(k-1) jump, jump s, start - p jump), per axis. ``Geometry`` carries that
state from stage to stage; each layer kind (``convlens.inspect.layer_kinds``) names one of the
functions here, or its own, to advance it. They live apart from the receptive-field walk so
that the layer-kind table can name them without importing the walk that reads the table.

A layer that makes maps larger (an upsampling, a transposed convolution) reads an irregular set
of input indices per output index, which no (kernel, stride, padding) window describes; it adds
a ``Resampled`` step instead: per output index, the first..last input index it reads. ``reads``
walks either kind of step back. After one, ``jump`` may be a fraction (neighbouring cells are
less than a pixel apart) and ``size`` is rounded up to whole pixels; ``region`` stays exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn


def pair(value) -> tuple[int, int]:
    """An int or a (rows, cols) sequence as a (rows, cols) pair of ints."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def conv_padding(module: nn.Conv2d) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zeros a conv adds, also for padding='same' (extra goes bottom/right)."""
    if module.padding == "valid":
        return 0, 0, 0, 0
    if module.padding == "same":
        sides = []
        for k, d in zip(module.kernel_size, module.dilation, strict=True):
            total = d * (k - 1)
            sides += [total // 2, total - total // 2]
        return sides[0], sides[1], sides[2], sides[3]
    ph, pw = pair(module.padding)
    return ph, ph, pw, pw


def pool_geometry(module: nn.Module) -> tuple:
    """(kernel, stride, padding, dilation) of a pooling layer, each as a (rows, cols) pair."""
    kernel, stride = pair(module.kernel_size), pair(module.stride or module.kernel_size)
    padding = pair(module.padding)
    dilation = pair(getattr(module, "dilation", 1))
    return kernel, stride, padding, dilation


@dataclass
class Geometry:
    """The receptive field of the current stage's cells, as the walk through the stages reaches it."""

    size: list[int]
    jump: list[int]
    start: list[int]
    length: list[int]  # the current map's rows and cols
    layers: list[list] = field(default_factory=lambda: [[], []])
    whole: bool = False
    flattened: bool = False  # after a flatten: the next layer that mixes units sees everything

    def apply(self, kernel, stride, padding, dilation, ceil_mode: bool = False) -> None:
        """``padding`` is (before, after) per axis: (top, bottom), (left, right)."""
        for axis in (0, 1):
            span = dilation[axis] * (kernel[axis] - 1) + 1
            before, after = padding[axis]
            self.layers[axis].append((span, stride[axis], before, self.length[axis]))
            self.size[axis] += (span - 1) * self.jump[axis]
            self.start[axis] -= before * self.jump[axis]
            self.jump[axis] *= stride[axis]
            room = self.length[axis] + before + after - span
            steps = -(-room // stride[axis]) if ceil_mode else room // stride[axis]
            if ceil_mode and steps * stride[axis] >= self.length[axis] + before:
                steps -= 1  # PyTorch: the last window must start inside the image or its left padding
            self.length[axis] = steps + 1
            self.size[axis], self.start[axis] = (
                _whole(self.size[axis], math.ceil),
                _whole(self.start[axis], math.floor),
            )
            self.jump[axis] = _number(self.jump[axis])


Window = tuple[int, int] | None  # first and last input index one output index reads; None: none
EMPTY = (0, -1)  # an empty range of indices (first > last), as ``reads`` gives it


@dataclass(frozen=True)
class Resampled:
    """One axis of a layer that makes the map larger: output index o reads input indices
    ``windows[o]`` (first, last), or none (None: a transposed convolution whose stride outruns its
    kernel leaves cells that only its bias reaches). ``length``: the input's length on this axis."""

    windows: tuple[Window, ...]
    length: int


def reads(layer, first: int, last: int) -> tuple[int, int]:
    """The input indices that output indices first..last of ``layer`` read, clipped to the input:
    a window step (span, stride, padding before, input length) or a ``Resampled`` one. first >
    last means none, and stays none further back."""
    if first > last:
        return first, last
    if isinstance(layer, Resampled):
        found = [w for w in layer.windows[max(first, 0) : last + 1] if w is not None]
        if not found:
            return EMPTY
        return min(w[0] for w in found), max(w[1] for w in found)
    span, stride, padding, length = layer
    return max(first * stride - padding, 0), min(last * stride - padding + span - 1, length - 1)


def through(pixels: list[tuple[int, int]], layer, outputs: int) -> list[tuple[int, int]]:
    """Input pixels (first, last) of each of ``outputs`` output indices of ``layer``, given those of
    each of its input indices: the union over the input indices each one reads."""
    result = []
    for index in range(outputs):
        first, last = reads(layer, index, index)
        seen = [pixels[i] for i in range(first, last + 1) if pixels[i][0] <= pixels[i][1]]
        result.append((min(p[0] for p in seen), max(p[1] for p in seen)) if seen else EMPTY)
    return result


def _whole(value, rounding):
    """A whole number as an int; after an upsampling a size may be a fraction: ``rounding`` it."""
    return int(value) if float(value).is_integer() else int(rounding(value))


def _number(value):
    """A jump: an int when whole, else a fraction of a pixel to 6 decimals."""
    return int(value) if float(value).is_integer() else round(float(value), 6)


def resample(geometry: Geometry, windows: list[list[Window]], factors) -> None:
    """Advance ``geometry`` through a layer that makes the map larger: per axis, what each output
    index reads (``Resampled``) and how many output cells there are per input cell (``factors``)."""
    for axis in (0, 1):
        axis_windows = tuple(windows[axis])
        geometry.layers[axis].append(Resampled(axis_windows, geometry.length[axis]))
        seen = [w for w in axis_windows if w is not None]
        widest = max((last - first for first, last in seen), default=0)
        jump = geometry.jump[axis]
        geometry.size[axis] = _whole(geometry.size[axis] + widest * jump, math.ceil)
        geometry.start[axis] = _whole(geometry.start[axis] + (seen[0][0] if seen else 0) * jump, math.floor)
        geometry.jump[axis] = _number(jump / factors[axis])
        geometry.length[axis] = len(axis_windows)


def conv_window(module: nn.Conv2d, geometry: Geometry) -> None:
    """A convolution: its kernel, stride, padding (also 'same') and dilation."""
    top, bottom, left, right = conv_padding(module)
    geometry.apply(module.kernel_size, module.stride, ((top, bottom), (left, right)), module.dilation)


def pool_window(module: nn.Module, geometry: Geometry) -> None:
    """A max or average pooling layer: its window, stride, padding, dilation and ceil_mode."""
    kernel, stride, (pad_rows, pad_cols), dilation = pool_geometry(module)
    geometry.apply(kernel, stride, ((pad_rows, pad_rows), (pad_cols, pad_cols)), dilation, module.ceil_mode)


def same_cells(module: nn.Module, geometry: Geometry) -> None:
    """A layer that works cell by cell (activations, BatchNorm, dropout): each output cell sees
    exactly what its input cell sees."""


def flattens(module: nn.Module, geometry: Geometry) -> None:
    """Flatten only reorders: each unit is one cell of the map before it and sees what it sees."""
    geometry.flattened = True


def whole_input(module: nn.Module, geometry: Geometry) -> None:
    """Global pooling and linear layers: every output mixes all positions."""
    geometry.whole = True
