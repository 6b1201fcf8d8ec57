"""The one colour convention of every picture convlens draws, and the colour limits it uses.

- signed values (convolution outputs, weights, BatchNorm, perturbations): ``SIGNED``, a
  diverging map centred on 0 — blue negative, white zero, red positive;
- magnitudes (ReLU/pooling outputs, attribution and Grad-CAM maps, counts): ``MAGNITUDE``,
  one sequential map — black for the lowest value, pale yellow for the highest;
- pixels (the images themselves): ``PIXELS``, grayscale in [0, 1] (or RGB).

Limits come from robust percentiles (``colour_limits``), so one outlier cannot wash out a
whole map; a colour bar says when colours were clipped. The explorer's ``draw.js`` uses the
same two maps and the same rule.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

import numpy as np
import torch

SIGNED = "RdBu_r"  # diverging: blue < 0 (white) < red
MAGNITUDE = "magma"  # sequential: black (low) → purple → orange → pale yellow (high)
PIXELS = "gray"
GAP = "#8c8c8c"  # between mosaic tiles: apart from white (0 on SIGNED) and black (low on MAGNITUDE)
# one colour per data split in every training curve (report and the explorer's card.js alike)
SPLIT_COLOURS = {"train": "#e07020", "val": "#20a060", "test": "#2060c0"}
# named colours of the series in line and bar charts (the lab's figures): the split colours first,
# so the first three series read like training curves, then five more before the cycle repeats
SERIES = ("#2060c0", "#e07020", "#20a060", "#a040b0", "#c0a020", "#20a0b0", "#a06040", "#e060a0")
REFERENCE = "#808080"  # a baseline drawn for comparison: a random ranking, "perfect", a threshold
PASS = "#20a060"  # a check that passes
FAIL = "#c03030"  # a check that fails
PERCENTILE = 99.5  # signed: of |value|; magnitudes: 100 - PERCENTILE and PERCENTILE
ROBUST_FROM = 256  # fewer finite values than this: plain min/max (a 3x3 kernel has no outliers)
BAR_TITLE_WIDTH = 12  # characters per line of a vertical colour bar's label (the margin it widens)
BAR_FONT_SIZE = 8  # pt: a colour bar's title and numbers
TINY = 1e-12  # the smallest colour range: a constant map still draws


@dataclass(frozen=True)
class Limits:
    """Where a colour map starts and ends, and whether values beyond were clipped."""

    vmin: float
    vmax: float
    cmap: str
    signed: bool = False
    low_clipped: bool = False  # some values lie below vmin
    high_clipped: bool = False  # some values lie above vmax

    @property
    def clipped(self) -> bool:
        return self.low_clipped or self.high_clipped

    @property
    def extend(self) -> str:
        """The colour bar's ``extend``: arrows at the clipped ends."""
        return {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
            (self.low_clipped, self.high_clipped), "neither"
        )

    @property
    def note(self) -> str:
        """Words for a title or colour-bar label; empty when nothing was clipped."""
        if not self.clipped:
            return ""
        if self.signed:
            return f"clipped at the {PERCENTILE:g}th percentile of |value|"
        return f"clipped at the {100 - PERCENTILE:g}th/{PERCENTILE:g}th percentiles"

    def style(self) -> dict:
        """Keyword arguments for ``imshow``."""
        return {"cmap": colour_map(self.cmap), "vmin": self.vmin, "vmax": self.vmax}


def series_colour(index: int) -> str:
    """The colour of series ``index`` (0, 1, ...) of a chart, cycling through ``SERIES``."""
    return SERIES[index % len(SERIES)]


def pixel_limits() -> Limits:
    return Limits(0.0, 1.0, PIXELS)


def symmetric_limits(bound: float) -> Limits:
    """Signed limits of known size (e.g. an attack's ±ε): nothing to estimate, nothing clipped."""
    bound = max(abs(bound), TINY)
    return Limits(-bound, bound, SIGNED, signed=True)


