"""A merge's arithmetic steps: the inputs named, their values summed (or the one copied), as torch has them."""

from __future__ import annotations

import pytest
import torch

from any_models import SHAPE, Handwritten, handwritten_stages, trained
from convlens.inspect import cell_arithmetic, open_model
from convlens.views.arithmetic import arithmetic_steps


def test_an_additions_steps_name_its_inputs_and_sum_their_values():
    net = trained(Handwritten(), 0)
    image = torch.rand(SHAPE)
    with torch.no_grad():
        expected = handwritten_stages(net, image.unsqueeze(0))
    steps = arithmetic_steps(cell_arithmetic(open_model(net, SHAPE), image, "add", 2, 5, 7))
    table = next(step["table"] for step in steps if "table" in step)
    assert [row[0] for row in table["rows"]] == ["relu_1", "relu"]
    assert [row[1] for row in table["rows"]] == pytest.approx(
        [float(expected[name][0, 2, 5, 7]) for name in ("relu_1", "relu")], abs=1e-6
    )
    total = next(step for step in steps if step.get("total"))
    assert total["equation"].startswith("relu_1 + relu = ")
    assert total["value"] == pytest.approx(float(expected["add"][0, 2, 5, 7]), abs=1e-6)


def test_a_concatenations_steps_say_which_input_a_channel_is_copied_from():
    net = trained(Handwritten(), 0)
    image = torch.rand(SHAPE)
    with torch.no_grad():
        expected = handwritten_stages(net, image.unsqueeze(0))
    steps = arithmetic_steps(cell_arithmetic(open_model(net, SHAPE), image, "cat", 5, 1, 2))
    total = next(step for step in steps if step.get("total"))
    assert total["equation"] == "branch[1, 1, 2] ="  # channel 5 is the branch's channel 1 (relu_2 has 4)
    assert total["value"] == pytest.approx(float(expected["branch"][0, 1, 1, 2]), abs=1e-6)
    assert "relu_2 from 0, branch from 4" in steps[1]["text"]
