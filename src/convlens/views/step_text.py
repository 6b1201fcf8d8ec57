"""The pieces every cell's arithmetic steps are written with: numbers in sentences and columns,
grids and headings (``convlens.views.arithmetic`` describes the steps themselves)."""

from __future__ import annotations

import math

MAX_SUM_TERMS = 16  # terms written out in the total's equation
SIGNIFICANT = 4  # digits of a number in a sentence, and of the largest number of an aligned column
MAX_DECIMALS = 6  # an aligned column of tiny numbers: beyond this they read 0.000000

Steps = list[dict]


def num(value: float) -> str:
    """A number inside a sentence: 4 significant digits, no negative zero."""
    return f"{value + 0.0:.4g}"


def aligned(values: list[float | None]) -> list[str]:
    """Numbers of one grid or table column with one count of decimals, so their decimal points
    line up (None: n/a). Whole numbers stay whole; otherwise the largest keeps 4 significant
    digits and, below 10, every number keeps at least 4 decimals (a probability of 0.0003 too)."""
    finite = [abs(float(v)) for v in values if v is not None and math.isfinite(v)]
    largest = max(finite, default=0.0)
    whole_digits = math.floor(math.log10(largest)) + 1 if largest > 0 else 1
    decimals = max(0, SIGNIFICANT - whole_digits)
    if whole_digits <= 1:
        decimals = max(decimals, SIGNIFICANT)
    if all(v.is_integer() for v in finite):
        decimals = 0
    decimals = min(MAX_DECIMALS, decimals)
    return ["n/a" if v is None else f"{v + 0.0:.{decimals}f}" for v in values]


def operand(value: float) -> str:
    """A number between operators: a negative one in parentheses with a real minus sign, so
    ``+ (−0.31)`` never reads as a subtraction typo (``+ -0.31``)."""
    text = num(value)
    return f"({text.replace('-', '−', 1)})" if text.startswith("-") else text


def _span(positions: list[int]) -> str:
    return f"{positions[0]}..{positions[-1]}"


def _grid(caption: str, values, marks=None) -> dict:
    grid = {"caption": caption, "values": values}
    if marks is not None:
        grid["marks"] = marks
    return grid


def _pad_marks(padding) -> list[list[str | None]]:
    return [["pad" if p else None for p in row] for row in padding.tolist()]


def _explain(text: str) -> dict:
    return {"text": text}


def channel_total_steps(channel_sums: list[float], bias: float, total: float, shown: int) -> list[dict]:
    """The last steps of a convolution's (or transposed convolution's) cell: the channels not
    shown one by one, then every channel's sum plus the bias as the total."""
    steps = []
    if shown < len(channel_sums):
        steps.append(
            {
                "text": f"…and {len(channel_sums) - shown} more input channels; every channel's sum:",
                "grids": [_grid("sum per input channel", [channel_sums])],
            }
        )
    sums = [operand(s) for s in channel_sums]
    terms = " + ".join(sums[:MAX_SUM_TERMS]) + (" + …" if len(sums) > MAX_SUM_TERMS else "")
    steps.append({"equation": f"total = {terms} + bias {operand(bias)} =", "value": total, "total": True})
    return steps
