"""Where branches meet: the cell arithmetic and layer kinds of additions and concatenations.

A traced model (``convlens.models.traced``) turns ``x + shortcut`` into an ``Add`` stage and
``torch.cat`` into a ``Concat`` stage, modules of their own; this module registers their kinds in
the one layer-kind table (``convlens.inspect.layer_kinds``) with their arithmetic: an added cell
is each input's value at that cell and their sum, a concatenated cell is one input's value, and
which input (and where in it) it comes from. Both keep positions cell by cell, so Grad-CAM's
default may look past them; the receptive field of either is the union of its inputs'
(``convlens.inspect.graph_fields``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from convlens.errors import ConvlensError
from convlens.inspect.cells import Cell
from convlens.inspect.geometry import same_cells
from convlens.inspect.layer_kinds import register_layer_kind
from convlens.models.calls import Add, Concat


@dataclass(kw_only=True)
class AddCell(Cell):
    values: list[float]  # each input's value at this cell, in the order the model adds them
    constant: float  # a number added too (``x + 1``), 0 for a residual addition
    input_stages: list[str] = field(default_factory=list)  # the stages added, when the model names them


@dataclass(kw_only=True)
class ConcatCell(Cell):
    source: int  # which input (0-based, in the order concatenated) the value comes from
    source_index: tuple[int, ...]  # where in that input: (channel, row, col) or (unit,)
    offsets: list[int]  # where each input starts along the concatenated axis
    input_stages: list[str] = field(default_factory=list)


def _inputs(x) -> tuple[torch.Tensor, ...]:
    return x if isinstance(x, tuple) else (x,)


def _index(x: torch.Tensor, channel: int, row: int, col: int) -> tuple[int, ...]:
    return (channel, row, col) if x.ndim == 3 else (channel,)


def add_cell(module: Add, x, stage: str, channel: int, row: int, col: int, real: float) -> AddCell:
    inputs = torch.broadcast_tensors(*_inputs(x))  # a (C, 1, 1) bias reads the same everywhere
    index = _index(inputs[0], channel, row, col)
    values = [float(value[index]) for value in inputs]
    return AddCell(
        stage=stage, kind="add", channel=channel, row=row, col=col, total=sum(values) + module.constant,
        output=real, values=values, constant=module.constant,
    )  # fmt: skip


def concat_cell(module: Concat, x, stage: str, channel: int, row: int, col: int, real: float) -> ConcatCell:
    inputs = _inputs(x)
    index = list(_index(inputs[0], channel, row, col))
    if module.dim == 0:
        raise ConvlensError(f"stage {stage!r} concatenates images of a batch; it has no cell arithmetic")
    axis = module.dim - 1 if module.dim > 0 else module.dim  # the same axis without the batch
    offsets, start = [], 0
    for value in inputs:
        offsets.append(start)
        start += value.shape[axis]
    source = max(k for k, offset in enumerate(offsets) if offset <= index[axis])
    index[axis] -= offsets[source]
    value = float(inputs[source][tuple(index)])
    return ConcatCell(
        stage=stage, kind="concat", channel=channel, row=row, col=col, total=value, output=real,
        source=source, source_index=tuple(index), offsets=offsets,
    )  # fmt: skip


register_layer_kind(
    Add,
    role="add",
    help="addition: each cell the sum of its inputs' cells (a residual connection adds the block's input back)",
    arithmetic=add_cell,
    geometry=same_cells,
    grad_cam_target=True,
    affine=True,
)
register_layer_kind(
    Concat,
    role="concat",
    help="concatenation: the inputs' maps stacked, channel after channel; each cell is one input's cell",
    arithmetic=concat_cell,
    geometry=same_cells,
    grad_cam_target=True,
    affine=True,
)
