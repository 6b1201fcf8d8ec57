"""Parameter arithmetic of the `params` experiment against hand counts and torch's own layers."""

from __future__ import annotations

import pytest
from torch import nn

from convlens.errors import ConvlensError
from convlens.lab import params
from convlens.views.lab import experiment_tables


def test_the_seed_numbers_by_hand():
    # 1000 units, each with 3·1000·1000 weights and one bias
    assert params.dense_parameters((3, 1000, 1000), 1000) == 3_000_001_000
    # 64 kernels of 3·3·3 weights plus 64 biases
    assert params.conv_parameters(3, 64, 3) == 1_792


@pytest.mark.parametrize(("shape", "units"), [((1, 8, 8), 10), ((3, 5, 7), 4), ((2, 1, 1), 1)])
def test_dense_count_matches_torch(shape, units):
    layer = nn.Linear(shape[0] * shape[1] * shape[2], units)
    assert params.dense_parameters(shape, units) == sum(p.numel() for p in layer.parameters())


@pytest.mark.parametrize(("channels", "filters", "kernel"), [(1, 16, 3), (3, 64, 3), (16, 32, 5), (2, 1, 1)])
def test_conv_count_matches_torch(channels, filters, kernel):
    layer = nn.Conv2d(channels, filters, kernel)
    assert params.conv_parameters(channels, filters, kernel) == sum(p.numel() for p in layer.parameters())


def test_run_on_digits(digits):
    result = params.run(digits)
    assert result.dense_parameters == 3_000_001_000 and result.conv_parameters == 1_792
    assert result.ratio == pytest.approx(3_000_001_000 / 1_792)
    assert result.dense_formula == "1,000 × (3·1,000·1,000) + 1,000 biases"
    counts = {m["name"]: m["parameters"] for m in result.models}
    # by hand for 1x8x8 input, 10 classes:
    # mlp: 64·256+256 + 256·128+128 + 128·10+10
    assert counts["mlp"] == 16_640 + 32_896 + 1_290
    # convnet: conv1 1·9·16+16, conv2 16·9·32+32, fc (32·2·2)·10+10 (8 → 4 → 2 after two poolings)
    assert counts["convnet"] == 160 + 4_640 + 1_290
    for model in result.models:
        assert sum(s["parameters"] for s in model["stages"]) == model["parameters"]
    assert {"first layer on a 1000×1000×3 input"} <= {t.title for t in experiment_tables("params", result)}
    assert result.to_json()["dense_parameters"] == 3_000_001_000


def test_custom_input_and_bad_values():
    result = params.run(None, input_shape=(1, 28, 28), units=100, filters=8, kernel_size=5)
    assert result.dense_parameters == 100 * 784 + 100
    assert result.conv_parameters == 8 * 25 + 8
    assert result.models == []
    with pytest.raises(ConvlensError, match="units must be a positive integer, got 0"):
        params.run(None, units=0)
    with pytest.raises(ConvlensError, match="input shape must be three positive sides"):
        params.run(None, input_shape=(3, 0, 10))
