"""Pictures of the inside view (matplotlib, Agg): feature maps, filters, attributions, convolutions.

Rendering only: every number drawn here was computed by the other ``convlens.inspect``
modules. Signed values use a diverging colour map centred on zero (blue negative, red
positive) so a learner can tell "pushes down" from "pushes up" at a glance.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

SIGNED = "RdBu_r"  # diverging: blue < 0 < red
UNSIGNED = "magma"  # zero is black: what ReLU/pooling outputs look like
PIXELS = "gray"
MAX_TILES = 64  # feature maps per picture; the title says how many were left out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _limits(values: torch.Tensor) -> dict:
    """Colour map and range: symmetric around 0 when there are negatives."""
    low, high = float(values.min()), float(values.max())
    if low < 0:
        bound = max(abs(low), abs(high), 1e-12)
        return {"cmap": SIGNED, "vmin": -bound, "vmax": bound}
    return {"cmap": UNSIGNED, "vmin": 0.0, "vmax": max(high, 1e-12)}


def _show_image(ax, image: torch.Tensor, title: str = "") -> None:
    """A (C, H, W) or (H, W) image in [0, 1]: grayscale or RGB."""
    image = image.detach().cpu()
    if image.ndim == 3 and image.shape[0] == 3:
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    else:
        ax.imshow(image.reshape(image.shape[-2:]).numpy(), cmap=PIXELS, vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def input_figure(image: torch.Tensor, path: str | Path, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3, 3))
    _show_image(ax, image, title)
    return _save(fig, path)


def _mosaic(tiles: torch.Tensor, cols: int) -> torch.Tensor:
    """(N, h, w) tiles → one (rows*(h+1)-1, cols*(w+1)-1) picture with NaN gaps (drawn as light gray).

    One ``imshow`` of a mosaic draws in milliseconds where hundreds of subplots take seconds.
    """
    count, height, width = tiles.shape
    rows = math.ceil(count / cols)
    mosaic = torch.full((rows * (height + 1) - 1, cols * (width + 1) - 1), float("nan"))
    for index in range(count):
        r, c = divmod(index, cols)
        mosaic[r * (height + 1) : r * (height + 1) + height, c * (width + 1) : c * (width + 1) + width] = (
            tiles[index]
        )
    return mosaic


def _mosaic_axes(ax, mosaic: torch.Tensor, style: dict, size: tuple[int, int], rows: int, cols: int):
    import matplotlib

    # gaps in mid gray: apart from white (0 on RdBu) and black (0 on magma)
    cmap = matplotlib.colormaps[style["cmap"]].with_extremes(bad="#8c8c8c")
    picture = ax.imshow(
        mosaic.numpy(), cmap=cmap, vmin=style["vmin"], vmax=style["vmax"], interpolation="nearest"
    )
    height, width = size
    ax.set_xticks([c * (width + 1) + (width - 1) / 2 for c in range(cols)], [str(c) for c in range(cols)])
    ax.set_yticks([r * (height + 1) + (height - 1) / 2 for r in range(rows)], [str(r) for r in range(rows)])
    ax.tick_params(length=0, labelsize=7)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return picture


def feature_maps_figure(maps: torch.Tensor, stage: str, kind: str, path: str | Path) -> Path:
    """One tile per channel of a (C, H, W) stage output, one shared colour scale with a colour bar."""
    plt = _pyplot()
    shown = maps[:MAX_TILES].detach().cpu().float()
    count, height, width = shown.shape
    cols = min(count, 8)
    rows = math.ceil(count / cols)
    fig, ax = plt.subplots(figsize=(1.2 * cols + 1.6, 1.2 * rows + 0.9))
    picture = _mosaic_axes(ax, _mosaic(shown, cols), _limits(shown), (height, width), rows, cols)
    ax.set_xlabel("channel = 8 x row + column", fontsize=8)
    left_out = f" (first {MAX_TILES} of {maps.shape[0]})" if maps.shape[0] > MAX_TILES else ""
    ax.set_title(f"{stage} ({kind}): {maps.shape[0]} feature maps of {height}x{width}{left_out}", fontsize=10)
    fig.colorbar(picture, ax=ax, shrink=0.8, label="activation")
    return _save(fig, path)


def filters_figure(weight: torch.Tensor, stage: str, path: str | Path) -> Path:
    """Kernels as tiles: rows are output channels, columns input channels (3x3 kernels included)."""
    plt = _pyplot()
    out_channels, in_channels, kh, kw = weight.shape
    rows, cols = min(out_channels, 64), min(in_channels, 32)
    more = "" if (rows, cols) == (out_channels, in_channels) else f", first {rows}x{cols} shown"
    shown = weight[:rows, :cols].detach().cpu().float().reshape(rows * cols, kh, kw)
    bound = max(float(shown.abs().max()), 1e-12)  # weights are signed: always centre on zero
    style = {"cmap": SIGNED, "vmin": -bound, "vmax": bound}
    if in_channels == 1:  # one kernel per output channel: wrap them into rows of 8
        cols, rows = min(rows, 8), math.ceil(rows / 8)
    scale = 0.13 * (kw + 1)
    fig, ax = plt.subplots(figsize=(max(5.0, scale * cols + 2.0), max(2.4, scale * rows + 1.2)))
    picture = _mosaic_axes(ax, _mosaic(shown, cols), style, (kh, kw), rows, cols)
    if in_channels == 1:
        ax.set_xlabel("output channel = 8 x row + column (one input channel)", fontsize=9)
    else:
        ax.set_xlabel("input channel", fontsize=9)
        ax.set_ylabel("output channel", fontsize=9)
    ax.set_title(f"{stage}: {out_channels}x{in_channels} kernels of {kh}x{kw}{more}", fontsize=10)
    fig.colorbar(picture, ax=ax, shrink=0.8, label="weight")
    return _save(fig, path)


def attribution_figure(image: torch.Tensor, attribution, class_name: str, path: str | Path) -> Path:
    """The input, the attribution map, and the map laid over the input."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    _show_image(axes[0], image, "input")
    heat = axes[1].imshow(attribution.map.cpu().numpy(), cmap="inferno", vmin=0, vmax=1)
    where = f" at {attribution.stage}" if attribution.stage else ""
    axes[1].set_title(f"{attribution.method}{where}", fontsize=9)
    _show_image(axes[2], image, "overlay")
    axes[2].imshow(attribution.map.cpu().numpy(), cmap="inferno", alpha=0.55, vmin=0, vmax=1)
    for ax in axes[1:2]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(heat, ax=axes, shrink=0.8, label="importance (1 = most)")
    fig.suptitle(
        f"why '{class_name}' (class {attribution.target}, p = {attribution.probability:.3f})", fontsize=10
    )
    return _save(fig, path)


