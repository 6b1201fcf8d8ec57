"""A cell's arithmetic as renderer-neutral steps: described once here, drawn by every face.

``arithmetic_steps(cell)`` turns any ``convlens.inspect`` cell (conv, ReLU, pooling,
BatchNorm, normalize, flatten, linear, softmax) into an ordered list of JSON-ready steps;
``convolution_steps(cell)`` does the same for the playground's hand convolution. A renderer
needs no knowledge of cell kinds: the CLI prints the steps as text, the web page draws them
as tables and equations. Every key of a step is optional:

``title``     the cell being explained (one per cell, the first step)
``heading``   a sub-step's heading, e.g. "input channel 3: patch rows -1..1, cols 7..9"
``text``      a sentence; ``style`` says how it reads: "note" (default) or "agreement"
``grids``     number grids side by side: ``{"caption", "values": [[...]], "marks": [[...]]}``
              where a mark is None, "pad" (the cell lies in the padding) or "winner"
``ops``       the operators between consecutive grids (one fewer than the grids), e.g. ["×", "="]
``table``     a labelled table: ``{"caption", "columns": [...], "rows": [[...]], "chosen"}``;
              a string cell is a label, a number a value; ``chosen`` is a row index or None
``equation``  the left-hand side, e.g. "max(0, -0.31) ="; ``value`` is the right-hand side
``total``     true on the one step whose ``value`` is the cell's hand-computed result

Numbers inside text are formatted with 4 significant digits; ``value`` and grid values stay
numbers (±inf and NaN become None, as JSON has neither).

A new cell kind registers one small function with ``@register(TheCell)``; until it does, its
cells are shown as a table of their numbers, so a layer kind registered with a cell class of its
own (``convlens.inspect.register_layer_kind``) reaches every face at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from convlens.inspect import (
    BatchNormCell,
    Cell,
    ConvCell,
    ConvolutionCell,
    ElementwiseCell,
    FlattenCell,
    LinearCell,
    NormalizeCell,
    PoolCell,
    ReluCell,
    SoftmaxCell,
    as_dict,
)
from convlens.inspect.merges import AddCell, ConcatCell
from convlens.inspect.upsampling import TransposedConvCell, UpsampleCell
from convlens.views.resampling_steps import transposed_conv_steps, upsample_steps
from convlens.views.step_text import (
    Steps,
    _explain,
    _grid,
    _pad_marks,
    _span,
    aligned,
    channel_total_steps,
    num,
    operand,
)

__all__ = ["aligned", "arithmetic_steps", "convolution_steps", "num", "operand", "register"]

MAX_CHANNELS_SHOWN = 8  # a conv over 64 input channels: 8 in full, every channel's sum in one row
_X = re.compile(r"\bx\b")  # the variable of an elementwise cell's formula


class _Kind(NamedTuple):
    steps: Callable  # (cell, class_names, max_channels) -> the steps between the title and the agreement
    flat: bool  # the cell is a unit of a flat vector: "unit N", not "channel, row, col"


_KINDS: dict[type, _Kind] = {}


def register(cell_type: type, *, flat: bool = False) -> Callable:
    """Decorator: ``fn(cell, class_names, max_channels) -> steps`` describes cells of ``cell_type``."""

    def add(function: Callable) -> Callable:
        _KINDS[cell_type] = _Kind(function, flat)
        return function

    return add


def arithmetic_steps(
    cell, class_names: list[str] | None = None, max_channels: int | None = MAX_CHANNELS_SHOWN
) -> Steps:
    """How ``cell`` (from ``convlens.inspect.cell_arithmetic``) is computed, as JSON-ready steps.

    ``class_names`` labels softmax rows; ``max_channels`` limits the conv input channels
    shown in full (None: all of them).
    """
    kind = _KINDS.get(type(cell))
    if kind is None and isinstance(cell, Cell):
        kind = _Kind(_numbers, flat=False)
    if kind is None:
        raise TypeError(f"no arithmetic steps for {type(cell).__name__}; register one in {__name__}")
    where = f"unit {cell.channel}" if kind.flat else f"channel {cell.channel}, row {cell.row}, col {cell.col}"
    if class_names is not None and isinstance(cell, SoftmaxCell) and cell.channel < len(class_names):
        where += f" (class {class_names[cell.channel]})"
    steps = [{"title": f"{cell.stage} ({cell.kind}): {where}"}]
    steps += kind.steps(cell, class_names, max_channels)
    difference = abs(cell.total - cell.output)
    steps.append(
        {
            "text": f"the layer's own output: {num(cell.output)} "
            f"(hand-computed {num(cell.total)}, difference {difference:.1e})",
            "style": "agreement",
        }
    )
    return as_dict(steps)


def convolution_steps(cell: ConvolutionCell) -> Steps:
    """How one cell of the playground's hand convolution (``Convolution.cell``) is computed."""
    return as_dict(
        [
            {
                "title": f"cell ({cell.row}, {cell.col}): image rows {_span(cell.rows)}, "
                f"cols {_span(cell.cols)}",
                "text": "convolution: multiply the patch by the kernel, add everything up",
            },
            {
                "grids": [
                    _grid("patch", cell.patch, _pad_marks(cell.padding)),
                    _grid("kernel", cell.kernel),
                    _grid("products", cell.products, _pad_marks(cell.padding)),
                ],
                "ops": ["×", "="],
            },
            {"equation": "sum of products =", "value": cell.sum, "total": True},
        ]
    )


