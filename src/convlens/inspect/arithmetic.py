"""The arithmetic of one output cell, stage by stage: what CNN Explainer shows, for any model.

``cell_arithmetic(model, image, stage, channel, row, col)`` runs the model once with a hook on
that stage, takes the stage's real input and lets the stage's layer kind
(``convlens.inspect.layer_kinds``) recompute the chosen cell by hand in float64
(``convlens.inspect.cells``: patch x kernel, window max, normalization, weighted sum, softmax),
returning every intermediate number next to the layer's own output, so a learner (and a test)
can see they agree.
"""

from __future__ import annotations

import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect._stages import (
    SOFTMAX,
    as_batch,
    eval_mode,
    find_stage,
    kind_name,
    model_stages,
    stage_inputs,
)
from convlens.inspect.cells import (
    BatchNormCell,
    Cell,
    ConvCell,
    ElementwiseCell,
    FlattenCell,
    LinearCell,
    NormalizeCell,
    PoolCell,
    ReluCell,
    SoftmaxCell,
    softmax_cell,
)
from convlens.inspect.hooks import StageRecorder
from convlens.inspect.layer_kinds import layer_kind
from convlens.inspect.merges import AddCell, ConcatCell

__all__ = [
    "AddCell",
    "BatchNormCell",
    "Cell",
    "ConcatCell",
    "ConvCell",
    "ElementwiseCell",
    "FlattenCell",
    "LinearCell",
    "NormalizeCell",
    "PoolCell",
    "ReluCell",
    "SoftmaxCell",
    "cell_arithmetic",
]


def _arithmetic(module: nn.Module):
    kind = layer_kind(module)
    return kind.arithmetic if kind is not None else None


def cell_arithmetic(
    model: nn.Module, image: torch.Tensor, stage: str, channel: int = 0, row: int = 0, col: int = 0
) -> Cell:
    """The arithmetic behind output cell (channel, row, col) of ``stage`` for one image."""
    for name, value in (("channel", channel), ("row", row), ("col", col)):
        if isinstance(value, bool) or not isinstance(value, int):  # "0" would compare as text
            raise ConvlensError(f"{name} must be a whole number, got {value!r}", parameter=name)
    if not isinstance(stage, str):
        raise ConvlensError(f"stage must be a stage name, got {type(stage).__name__}", parameter="stage")
    batch, _ = as_batch(model, image)
    if batch.shape[0] != 1:
        raise ConvlensError(f"image: cell arithmetic explains one image, got a batch of {batch.shape[0]}")
    if stage == SOFTMAX:
        with eval_mode(model), torch.no_grad():
            logits = model(batch)[0]  # (classes,)
        _check_flat_cell(stage, (logits.shape[0],), channel, row, col)
        return softmax_cell(logits.cpu(), channel)
    module = find_stage(model, stage)
    explain = _arithmetic(module)
    if explain is None:
        supported = [n for n, m in model_stages(model) if _arithmetic(m) is not None] + [SOFTMAX]
        raise ConvlensError(
            f"stage {stage!r} ({kind_name(module)}) has no cell arithmetic; "
            f"choose one of: {', '.join(supported)}"
        )
    with eval_mode(model), torch.no_grad(), StageRecorder(model, [stage], with_inputs=True) as recorder:
        model(batch)
    inputs = tuple(x[0].double().cpu() for x in recorder.all_inputs[stage])  # one per input it reads
    stage_output = recorder.outputs[stage][0]
    if stage_output.ndim == 3:
        _check_spatial_cell(stage, tuple(stage_output.shape), channel, row, col)
        real = float(stage_output[channel, row, col])
    else:
        _check_flat_cell(stage, tuple(stage_output.shape), channel, row, col)
        real = float(stage_output[channel])
    # a stage that reads several inputs (an addition, a concatenation) gets them all, as a tuple
    cell = explain(module, inputs if len(inputs) > 1 else inputs[0], stage, channel, row, col, real)
    names = (stage_inputs(model) or {}).get(stage)
    if isinstance(cell, (AddCell, ConcatCell)) and names and len(names) == len(inputs):
        cell.input_stages = list(names)
    return cell


def _check_spatial_cell(stage: str, shape: tuple[int, ...], channel: int, row: int, col: int) -> None:
    size = shape
    if not (0 <= channel < size[0] and 0 <= row < size[1] and 0 <= col < size[2]):
        raise ConvlensError(
            f"cell ({channel}, {row}, {col}) is outside stage {stage!r}, whose output is "
            f"{size[0]}x{size[1]}x{size[2]}; expected channel 0..{size[0] - 1}, row 0..{size[1] - 1}, "
            f"col 0..{size[2] - 1}"
        )


def _check_flat_cell(stage: str, shape: tuple[int, ...], index: int, row: int, col: int) -> None:
    if len(shape) != 1 or not 0 <= index < shape[0] or row != 0 or col != 0:
        raise ConvlensError(
            f"cell ({index}, {row}, {col}) is outside stage {stage!r}, whose output is flat with "
            f"{shape[-1]} values; expected unit 0..{shape[-1] - 1} with row 0 and col 0"
        )
