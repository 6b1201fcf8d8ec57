"""The playground's fully connected network, and every neuron's output over the plane.

The network is an ``nn.Sequential`` of hidden blocks (``Linear`` then the activation) and
one output ``Linear``: for a classification its single logit says "class 1" when above 0, for a
regression it is the predicted value (a linear output, as in the TensorFlow Playground). Each hidden neuron
computes ``activation(w · input + b)``: in the first layer a soft straight cut through the
plane; later layers mix earlier cuts into curves.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from convlens.playground2d.data import PLANE

_ACTIVATION_MODULES = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "linear": nn.Identity}


def build_network(inputs: int, hidden: tuple[int, ...], activation: str, seed: int) -> nn.Sequential:
    """``inputs`` features → the hidden blocks → 1 output (a logit or a value), with PyTorch's default initialization
    drawn from ``seed`` (the same seed gives the same starting weights)."""
    blocks: list[nn.Module] = []
    width = inputs
    for neurons in hidden:
        blocks.append(nn.Sequential(nn.Linear(width, neurons), _ACTIVATION_MODULES[activation]()))
        width = neurons
    blocks.append(nn.Linear(width, 1))
    network = nn.Sequential(*blocks)
    generator = torch.Generator().manual_seed(seed)  # not the global one: a server runs many at once
    with torch.no_grad():
        for linear in linear_layers(network):
            bound = 1 / math.sqrt(linear.in_features)  # nn.Linear's own default range
            linear.weight.uniform_(-bound, bound, generator=generator)
            linear.bias.uniform_(-bound, bound, generator=generator)
    return network


def linear_layers(network: nn.Sequential) -> list[nn.Linear]:
    """Every ``nn.Linear`` in order: the weights between consecutive layers of neurons."""
    return [module for module in network.modules() if isinstance(module, nn.Linear)]


def layer_outputs(network: nn.Sequential, inputs: torch.Tensor) -> list[torch.Tensor]:
    """What every neuron outputs for each input row: one (N, width) tensor per hidden layer
    (after its activation), then the output layer's (N, 1) logit."""
    outputs, x = [], inputs  # (N, F)
    for block in network:
        x = block(x)  # (N, width)
        outputs.append(x)
    return outputs


def plane_grid(size: int) -> torch.Tensor:
    """The centres of a ``size`` × ``size`` grid over the plane as (size², 2) points, row by row
    from the top (x2 = +PLANE) down, left to right: the heat maps' pixel order."""
    x1 = torch.linspace(-PLANE, PLANE, size)
    x2 = torch.linspace(PLANE, -PLANE, size)
    rows, cols = torch.meshgrid(x2, x1, indexing="ij")  # (size, size) each
    return torch.stack([cols.flatten(), rows.flatten()], dim=1)  # (size², 2): (x1, x2)
