"""Receptive fields through a graph: branches and merges, the union of windows.

A traced model (``convlens.models.traced``) names each stage's inputs. Each stage's geometry
starts from its input's (``convlens.inspect.geometry``, advanced by its layer kind as in a chain),
and each output row and column keeps the exact first..last input pixel it reads, clipped at
every map's edges on the way; where branches meet (an addition, a concatenation) a cell reads
the union of its inputs' windows. The branches of a CNN keep their windows centred on the same
cell (a shortcut's 1x1 window lies inside the block's 3x3 ones), so that union is one rectangle.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from convlens.inspect.geometry import Geometry, Resampled, through

Intervals = list[tuple[int, int]]  # per output row (or col): first and last input pixel it reads


@dataclass
class Walk:
    """What the walk knows at one stage: its geometry and, per axis, each index's input pixels."""

    geometry: Geometry
    pixels: tuple[Intervals, Intervals]
    shape: tuple[int, ...]


def start(shape: tuple[int, ...]) -> Walk:
    """The image itself: each pixel reads only itself."""
    rows, cols = shape[1:]
    geometry = Geometry(size=[1, 1], jump=[1, 1], start=[0, 0], length=[rows, cols])
    return Walk(geometry, ([(r, r) for r in range(rows)], [(c, c) for c in range(cols)]), shape)


def _through(pixels: Intervals, layers: list, final_length: int) -> Intervals:
    """Input pixels of each output index after ``layers`` (window steps or ``Resampled`` ones,
    ``geometry.reads``), the last of which makes ``final_length`` outputs; clipped at each map's
    edges. A window step's input length is its last number; a ``Resampled`` one's, ``length``."""
    if not layers:
        return pixels
    lengths = [layer.length if isinstance(layer, Resampled) else layer[3] for layer in layers[1:]]
    for layer, outputs in zip(layers, [*lengths, final_length], strict=True):
        pixels = through(pixels, layer, outputs)
    return pixels


def step(module: nn.Module, sources: list[Walk], shape: tuple[int, ...], advance) -> Walk:
    """The walk at a stage reading ``sources``, whose own layer moves the geometry by ``advance``."""
    if len(sources) == 1:
        geometry = copy.deepcopy(sources[0].geometry)
        pixels = sources[0].pixels
    else:
        geometry, pixels = _union(sources)
    known = [len(geometry.layers[0]), len(geometry.layers[1])]
    advance(module, geometry)
    if not geometry.whole and len(shape) == 3:
        pixels = tuple(
            _through(pixels[axis], geometry.layers[axis][known[axis] :], geometry.length[axis])
            for axis in (0, 1)
        )
    return Walk(geometry, pixels, shape)


def _union(sources: list[Walk]) -> tuple[Geometry, tuple[Intervals, Intervals]]:
    """Where branches meet: every cell reads what it reads along each branch."""
    widest = max(sources, key=lambda walk: walk.geometry.size[0] * walk.geometry.size[1])
    geometry = copy.deepcopy(widest.geometry)
    lengths = {tuple(walk.geometry.length) for walk in sources}
    if any(walk.geometry.whole for walk in sources) or len(lengths) != 1:
        geometry.whole = True  # branches of different sizes: no cell-by-cell correspondence
        return geometry, widest.pixels
    for axis in (0, 1):
        first = min(walk.geometry.start[axis] for walk in sources)
        last = max(walk.geometry.start[axis] + walk.geometry.size[axis] for walk in sources)
        geometry.start[axis], geometry.size[axis] = first, last - first
    pixels = tuple(
        [
            (
                min(walk.pixels[axis][i][0] for walk in sources),
                max(walk.pixels[axis][i][1] for walk in sources),
            )
            for i in range(len(widest.pixels[axis]))
        ]
        for axis in (0, 1)
    )
    geometry.flattened = any(walk.geometry.flattened for walk in sources)
    return geometry, pixels
