"""Draw your own convolution: slide a kernel over a grayscale grid, with every cell's arithmetic.

Written out by hand (unfold the patches, multiply, sum) rather than calling ``conv2d`` so
the code reads like the picture; tests check it against ``scipy.signal.correlate2d``.
Deep-learning "convolution" is cross-correlation: the kernel is not flipped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from convlens.errors import ConvlensError

KERNELS: dict[str, list[list[float]]] = {
    "edge": [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]],  # the seed's vertical-edge detector
    "sobel-x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "sobel-y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "laplacian": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    "blur": [[1 / 9] * 3] * 3,
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "identity": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
}
MAX_KERNEL = 7  # a kernel a person types in and reads cell by cell; the explorer's bound too
MAX_PADDING = MAX_KERNEL  # rings past the kernel's side add only all-zero cells (and memory)


@dataclass
class ConvolutionCell:
    """How one output cell is made: the patch under the kernel, the products and their sum."""

    row: int
    col: int
    rows: list[int]  # image rows under the kernel (outside 0..H-1: padding zeros)
    cols: list[int]
    patch: torch.Tensor  # (kH, kW)
    padding: torch.Tensor  # (kH, kW) bool, True where the patch lies in the zero padding
    kernel: torch.Tensor  # (kH, kW)
    products: torch.Tensor  # patch * kernel
    sum: float


@dataclass
class Convolution:
    """A kernel slid over an image: the feature map and what produced it."""

    image: torch.Tensor  # (H, W)
    kernel: torch.Tensor  # (kH, kW)
    stride: int
    padding: int
    output: torch.Tensor  # (H_out, W_out) feature map
    patches: torch.Tensor = field(repr=False)  # (H_out, W_out, kH, kW): the window under every cell
    products: torch.Tensor = field(repr=False)  # (H_out, W_out, kH, kW): each window times the kernel
    in_padding: torch.Tensor = field(repr=False)  # (H_out, W_out, kH, kW) bool: window cells in the padding

    def cell(self, row: int, col: int) -> ConvolutionCell:
        """The arithmetic of output cell (row, col)."""
        height, width = self.output.shape
        if not (0 <= row < height and 0 <= col < width):
            raise ConvlensError(
                f"cell ({row}, {col}) is outside the {height}x{width} feature map; "
                f"expected row 0..{height - 1}, col 0..{width - 1}"
            )
        kh, kw = self.kernel.shape
        top, left = row * self.stride, col * self.stride
        rows = [top - self.padding + k for k in range(kh)]
        cols = [left - self.padding + k for k in range(kw)]
        return ConvolutionCell(
            row=row,
            col=col,
            rows=rows,
            cols=cols,
            patch=self.patches[row, col],  # every window was cut once by convolve()
            padding=self.in_padding[row, col],
            kernel=self.kernel,
            products=self.products[row, col],
            sum=float(self.output[row, col]),
        )


def parse_kernel(kernel) -> torch.Tensor:
    """A kernel name (see KERNELS), a matrix as text ("1,0,-1; 2,0,-2" or JSON) or an array → (kH, kW)."""
    if isinstance(kernel, str):
        text = kernel.strip()
        if text.lower() in KERNELS:
            return torch.tensor(KERNELS[text.lower()], dtype=torch.float64)
        kernel = _parse_matrix_text(text)
    try:
        values = np.asarray(kernel, dtype=np.float64)
    except (ValueError, TypeError):
        raise ConvlensError(
            f"kernel {kernel!r}: expected a 2-D numeric matrix with rows of equal length"
        ) from None
    if values.ndim != 2 or values.size == 0:
        raise ConvlensError(
            f"kernel: expected a 2-D numeric matrix, got shape {values.shape}", parameter="kernel"
        )
    if not np.isfinite(values).all():
        raise ConvlensError("kernel: values must be finite numbers", parameter="kernel")
    return torch.from_numpy(values.copy())


def _parse_matrix_text(text: str) -> list:
    names = ", ".join(KERNELS)
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ConvlensError(
                f"kernel {text!r}: not valid JSON; expected e.g. [[-1,0,1],[-1,0,1]]"
            ) from None
    rows = [row for row in re.split(r"[;\n]", text) if row.strip()]
    try:
        matrix = [[float(v) for v in re.split(r"[,\s]+", row.strip())] for row in rows]
    except ValueError:
        raise ConvlensError(
            f"kernel {text!r}: expected a name ({names}) or a numeric matrix such as '1,0,-1; 2,0,-2'"
        ) from None
    if not matrix or len({len(row) for row in matrix}) != 1:
        raise ConvlensError(f"kernel {text!r}: rows must have the same number of values")
    return matrix


def _as_grid(image) -> torch.Tensor:
    try:
        grid = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    except (TypeError, ValueError):  # None, text, ragged rows
        raise ConvlensError(
            f"image: expected a 2-D grayscale grid (H, W) of numbers, got {type(image).__name__}",
            parameter="image",
        ) from None
    if grid.ndim == 3 and grid.shape[0] == 1:
        grid = grid[0]
    if grid.ndim != 2:
        raise ConvlensError(f"image: expected a 2-D grayscale grid (H, W), got shape {tuple(grid.shape)}")
    if not (torch.is_floating_point(grid) or grid.dtype in (torch.uint8, torch.int32, torch.int64)):
        raise ConvlensError(f"image: expected numeric pixels, got {grid.dtype}")
    return grid.double()


def convolve(image, kernel="edge", stride: int = 1, padding: int = 0) -> Convolution:
    """Slide ``kernel`` over a grayscale ``image`` (H, W) with ``stride`` and zero ``padding``."""
    grid, weights = _as_grid(image), parse_kernel(kernel)
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ConvlensError(f"stride: expected a whole number >= 1, got {stride!r}", parameter="stride")
    if isinstance(padding, bool) or not isinstance(padding, int) or not 0 <= padding <= MAX_PADDING:
        raise ConvlensError(
            f"padding: expected a whole number 0..{MAX_PADDING}, got {padding!r}", parameter="padding"
        )
    if not bool(torch.isfinite(grid).all()):
        raise ConvlensError("image: pixel values must be finite numbers", parameter="image")
    kh, kw = weights.shape
    padded = F.pad(grid, (padding,) * 4)  # (H + 2p, W + 2p), zeros around
    if kh > padded.shape[0] or kw > padded.shape[1]:
        raise ConvlensError(
            f"kernel {kh}x{kw} is larger than the {padded.shape[0]}x{padded.shape[1]} (padded) image"
        )
    if max(kh, kw) > MAX_KERNEL:
        raise ConvlensError(
            f"kernel: at most {MAX_KERNEL}x{MAX_KERNEL} values, got {kh}x{kw}", parameter="kernel"
        )
    patches = padded.unfold(0, kh, stride).unfold(1, kw, stride)  # (H_out, W_out, kH, kW)
    products = patches * weights  # (H_out, W_out, kH, kW): multiply ...
    output = products.sum(dim=(-2, -1))  # (H_out, W_out): ... then add up
    if not bool(torch.isfinite(output).all()):  # finite inputs whose products pass float64's range
        raise ConvlensError(
            "image: the image and kernel values are too large: their products overflow (above "
            f"{np.finfo(np.float64).max:.1e}); scale them down",
            parameter="image",
        )
    inside = F.pad(torch.ones_like(grid), (padding,) * 4)  # 1 on the image, 0 on the padding
    in_padding = inside.unfold(0, kh, stride).unfold(1, kw, stride) == 0  # (H_out, W_out, kH, kW)
    return Convolution(grid, weights, stride, padding, output, patches, products, in_padding)
