"""Arithmetic steps: one renderer-neutral description of every cell kind, shared by CLI, API and page.

Every kind's steps must be plain JSON, end in exactly one total whose value is the cell's own
hand-computed total, and carry the cell's tensors unchanged in their grids and tables.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from convlens.inspect import SMILEY, cell_arithmetic, convolve
from convlens.models._registry import Normalize, StagedModel
from convlens.views.arithmetic import arithmetic_steps, convolution_steps

DIGITS_CELLS = [  # (stage, channel, row, col): every kind in the trained digits convnet
    ("normalize", 0, 3, 3),
    ("conv1", 3, 0, 0),  # top-left: the kernel hangs over the padding
    ("relu1", 2, 4, 5),
    ("pool1", 1, 2, 3),
    ("conv2", 5, 1, 2),  # 16 input channels: more than the page shows in full
    ("flatten", 17, 0, 0),
    ("fc", 4, 0, 0),
    ("softmax", 2, 0, 0),
]


def _as_list(values) -> list:
    """A tensor as the JSON the steps carry: nested lists, ±inf and NaN as None."""
    return [_as_list(v) for v in values] if isinstance(values, list) else _finite(values)


def _finite(value):
    return value if math.isfinite(value) else None


def _check_steps(cell, steps: list[dict]) -> None:
    assert json.loads(json.dumps(steps, allow_nan=False)) == steps  # plain JSON, no NaN or inf
    totals = [step for step in steps if step.get("total")]
    assert len(totals) == 1 and totals[0]["value"] == cell.total
    assert [s for s in steps if "title" in s] == [steps[0]] and cell.stage in steps[0]["title"]
    assert steps[1]["text"]  # the kind's one-line explanation
    assert steps[-1]["style"] == "agreement" and "the layer's own output" in steps[-1]["text"]
    for step in steps:
        assert set(step) <= {
            "title",
            "heading",
            "text",
            "style",
            "grids",
            "ops",
            "table",
            "equation",
            "value",
            "total",
        }
        if "grids" in step:
            assert len(step.get("ops", [])) in (0, len(step["grids"]) - 1)
            for grid in step["grids"]:
                if "marks" in grid:
                    assert np.shape(grid["marks"]) == np.shape(grid["values"])
                    assert {m for row in grid["marks"] for m in row} <= {None, "pad", "winner"}


def _grids(steps: list[dict]) -> list[dict]:
    return [grid for step in steps for grid in step.get("grids", [])]


def _check_tensors(cell, steps: list[dict], max_channels: int | None) -> None:
    """The grids and tables hold the cell's own numbers."""
    grids = _grids(steps)
    if cell.kind == "conv":
        shown = (
            len(cell.input_channels) if max_channels is None else min(max_channels, len(cell.input_channels))
        )
        for k in range(shown):
            patch, kernel, products = grids[3 * k : 3 * k + 3]
            assert patch["values"] == cell.patch[k].tolist() and kernel["values"] == cell.kernel[k].tolist()
            assert products["values"] == cell.products[k].tolist()
            pads = [["pad" if p else None for p in row] for row in cell.padding[k].tolist()]
            assert patch["marks"] == pads == products["marks"]
        channel_steps = [s for s in steps if "heading" in s]
        assert [s["value"] for s in channel_steps] == cell.channel_sums[:shown].tolist()
        if shown < len(cell.input_channels):
            assert grids[-1]["values"] == [cell.channel_sums.tolist()]
    elif cell.kind in ("max-pool", "avg-pool"):
        (window,) = grids
        assert window["values"] == _as_list(cell.window.tolist())
        for (r, c), mark in np.ndenumerate(np.array(window["marks"], dtype=object)):
            if cell.winner is not None and (cell.rows[r], cell.cols[c]) == tuple(cell.winner):
                assert mark == "winner"
            else:
                assert (mark == "pad") == bool(cell.padding[r, c])
    elif cell.kind == "linear":
        (table,) = [s["table"] for s in steps if "table" in s]
        assert [int(row[0]) for row in table["rows"]] == cell.top_inputs
        for i, (_, x, w, p) in zip(cell.top_inputs, table["rows"], strict=True):
            assert (x, w, p) == (float(cell.inputs[i]), float(cell.weights[i]), float(cell.products[i]))
    elif cell.kind == "softmax":
        (table,) = [s["table"] for s in steps if "table" in s]
        assert [row[1:] for row in table["rows"]] == [
            list(v)
            for v in zip(cell.logits.tolist(), cell.exp.tolist(), cell.probabilities.tolist(), strict=True)
        ]
        assert table["chosen"] == cell.channel
    else:
        assert grids == []


@pytest.mark.parametrize(("stage", "channel", "row", "col"), DIGITS_CELLS)
@pytest.mark.parametrize("max_channels", [8, None])
def test_every_kind_of_the_digits_model(digits_model, digits, stage, channel, row, col, max_channels):
    model, meta = digits_model
    cell = cell_arithmetic(model, digits.test_images[7].float() / 255, stage, channel, row, col)
    steps = arithmetic_steps(cell, meta["class_names"], max_channels=max_channels)
    _check_steps(cell, steps)
    _check_tensors(cell, steps, max_channels)
    if stage == "conv2":
        headings = [s for s in steps if "heading" in s]
        assert len(headings) == (8 if max_channels else 16)
    if stage == "softmax":
        assert f"(class {meta['class_names'][channel]})" in steps[0]["title"]