def colour_limits(values, signed: bool | None = None, percentile: float = PERCENTILE) -> Limits:
    """The colour range of ``values`` (any shape; NaN and ±inf ignored).

    ``signed=None`` decides from the data: any negative value → signed. Signed limits are
    symmetric around 0 at the ``percentile``-th percentile of |value|; magnitude limits are the
    (100 - percentile)-th and percentile-th percentiles. With fewer than ``ROBUST_FROM`` finite
    values (or ``percentile=100``) they are the plain min/max.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=np.float64).ravel()
    array = array[np.isfinite(array)]
    if array.size == 0:
        return Limits(-1.0, 1.0, SIGNED, signed=True) if signed else Limits(0.0, 1.0, MAGNITUDE)
    low, high = float(array.min()), float(array.max())
    if signed is None:
        signed = low < 0
    robust = array.size >= ROBUST_FROM and percentile < 100
    if signed:
        top = max(abs(low), abs(high))
        bound = float(np.percentile(np.abs(array), percentile)) if robust else top
        if bound < TINY:  # nearly all zeros: the percentile lands on them; keep the rare values visible
            bound = top
        bound = max(bound, TINY)
        return Limits(-bound, bound, SIGNED, True, low < -bound, high > bound)
    vmin, vmax = (
        (float(np.percentile(array, 100 - percentile)), float(np.percentile(array, percentile)))
        if robust
        else (low, high)
    )
    if vmax - vmin < TINY:  # a sparse map (a ReLU's mostly zeros): the percentiles collapse onto
        vmin, vmax = low, high  # its most common value, which would hide every other one
    if vmax - vmin < TINY:  # a constant map: centre it in a tiny range
        vmin, vmax = vmin - TINY, vmax + TINY
    return Limits(vmin, vmax, MAGNITUDE, False, low < vmin, high > vmax)


def count_limits(counts) -> Limits:
    """Limits of counts (a confusion matrix): from 0 to the largest count, sequential, nothing clipped."""
    values = torch.as_tensor(counts, dtype=torch.float64).flatten()
    return colour_limits(
        torch.cat([values, torch.zeros(1, dtype=torch.float64)]), signed=False, percentile=100
    )


def colour_map(name: str):
    """A matplotlib colour map (no pyplot) that draws NaN — mosaic gaps — in ``GAP`` grey."""
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=GAP)


def show_map(axis, values: torch.Tensor, limits: Limits, alpha: float | None = None, ticks: bool = False):
    """A 2-D map in the convention's colours; returns the image for ``colour_bar``."""
    array = values.detach().cpu().float().numpy() if isinstance(values, torch.Tensor) else values
    image = axis.imshow(array, interpolation="nearest", alpha=alpha, **limits.style())
    if not ticks:
        axis.set_xticks([])
        axis.set_yticks([])
    return image


def colour_bar(figure, image, axes, label: str, limits: Limits, **options):
    """The colour bar of ``image`` next to ``axes``, its label short and level.

    A rotated label as long as "activation (clipped at the 99.5th percentile of |value|)" ran
    into the next row of maps; the bar now says only *that* it is clipped (its arrows say at
    which end) and the figure's caption (``output.figure_caption``) says where.
    """
    from matplotlib.cm import ScalarMappable

    from convlens.views.plots.output import add_caption

    options.setdefault("shrink", 0.8)
    solid = ScalarMappable(norm=image.norm, cmap=image.get_cmap())  # full colours, also under an overlay
    bar = figure.colorbar(solid, ax=axes, extend=limits.extend, **options)
    title = f"{label}, clipped" if limits.clipped else label
    if bar.orientation == "vertical":  # level, beside the bar's middle: inside its own row of maps
        bar.set_label(
            textwrap.fill(title, BAR_TITLE_WIDTH), fontsize=BAR_FONT_SIZE, rotation=0, ha="left", va="center"
        )
    else:
        bar.set_label(title, fontsize=BAR_FONT_SIZE)
    bar.ax.tick_params(labelsize=BAR_FONT_SIZE)
    if limits.vmax - limits.vmin <= 4 * TINY:  # a constant map: one tick at its value, no "1e-12" offset
        bar.set_ticks([(limits.vmin + limits.vmax) / 2])
    if limits.clipped:
        add_caption(figure, clipping_caption())
    return bar


def clipping_caption() -> str:
    """What a colour bar marked "clipped" means, in a sentence for the figure's caption (one
    sentence for signed and magnitude bars alike, so a figure with both says it once)."""
    return (
        "A colour bar marked “clipped” stops short of the most extreme values (a signed map at ± the "
        f"{PERCENTILE:g}th percentile of |value|, a magnitude at its {100 - PERCENTILE:g}th and "
        f"{PERCENTILE:g}th percentiles): values beyond take its end colour (the arrow), so one outlier "
        "cannot wash out the map."
    )


def picture(axis, image: torch.Tensor, title: str = "") -> None:
    """Pixels as pixels: a (C, H, W) or (H, W) image in [0, 1], grayscale or RGB."""
    array = image.detach().cpu().float()
    if array.ndim == 2:
        array = array.unsqueeze(0)
    if array.shape[0] == 3:
        axis.imshow(array.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    else:
        axis.imshow(array[0].numpy(), cmap=PIXELS, vmin=0.0, vmax=1.0, interpolation="nearest")
    if title:
        axis.set_title(title, fontsize=9)
    axis.set_xticks([])
    axis.set_yticks([])


def text_colour(value: float, limits: Limits) -> str:
    """Black or white, whichever reads better on ``value``'s colour."""
    import matplotlib

    span = limits.vmax - limits.vmin
    t = 0.5 if span <= 0 or math.isnan(value) else min(1.0, max(0.0, (value - limits.vmin) / span))
    red, green, blue, _ = matplotlib.colormaps[limits.cmap](t)
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
