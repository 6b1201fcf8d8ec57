"""How numbers are written for a learner: aligned columns in `explain --at`, negative operands in
parentheses, and one colour per data split with readable epoch axes in the report's curves."""

from __future__ import annotations

import math
import re

import pytest

from convlens.views.arithmetic import aligned, operand


def test_aligned_numbers_share_their_decimals():
    assert aligned([0.5807, 0.08774, 0.0, -0.03846]) == ["0.5807", "0.0877", "0.0000", "-0.0385"]
    assert aligned([0.0003387, 1.0]) == ["0.0003", "1.0000"]  # a small probability is not rounded to 0
    assert aligned([-1, 0, 1]) == ["-1", "0", "1"]  # whole numbers stay whole
    assert aligned([123.456, 2.5]) == ["123.5", "2.5"]  # 4 significant digits for the largest
    assert aligned([None, 0.25]) == ["n/a", "0.2500"]
    assert aligned([0.0, 0.0]) == ["0", "0"]


def test_negative_operands_are_parenthesised():
    assert operand(-0.1257) == "(−0.1257)"
    assert operand(0.5817) == "0.5817"
    assert operand(-0.0) == "0"


def _decimal_columns(block: list[str]) -> set[int]:
    """Where the decimal points of a block of right-aligned number rows stand."""
    return {m.start() for line in block for m in re.finditer(r"\.", line)}


def test_explain_at_prints_grids_and_tables_in_aligned_columns(run_cli, digits_run):
    code, text, _ = run_cli("explain", digits_run, "digits:3", "--stage", "conv2", "--at", "5,1,2")
    assert code == 0
    lines = text.splitlines()
    start = lines.index("= products")
    products = lines[start + 1 : start + 4]
    assert len(_decimal_columns(products)) == 3  # one column of decimal points per grid column
    total = next(line for line in lines if line.startswith("total = "))
    assert "+ -" not in total  # a negative sum reads + (−0.12), never + -0.12
    code, text, _ = run_cli("explain", digits_run, "digits:3", "--stage", "fc", "--at", "2")
    assert code == 0
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("input #"))
    rows = lines[header + 1 : header + 11]
    assert len(rows) == 10 and len({len(row) for row in rows}) == 1
    for column in range(1, 4):  # input, weight, product: one decimal-point position each
        points = {row.split()[column].index(".") - len(row.split()[column]) for row in rows}
        assert len(points) == 1


def test_training_curves_use_the_split_colours_and_at_most_ten_epoch_labels():
    from matplotlib.colors import to_hex

    from convlens.views.plots import training_curves
    from convlens.views.plots.colours import SPLIT_COLOURS

    history = [
        {
            "epoch": epoch,
            "train_loss": math.exp(-epoch / 50),
            "val_loss": math.exp(-epoch / 60),
            "train_accuracy": 1 - math.exp(-epoch / 40),
            "val_accuracy": 0.9 - math.exp(-epoch / 40),
            "selected": epoch == 180,
        }
        for epoch in range(1, 231)
    ]
    figure = training_curves(history)
    figure.canvas.draw()
    for axis in figure.axes:
        low, high = axis.get_xlim()
        shown = [t for t in axis.get_xticks() if low <= t <= high]
        assert 2 <= len(shown) <= 10 and all(float(t).is_integer() for t in shown)
        colours = {line.get_label(): to_hex(line.get_color()) for line in axis.lines}
        assert colours["train"] == SPLIT_COLOURS["train"]
        assert colours["validation (chooses)"] == SPLIT_COLOURS["val"]
        legend = axis.get_legend().get_window_extent()
        assert legend.y0 >= axis.get_window_extent().y1 - 1  # above the plot, off the curves


def test_the_model_card_mirrors_the_split_colours():
    from pathlib import Path

    from convlens.views.plots.colours import SPLIT_COLOURS

    card = (Path(__file__).parent.parent / "src/convlens/server/static/chart.js").read_text()
    mirrored = re.search(r"const SPLIT_COLOURS = \{(.*?)\};", card).group(1)
    assert dict(re.findall(r'(\w+): "(#[0-9a-f]{6})"', mirrored)) == SPLIT_COLOURS


@pytest.mark.parametrize("value", [0.1234, -2.0, 1e-7])
def test_operand_round_trips_through_num(value):
    from convlens.views.arithmetic import num

    assert float(operand(value).strip("()").replace("−", "-")) == float(num(value))