@register(ConvCell)
def _conv(cell: ConvCell, class_names, max_channels) -> Steps:
    steps = [_explain("convolution: multiply the input patch by the kernel, add everything up, add the bias")]
    count = len(cell.input_channels)
    shown = count if max_channels is None else min(count, max_channels)
    for k, channel in enumerate(cell.input_channels[:shown]):
        marks = _pad_marks(cell.padding[k])
        steps.append(
            {
                "heading": f"input channel {channel}: patch rows {_span(cell.rows)}, cols {_span(cell.cols)}",
                "grids": [
                    _grid("input patch", cell.patch[k], marks),
                    _grid("kernel", cell.kernel[k]),
                    _grid("products", cell.products[k], marks),
                ],
                "ops": ["×", "="],
                "equation": "sum of products =",
                "value": float(cell.channel_sums[k]),
            }
        )
    return steps + channel_total_steps(cell.channel_sums.tolist(), cell.bias, cell.total, shown)


@register(ReluCell)
def _relu(cell: ReluCell, class_names, max_channels) -> Steps:
    return [
        _explain("ReLU: keep positive values, replace negative ones with 0"),
        {"equation": f"max(0, {num(cell.before)}) =", "value": cell.total, "total": True},
    ]


@register(ElementwiseCell)
def _elementwise(cell: ElementwiseCell, class_names, max_channels) -> Steps:
    filled = _X.sub(operand(cell.before), cell.formula)  # the formula with the input value for x
    return [
        _explain(f"{cell.kind}: each value on its own, x ↦ {cell.formula}"),
        {
            "equation": f"{filled} =",
            "value": cell.total,
            "total": True,
        },
    ]


def _numbers(cell: Cell, class_names, max_channels) -> Steps:
    """A cell class with no steps of its own: every number it carries, in one table."""
    shared = {"channel", "row", "col", "total", "output"}
    rows = [
        [name, float(value)]
        for name, value in vars(cell).items()
        if name not in shared and isinstance(value, int | float) and not isinstance(value, bool)
    ]
    return [
        {
            "table": {
                "caption": f"the numbers of this {cell.kind} cell",
                "columns": ["", "value"],
                "rows": rows,
                "chosen": None,
            }
        },
        {"equation": f"{cell.kind} =", "value": cell.total, "total": True},
    ]


@register(PoolCell)
def _pool(cell: PoolCell, class_names, max_channels) -> Steps:
    marks = _pad_marks(cell.padding)
    window = {
        "heading": f"the window: input rows {_span(cell.rows)}, cols {_span(cell.cols)}",
        "grids": [_grid("window", cell.window, marks)],
    }
    if cell.winner is not None:  # max-pool
        r, c = cell.rows.index(cell.winner[0]), cell.cols.index(cell.winner[1])
        marks[r][c] = "winner"
        return [
            _explain("max-pool: the largest value in the window"),
            window,
            {
                "equation": f"largest value (input row {cell.winner[0]}, col {cell.winner[1]}) =",
                "value": cell.total,
                "total": True,
            },
        ]
    return [
        _explain("average-pool: the mean of the window"),
        window,
        {"equation": "sum =", "value": cell.sum},
        {"equation": f"sum {operand(cell.sum)} ÷ {cell.divisor:g} =", "value": cell.total, "total": True},
    ]


@register(BatchNormCell)
def _batchnorm(cell: BatchNormCell, class_names, max_channels) -> Steps:
    return [
        _explain("BatchNorm: normalize with the running statistics, then scale and shift"),
        {
            "equation": f"({operand(cell.before)} − mean {operand(cell.mean)}) ÷ √(var {num(cell.var)} + {cell.eps:g}) =",
            "value": cell.normalized,
        },
        {
            "equation": f"{operand(cell.normalized)} × γ {operand(cell.gamma)} + β {operand(cell.beta)} =",
            "value": cell.total,
            "total": True,
        },
    ]


