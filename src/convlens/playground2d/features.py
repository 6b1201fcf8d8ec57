"""The input features a playground network may see: functions of the point (x1, x2).

A network given only x1 and x2 must carve every curve itself from straight cuts; handing it
x1² + x2² or sin x1 is feature engineering, and the picture shows how much work that saves
(``circle`` becomes one straight cut in x1², x2²). Each feature is also drawn as a heat map
over the plane, like a neuron of layer 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from convlens.errors import ConvlensError
from convlens.playground2d.network import plane_grid

# id → (label shown on the page, the function of a (N, 2) tensor of points)
FEATURES: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "x1": ("x1", lambda p: p[:, 0]),
    "x2": ("x2", lambda p: p[:, 1]),
    "x1sq": ("x1²", lambda p: p[:, 0] ** 2),
    "x2sq": ("x2²", lambda p: p[:, 1] ** 2),
    "x1x2": ("x1·x2", lambda p: p[:, 0] * p[:, 1]),
    "sinx1": ("sin x1", lambda p: torch.sin(p[:, 0])),
    "sinx2": ("sin x2", lambda p: torch.sin(p[:, 1])),
}


def check_features(names) -> tuple[str, ...]:
    """``names`` as a tuple in the order of ``FEATURES``, each once; an unknown or empty choice
    is an error listing the valid ids."""
    names = tuple(names)
    unknown = [name for name in names if name not in FEATURES]
    if unknown:
        raise ConvlensError(
            f"features: unknown feature {unknown[0]!r}; choose from {', '.join(FEATURES)}",
            parameter="features",
        )
    if not names:
        raise ConvlensError(f"features: choose at least one of {', '.join(FEATURES)}", parameter="features")
    return tuple(name for name in FEATURES if name in names)


def feature_matrix(points: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """The network's input: one column per feature in ``names``, (N, 2) points → (N, F)."""
    return torch.stack([FEATURES[name][1](points) for name in names], dim=1)


def feature_maps(names: tuple[str, ...], size: int) -> torch.Tensor:
    """Each feature in ``names`` over a ``size`` × ``size`` grid of the plane: (F, size, size),
    drawn like a neuron of layer 0."""
    return feature_matrix(plane_grid(size), names).T.reshape(len(names), size, size)
