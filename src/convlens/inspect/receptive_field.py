"""Output sizes and receptive fields of every stage: which input pixels one cell can see.

Each stage maps its output cell ``i`` to input pixels ``start + i * jump .. + size - 1``
(per axis). A layer with kernel k, stride s, padding p and dilation d turns (size, jump,
start) into (size + d(k-1) jump, jump s, start - p jump). Residual blocks follow their main
path (their shortcut sees a subset of it); in a model traced to a graph every branch is walked
and a merge sees the union of its inputs' windows (``graph_fields``); global pooling and linear
layers see everything.
Flatten only reorders: each of its units is one cell of the map before it and sees what that
cell sees (``unit_grid`` maps a unit to its cell).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect import graph_fields
from convlens.inspect._stages import (
    SOFTMAX,
    eval_mode,
    find_stage,
    input_shape,
    kind_name,
    model_device,
    model_stages,
    stage_inputs,
)
from convlens.inspect.geometry import Geometry, reads
from convlens.inspect.hooks import StageRecorder
from convlens.inspect.layer_kinds import layer_kind
from convlens.models.traced import INPUT

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
    whole_image: bool = False  # every cell sees the whole input (after linear layers, global pooling)
    unit_grid: tuple[int, int, int] | None = None  # flatten: unit u is a cell of this (C, h, w) map
    # per axis, every windowed layer so far as (span, stride, padding before, input length), or
    # what each output index reads for a layer that makes the map larger (geometry.Resampled)
    layers: tuple[tuple[tuple[int, int, int, int], ...], ...] = field(default=((), ()), repr=False)
    # a graph's stage: per axis, each output index's first..last input pixel (the union over branches)
    pixels: tuple[tuple[tuple[int, int], ...], ...] | None = field(default=None, repr=False)

    def region(self, row: int, col: int, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """Input rows top..bottom and cols left..right (inclusive) that cell (row, col) sees.

        Walked back layer by layer and clipped at each one: a window that hangs over an
        intermediate map's padding sees nothing there, even where the image itself goes on.
        """
        height, width = image_size
        if self.whole_image:
            return 0, height - 1, 0, width - 1
        if self.pixels is not None:
            (top, bottom), (left, right) = self.pixels[0][row], self.pixels[1][col]
            return top, min(bottom, height - 1), left, min(right, width - 1)
        top, bottom = _walk_back(row, self.layers[0])
        left, right = _walk_back(col, self.layers[1])
        return top, min(bottom, height - 1), left, min(right, width - 1)

    def cell_region(
        self, channel: int, row: int, col: int, image_size: tuple[int, int]
    ) -> tuple[int, int, int, int]:
        """``region`` of output cell (channel, row, col); for flatten, ``channel`` is the unit."""
        if self.unit_grid is not None and not self.whole_image:
            channels, rows, cols = self.unit_grid
            if not 0 <= channel < channels * rows * cols:
                raise ConvlensError(
                    f"channel must be 0..{channels * rows * cols - 1} for stage {self.stage!r}, got {channel}",
                    parameter="channel",
                )
            row, col = divmod(channel % (rows * cols), cols)
        return self.region(row, col, image_size)

    def windows_in(self, earlier: ReceptiveField) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """For each output row (and column) of this stage, the first..last rows (columns) of
        ``earlier``'s output map that it depends on: the kernel or pooling window for the stage
        just before, a wider window further back (clipped at each map's edges, like ``region``)."""
        spatial = len(self.output_shape) == 3 and len(earlier.output_shape) == 3
        if not spatial or self.whole_image or earlier.whole_image:
            raise ConvlensError(
                f"stage {self.stage!r} has no windows in {earlier.stage!r}: both must be feature maps",
                parameter="stage",
            )
        steps = []
        for axis in (0, 1):
            before, after = earlier.layers[axis], self.layers[axis]
            if after[: len(before)] != before:
                raise ConvlensError(
                    f"stage {earlier.stage!r} does not come before {self.stage!r}", parameter="stage"
                )
            steps.append(after[len(before) :])
        rows, cols = self.output_shape[1:]
        return [_walk_back(r, steps[0]) for r in range(rows)], [_walk_back(c, steps[1]) for c in range(cols)]


def _walk_back(index: int, layers) -> tuple[int, int]:
    first, last = index, index
    for layer in reversed(layers):
        first, last = reads(layer, first, last)  # first > last: the cell reads no pixel
    return first, last


def _step(module: nn.Module, geometry: Geometry) -> None:
    """Advance the geometry through one module: as its layer kind says (``layer_kinds``); a
    module the table does not know is walked through its children in order, except that after
    a flatten, one with weights mixes the units."""
    if geometry.whole:
        return
    kind = layer_kind(module)
    if kind is not None and kind.geometry is not None:
        kind.geometry(module, geometry)
    elif geometry.flattened and any(True for _ in module.parameters()):
        geometry.whole = True  # a layer with weights after flatten mixes the units
    else:
        for name, child in module.named_children():
            if name not in PARALLEL_BRANCHES:
                _step(child, geometry)


def stage_output_shapes(
    model: nn.Module, needs: str
) -> tuple[tuple[int, ...], list[tuple[str, nn.Module, tuple[int, ...]]], int]:
    """One zero image through the model: its input shape, every stage's ``(name, module, output
    shape)`` in forward order, and the number of classes. ``needs`` names what asks, for the error."""
    shape = input_shape(model)
    if shape is None:
        raise ConvlensError(f"model: {needs} need a model with an input shape (in_shape)")
    with eval_mode(model), torch.no_grad(), StageRecorder(model) as recorder:
        logits = model(torch.zeros(1, *shape, device=model_device(model)))  # (1, classes)
    stages = [
        (name, module, tuple(int(s) for s in recorder.outputs[name][0].shape))
        for name, module in model_stages(model)
    ]
    return tuple(shape), stages, int(logits.shape[1])


def receptive_fields(model: nn.Module) -> list[ReceptiveField]:
    """Output shape, parameters and receptive field of every stage, in order, ending with softmax."""
    if getattr(model, "traced", True) is False:  # seen through hooks: which stage reads which is unknown
        raise ConvlensError(f"model: receptive fields need the model's graph, and {model.notes[0]}")
    shape, stages, classes = stage_output_shapes(model, "receptive fields")
    reads = stage_inputs(model)
    if reads is not None:
        return _graph_fields(shape, stages, classes, reads)
    geometry = Geometry(size=[1, 1], jump=[1, 1], start=[0, 0], length=list(shape[1:]))
    fields = []
    before = shape
    for name, module, after in stages:
        _step(module, geometry)
        fields.append(_field(name, type(module).__name__, after, module, geometry))
        if geometry.flattened and not geometry.whole and len(before) == 3 and fields[-1].unit_grid is None:
            fields[-1].unit_grid = before  # the map this stage flattened
        before = after
    whole = Geometry([1, 1], [1, 1], [0, 0], list(shape[1:]), whole=True)
    fields.append(_field(SOFTMAX, "Softmax", (classes,), None, whole))
    return fields


def _advance(before: tuple[int, ...], after: tuple[int, ...]):
    """The geometry step of a graph's stage that turns ``before`` into ``after``: as its kind says;
    a call the table does not know that changes the map's size may move cells: every pixel."""

    def advance(module: nn.Module, geometry: Geometry) -> None:
        if layer_kind(module) is None and len(after) == 3 and tuple(after[1:]) != tuple(before[1:]):
            geometry.whole = True
        else:
            _step(module, geometry)

    return advance


def stage_windows(model: nn.Module) -> dict[str, dict[str, tuple[list, list]]]:
    """A traced model's ``windows_in`` through branches: for each feature-map stage, and each
    earlier feature-map stage it reads (directly or through others), the first..last rows of that
    map each of its output rows reads, and the same for columns: the union over the paths between."""
    reads = stage_inputs(model)
    if reads is None:
        raise ConvlensError(
            "model: windows through branches need a model traced to a graph", parameter="model"
        )
    _, stages, _ = stage_output_shapes(model, "windows")
    windows: dict[str, dict[str, tuple[list, list]]] = {
        name: {} for name, _, after in stages if len(after) == 3
    }
    for index, (earlier, _, shape) in enumerate(stages):
        if len(shape) != 3:
            continue
        walks = {earlier: graph_fields.start(shape)}  # from this map's own cells, not the image's
        for name, module, after in stages[index + 1 :]:
            sources = [walks[read] for read in reads[name] if read in walks]
            if not sources or len(after) != 3:
                continue
            walk = graph_fields.step(module, sources, after, _advance(sources[0].shape, after))
            if not walk.geometry.whole:
                walks[name] = walk
                windows[name][earlier] = (list(walk.pixels[0]), list(walk.pixels[1]))
    return windows


def _graph_fields(shape, stages, classes: int, reads: dict) -> list[ReceptiveField]:
    """``receptive_fields`` of a traced model: each stage walks on from its inputs (``graph_fields``)."""
    walks = {INPUT: graph_fields.start(shape)}
    grids: dict[str, tuple[int, ...] | None] = {INPUT: None}  # the map a flat stage's units come from
    fields = []
    for name, module, after in stages:
        sources = [walks[read] for read in reads[name] or (INPUT,)]
        before = sources[0].shape
        walk = walks[name] = graph_fields.step(module, sources, after, _advance(before, after))
        field_ = _field(name, kind_name(module), after, module, walk.geometry)
        grids[name] = before if len(before) == 3 else grids[(reads[name] or (INPUT,))[0]]
        if not walk.geometry.whole:
            field_.pixels = walk.pixels
            if walk.geometry.flattened and len(after) != 3:
                field_.unit_grid = grids[name]
        fields.append(field_)
    whole = Geometry([1, 1], [1, 1], [0, 0], list(shape[1:]), whole=True)
    fields.append(_field(SOFTMAX, "Softmax", (classes,), None, whole))
    return fields


def _field(name, kind, shape, module, geometry: Geometry) -> ReceptiveField:
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
        layers=(tuple(geometry.layers[0]), tuple(geometry.layers[1])),
    )


def receptive_field(model: nn.Module, stage: str) -> ReceptiveField:
    """The receptive field of one stage (an unknown name lists the valid ones)."""
    if stage != SOFTMAX:
        find_stage(model, stage)
    return next(f for f in receptive_fields(model) if f.stage == stage)