def probabilities_figure(probabilities: torch.Tensor, class_names: list[str], path: str | Path) -> Path:
    plt = _pyplot()
    values = probabilities.detach().cpu().tolist()
    top = max(range(len(values)), key=values.__getitem__)
    fig, ax = plt.subplots(figsize=(5, 0.3 * len(values) + 1))
    colors = ["tab:orange" if i == top else "tab:blue" for i in range(len(values))]
    ax.barh(range(len(values)), values, color=colors)
    ax.set_yticks(range(len(values)), [str(n) for n in class_names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability (softmax)")
    ax.set_ylabel("class")
    ax.set_title(f"prediction: {class_names[top]} ({values[top]:.1%})", fontsize=10)
    for i, v in enumerate(values):
        ax.text(min(v + 0.01, 0.9), i, f"{v:.1%}", va="center", fontsize=7)
    return _save(fig, path)


def _matrix(ax, values: torch.Tensor, title: str, signed: bool, annotate: bool, image: bool) -> object:
    style = {"cmap": PIXELS, "vmin": 0, "vmax": 1} if image else _limits(values)
    if signed and not image:
        magnitude = values.abs().flatten()
        if magnitude.numel() > 4096:  # big maps: a few border pixels would wash out every other edge
            bound = float(magnitude.kthvalue(int(0.995 * magnitude.numel())).values)
            title += "\ncolours clipped at the 99.5th percentile of |value|"
        else:
            bound = float(magnitude.max())
        style = {"cmap": SIGNED, "vmin": -max(bound, 1e-12), "vmax": max(bound, 1e-12)}
    picture = ax.imshow(values.numpy(), **style)
    ax.set_title(title, fontsize=9)
    height, width = values.shape
    if annotate:
        for r in range(height):
            for c in range(width):
                ax.text(c, r, f"{float(values[r, c]):.3g}", ha="center", va="center", fontsize=7,
                        color="tab:green")  # fmt: skip
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    return picture


def convolution_figure(convolution, path: str | Path, at: tuple[int, int] | None = None) -> Path:
    """Input, kernel and feature map side by side; ``at`` outlines one cell and the patch it reads."""
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), gridspec_kw={"width_ratios": [4, 2, 4]})
    image, kernel, output = (
        t.detach().cpu().float() for t in (convolution.image, convolution.kernel, convolution.output)
    )
    small = max(image.shape) <= 12
    _matrix(axes[0], image, f"input {image.shape[0]}x{image.shape[1]}", False, small, image=True)
    _matrix(
        axes[1], kernel, f"kernel {kernel.shape[0]}x{kernel.shape[1]}", True, max(kernel.shape) <= 7, False
    )
    feature = _matrix(
        axes[2], output, f"feature map {output.shape[0]}x{output.shape[1]} "
        f"(stride {convolution.stride}, padding {convolution.padding})", True, max(output.shape) <= 12, False,
    )  # fmt: skip
    fig.colorbar(feature, ax=axes[2], shrink=0.8, label="sum of products")
    if at is not None:
        cell = convolution.cell(*at)
        kh, kw = kernel.shape
        axes[0].add_patch(
            Rectangle((cell.cols[0] - 0.5, cell.rows[0] - 0.5), kw, kh, fill=False, lw=2.5, ec="tab:orange")
        )
        axes[2].add_patch(Rectangle((at[1] - 0.5, at[0] - 0.5), 1, 1, fill=False, lw=2.5, ec="tab:orange"))
        axes[2].set_title(axes[2].get_title() + f"\ncell ({at[0]}, {at[1]}) = {cell.sum:.4g}", fontsize=9)
    return _save(fig, path)


def feature_visualization_figure(
    visualization, top_images: torch.Tensor | None, top_scores: torch.Tensor | None, path: str | Path
) -> Path:
    """One row per channel: the optimized image, then the dataset images that excite it most."""
    plt = _pyplot()
    channels = visualization.channels
    k = 0 if top_images is None else top_images.shape[1]
    fig, axes = plt.subplots(
        len(channels), k + 1, figsize=(1.3 * (k + 1) + 0.6, 1.45 * len(channels) + 0.5), squeeze=False
    )
    for row, channel in enumerate(channels):
        _show_image(
            axes[row, 0],
            visualization.images[row],
            f"ch {channel}: {float(visualization.activation[row]):.2f}",
        )
        axes[row, 0].set_ylabel("optimized", fontsize=7)
        for j in range(k):
            _show_image(axes[row, j + 1], top_images[row, j], f"{float(top_scores[row, j]):.2f}")
    title = f"{visualization.stage}: what each channel looks for (mean activation in titles)"
    if k:
        title += f"\nleft: optimized image; right: the {k} test images that excite it most"
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