def _padded_model() -> StagedModel:
    """BatchNorm, padded max- and average-pooling and adaptive pooling: kinds the digits model lacks."""
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(2).eval()
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(2))
        norm.running_var.copy_(torch.rand(2) + 0.5)
        norm.weight.copy_(torch.randn(2))
        norm.bias.copy_(torch.randn(2))
    stages = [
        ("normalize", Normalize([0.0, 0.0], [1.0, 1.0])),
        ("bn", norm),
        ("maxpool", nn.MaxPool2d(3, 2, padding=1)),
        ("avgpool", nn.AvgPool2d(3, 2, padding=1, count_include_pad=False)),
        ("adaptive", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(2, 3)),
    ]
    return StagedModel(stages, (2, 7, 7), 3).eval()


@pytest.mark.parametrize("stage", ["bn", "maxpool", "avgpool", "adaptive"])
def test_batchnorm_and_padded_pooling(stage):
    model = _padded_model()
    cell = cell_arithmetic(model, torch.rand(2, 7, 7), stage, 1, 0, 0)  # top-left: in the padding
    steps = arithmetic_steps(cell)
    _check_steps(cell, steps)
    _check_tensors(cell, steps, None)
    if stage == "maxpool":
        (window,) = _grids(steps)
        assert window["values"][0] == [None, None, None]  # -inf padding: None in JSON, marked pad
        assert window["marks"][0] == ["pad", "pad", "pad"]
    if stage == "bn":
        assert steps[2]["value"] == cell.normalized


def test_unknown_cells_are_refused():
    with pytest.raises(TypeError, match="no arithmetic steps for str"):
        arithmetic_steps("conv1")


def test_convolution_steps_on_the_smiley():
    kernel = np.array([[-1, 0, 1]] * 3)
    cell = convolve(SMILEY, "edge").cell(2, 3)
    steps = convolution_steps(cell)
    assert json.loads(json.dumps(steps, allow_nan=False)) == steps
    patch = SMILEY.numpy()[2:5, 3:6]
    by_hand = sum(float(patch[r, c]) * kernel[r, c] for r in range(3) for c in range(3))
    (total,) = [s for s in steps if s.get("total")]
    assert total["value"] == pytest.approx(by_hand) and total["value"] == cell.sum
    grids = _grids(steps)
    assert [g["caption"] for g in grids] == ["patch", "kernel", "products"]
    assert np.array_equal(grids[0]["values"], patch) and np.array_equal(grids[1]["values"], kernel)
    assert np.array_equal(grids[2]["values"], patch * kernel)
    assert steps[0]["title"] == "cell (2, 3): image rows 2..4, cols 3..5"
    padded = convolution_steps(convolve(SMILEY, "edge", padding=1).cell(0, 0))
    assert _grids(padded)[0]["marks"][0] == ["pad", "pad", "pad"]


def test_cli_text_and_json_come_from_the_same_steps(run_cli, digits_run):
    from convlens.cli.render import number

    for stage, at in (("conv2", "5,1,2"), ("pool1", "1,2,3"), ("softmax", "2")):
        args = ("explain", digits_run, "digits:3", "--stage", stage, "--at", at)
        code, text, _ = run_cli(*args)
        assert code == 0
        code, raw, _ = run_cli(*args, "--json")
        assert code == 0
        body = json.loads(raw)
        (total,) = [s for s in body["steps"] if s.get("total")]
        assert total["value"] == body["total"]
        lines = text.splitlines()
        assert f"{total['equation']} {number(total['value'])}" in lines
        assert lines[0] == body["steps"][0]["title"] and lines[-1] == body["steps"][-1]["text"]
    code, text, _ = run_cli("convolve", "smiley", "--kernel", "edge", "--at", "2,2")
    assert code == 0 and "sum of products = -2" in text.splitlines()


def test_api_sends_the_steps(digits_run):
    from fastapi.testclient import TestClient

    from convlens.server import create_app

    client = TestClient(create_app([digits_run], allowed_hosts=["testserver"]))
    body = client.post(
        f"/api/runs/{digits_run.name}/arithmetic",
        data={"test_index": 0, "stage": "conv1", "row": 0, "col": 0},
    ).json()
    (total,) = [s for s in body["steps"] if s.get("total")]
    assert total["value"] == body["cell"]["total"] and body["cell"]["type"] == "ConvCell"
    smiley = SMILEY.tolist()
    cells = client.post(
        "/api/playground/convolve", json={"image": smiley, "kernel": "edge", "padding": 1}
    ).json()
    first = cells["cells"][0]
    assert first["padding"][0] == [True, True, True] and first["rows"] == [-1, 0, 1]
    assert set(first) == {"row", "col", "rows", "cols", "patch", "padding", "products", "sum"}
