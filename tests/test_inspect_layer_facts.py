"""Layer facts (filters, kernel, window, features, shapes) against torch itself, for every family."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect import SOFTMAX, layer_facts
from convlens.models import count_parameters, create_model, list_families


@pytest.mark.parametrize("name", list_families("classification"))
def test_facts_agree_with_a_forward_pass_and_the_modules(name):
    model = create_model(name, (1, 12, 12), 5).eval()
    facts = layer_facts(model)
    stages = dict(model.stages())
    assert [f.stage for f in facts] == [*stages, SOFTMAX]
    x = torch.rand(1, 1, 12, 12)  # (1, C, H, W)
    for fact in facts[:-1]:
        assert fact.input_shape == tuple(x.shape[1:])
        x = stages[fact.stage](x)
        assert fact.output_shape == tuple(x.shape[1:])
        assert fact.parameters == sum(p.numel() for p in stages[fact.stage].parameters())
    assert facts[-1].role == "softmax" and facts[-1].output_shape == (5,)
    assert sum(f.parameters for f in facts) == count_parameters(model)


def test_convolution_pooling_and_linear_hyperparameters():
    model = create_model("convnet", (3, 16, 16), 4, width=8)
    by_stage = {f.stage: f for f in layer_facts(model)}
    conv1, conv2 = by_stage["conv1"], by_stage["conv2"]
    assert (conv1.role, conv1.filters, conv1.kernel, conv1.stride) == ("convolution", 8, (3, 3), (1, 1))
    assert conv1.padding == (1, 1, 1, 1) and conv1.bias
    assert conv1.weights_per_filter == 3 * 3 * 3  # every filter spans all 3 input channels
    assert conv1.parameters == conv1.filters * (conv1.weights_per_filter + 1)  # + one bias per filter
    assert conv2.weights_per_filter == 8 * 3 * 3
    pool = by_stage["pool1"]
    assert (pool.role, pool.kernel, pool.stride) == ("max_pool", (2, 2), (2, 2))
    assert (pool.input_shape, pool.output_shape) == ((8, 16, 16), (8, 8, 8))
    fc = by_stage["fc"]
    assert (fc.role, fc.filters, fc.weights_per_filter) == ("fully_connected", 4, 16 * 4 * 4)
    assert by_stage["relu1"].role == "relu" and by_stage["flatten"].role == "flatten"
    assert by_stage["normalize"].role == "normalize"


def test_other_roles():
    lenet = {f.stage: f for f in layer_facts(create_model("lenet5", (1, 28, 28), 10))}
    assert lenet["pool1"].role == "avg_pool" and lenet["conv1"].kernel == (5, 5)
    resnet = [f.role for f in layer_facts(create_model("resnet8", (3, 16, 16), 10))]
    assert "block" in resnet and "global_pool" in resnet and "batchnorm" in resnet


def test_a_model_without_an_input_shape_is_refused():
    with pytest.raises(ConvlensError, match="input shape"):
        layer_facts(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
