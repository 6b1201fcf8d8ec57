"""Colour limits as the page reads them (views/maps.py), against hand-worked cases."""

from __future__ import annotations

import pytest
import torch

from convlens.views.maps import neuron_limits


def test_bounded_activations_have_fixed_limits():
    plane = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    tanh, sigmoid = neuron_limits("tanh", plane), neuron_limits("sigmoid", plane)
    assert (tanh["low"], tanh["high"], tanh["map"]) == (-1.0, 1.0, "diverging")
    assert (sigmoid["low"], sigmoid["high"], sigmoid["map"]) == (0.0, 1.0, "sequential")


def test_unbounded_activations_take_their_own_range():
    plane = torch.tensor([[0.0, 0.5], [2.0, 3.0]])  # 4 values: plain min/max, no percentile
    relu = neuron_limits("relu", plane)
    assert (relu["low"], relu["high"], relu["signed"]) == (0.0, 3.0, False)
    linear = neuron_limits("linear", plane - 1.0)  # -1 .. 2: signed, symmetric at the largest |value|
    assert linear["signed"] and linear["low"] == pytest.approx(-2.0) and linear["high"] == pytest.approx(2.0)
