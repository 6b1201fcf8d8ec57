"""The arithmetic steps of a merge: a residual addition and a concatenation, named by their inputs.

A stage that merges branches (``layer1.0.add`` reads ``layer1.0.bn2`` and the shortcut) is
explained by where its numbers come from: the inputs' values at the same cell, added, or the one
input a concatenated channel is copied from. Registered with ``convlens.views.arithmetic`` so the
CLI, the report and the explorer show the same steps.
"""

from __future__ import annotations

from convlens.inspect.merges import AddCell, ConcatCell
from convlens.views.arithmetic import Steps, operand, register


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