@register(NormalizeCell)
def _normalize(cell: NormalizeCell, class_names, max_channels) -> Steps:
    return [
        _explain("normalize: (pixel - mean) ÷ std, so the network sees centred inputs"),
        {
            "equation": f"({operand(cell.before)} − mean {operand(cell.mean)}) ÷ std {num(cell.std)} =",
            "value": cell.total,
            "total": True,
        },
    ]


@register(FlattenCell, flat=True)
def _flatten(cell: FlattenCell, class_names, max_channels) -> Steps:
    source = ", ".join(str(i) for i in cell.source)
    return [
        _explain("flatten: the same value, moved into one long vector"),
        {
            "equation": f"the input value at (channel, row, col) ({source}) =",
            "value": cell.total,
            "total": True,
        },
    ]


@register(LinearCell, flat=True)
def _linear(cell: LinearCell, class_names, max_channels) -> Steps:
    count = len(cell.inputs)
    rows = [
        [str(i), float(cell.inputs[i]), float(cell.weights[i]), float(cell.products[i])]
        for i in cell.top_inputs
    ]
    return [
        _explain("linear: every input times its weight, summed, plus the bias"),
        {
            "table": {
                "caption": f"the {len(rows)} largest of {count} products (input × weight)",
                "columns": ["input #", "input", "weight", "product"],
                "rows": rows,
                "chosen": None,
            }
        },
        {
            "equation": f"sum of all {count} products {operand(cell.total - cell.bias)} + bias {operand(cell.bias)} =",
            "value": cell.total,
            "total": True,
        },
    ]


@register(SoftmaxCell, flat=True)
def _softmax(cell: SoftmaxCell, class_names, max_channels) -> Steps:
    names = class_names if class_names is not None and len(class_names) == len(cell.logits) else None
    rows = [
        [names[i] if names else str(i), logit, exp, p]
        for i, (logit, exp, p) in enumerate(
            zip(cell.logits.tolist(), cell.exp.tolist(), cell.probabilities.tolist(), strict=True)
        )
    ]
    return [
        _explain("softmax: exponentiate the logits and divide by their sum, so they add up to 1"),
        {
            "table": {
                "caption": "every class",
                "columns": ["class", "logit", "exp(logit - max)", "probability"],
                "rows": rows,
                "chosen": cell.channel,
            }
        },
        {"equation": "sum of exp =", "value": cell.exp_sum},
        {
            "equation": f"p(class {cell.channel}) = {num(float(cell.exp[cell.channel]))} ÷ {num(cell.exp_sum)} =",
            "value": cell.total,
            "total": True,
        },
    ]


# ----- merges: a residual addition and a concatenation, explained by the inputs they read


def _names(stages: list[str], count: int) -> list[str]:
    return [stages[i] if i < len(stages) else f"input {i + 1}" for i in range(count)]


@register(AddCell)
def _add(cell: AddCell, class_names, max_channels) -> Steps:
    names = _names(cell.input_stages, len(cell.values))
    rows = [[name, value] for name, value in zip(names, cell.values, strict=True)]
    if cell.constant:
        rows.append(["constant", cell.constant])
    return [
        {"text": f"{cell.kind}: the values of {' and '.join(names)} at this channel, row and column, summed"},
        {
            "table": {
                "caption": "the values added",
                "columns": ["input stage", "value"],
                "rows": rows,
                "chosen": None,
            }
        },
        {
            "equation": f"{' + '.join(row[0] for row in rows)} = {' + '.join(operand(row[1]) for row in rows)} =",
            "value": cell.total,
            "total": True,
        },
    ]


@register(ConcatCell)
def _concat(cell: ConcatCell, class_names, max_channels) -> Steps:
    names = _names(cell.input_stages, len(cell.offsets))
    where = ", ".join(str(i) for i in cell.source_index)
    starts = ", ".join(f"{name} from {offset}" for name, offset in zip(names, cell.offsets, strict=True))
    return [
        {
            "text": f"{cell.kind}: the inputs stacked along one axis ({starts}); this cell is copied, unchanged"
        },
        {"equation": f"{names[cell.source]}[{where}] =", "value": cell.total, "total": True},
    ]


register(TransposedConvCell)(transposed_conv_steps)
register(UpsampleCell)(upsample_steps)
