"""The six 2-D data sets of the learning playground: points in the plane [-6, 6]².

Each generator follows the TensorFlow Playground's recipe, so a learner who knows that page
recognises the pictures. Four classify, with labels 0 and 1: ``circle`` (a disc inside a ring),
``xor`` (the four quadrants), ``gauss`` (two blobs) and ``spiral`` (two interleaved arms). Two
regress, with a real target from about -1 to 1: ``plane`` (a tilted plane, (x1 + x2) / 10) and
``multi-gauss`` (six bumps, alternately up and down). ``noise`` is a percentage, 0 to 50, as on
that page: it jitters the points (or widens the blobs, or moves the point a target is read at)
so that the classes overlap or the target wobbles. The plane is the same for every data set, so
every heat map covers it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from convlens.errors import ConvlensError

PLANE = 6.0  # points and heat maps cover [-PLANE, PLANE]² (classes within radius 5 plus noise; regressions fill it)
RADIUS = 5.0
POINTS = 500  # as the TensorFlow Playground: enough to see a shape, few enough to train live
MAX_NOISE = 50.0  # percent


def _circle(count: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Label 1 inside half the radius, label 0 on a ring from 0.7 to 1 times the radius."""
    half = count // 2
    inner = torch.rand(half, generator=generator) * RADIUS * 0.5
    outer = RADIUS * (0.7 + 0.3 * torch.rand(count - half, generator=generator))
    radius = torch.cat([inner, outer])  # (N,)
    angle = torch.rand(count, generator=generator) * 2 * math.pi
    points = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)  # (N, 2)
    points += (torch.rand(count, 2, generator=generator) * 2 - 1) * RADIUS * noise
    labels = torch.cat([torch.ones(half), torch.zeros(count - half)])
    return points, labels


def _xor(count: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform points kept 0.3 away from the axes; label 1 where x1·x2 > 0 (before the noise)."""
    points = (torch.rand(count, 2, generator=generator) * 2 - 1) * RADIUS  # (N, 2)
    points += torch.where(points > 0, 0.3, -0.3)  # a gap along both axes
    labels = (points[:, 0] * points[:, 1] > 0).float()
    points += (torch.rand(count, 2, generator=generator) * 2 - 1) * RADIUS * noise
    return points, labels


def _gauss(count: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two round blobs at (2, 2) (label 1) and (-2, -2) (label 0); noise widens them."""
    variance = 0.5 + (4.0 - 0.5) * (noise / 0.5)  # 0 % → 0.5, 50 % → 4
    half = count // 2
    centres = torch.cat([torch.full((half, 2), 2.0), torch.full((count - half, 2), -2.0)])
    points = centres + torch.randn(count, 2, generator=generator) * math.sqrt(variance)
    labels = torch.cat([torch.ones(half), torch.zeros(count - half)])
    return points, labels


def _spiral(count: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two arms, each 1.75 turns out to the radius, the second turned by half a circle."""
    half = count // 2
    arms = []
    for delta, size in ((0.0, half), (math.pi, count - half)):
        step = torch.arange(size, dtype=torch.float32) / size
        radius = step * RADIUS
        angle = 1.75 * step * 2 * math.pi + delta
        arm = torch.stack([radius * torch.sin(angle), radius * torch.cos(angle)], dim=1)  # (size, 2)
        arms.append(arm + (torch.rand(size, 2, generator=generator) * 2 - 1) * noise)
    labels = torch.cat([torch.ones(half), torch.zeros(count - half)])
    return torch.cat(arms), labels


def _uniform_points(
    count: int, noise: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform points over the plane, and the same points moved by the noise: a regression reads
    its target where the noise moved the point, so the target wobbles, not the point."""
    points = (torch.rand(count, 2, generator=generator) * 2 - 1) * PLANE  # (N, 2)
    moved = points + (torch.rand(count, 2, generator=generator) * 2 - 1) * PLANE * noise
    return points, moved


def _plane(count: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Target (x1 + x2) / 10: -1 at (-5, -5), +1 at (5, 5); a straight slope with no hidden layer."""
    points, moved = _uniform_points(count, noise, generator)
    return points, moved.sum(dim=1) / 10


# Six bumps of height 1 and radius 2 on two rows, the sign alternating like a chessboard's colours.
_BUMP_CENTRES = torch.tensor([[-4, 2.5], [0, 2.5], [4, 2.5], [-4, -2.5], [0, -2.5], [4, -2.5]])
_BUMP_SIGNS = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])


def _multi_gauss(count: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Target: of the six cones 1 - distance / 2 (0 beyond radius 2), signed, the tallest here."""
    points, moved = _uniform_points(count, noise, generator)
    distances = (moved[:, None, :] - _BUMP_CENTRES).norm(dim=2)  # (N, 6); cdist's matmul path is coarser
    heights = (1 - distances / 2).clamp(min=0) * _BUMP_SIGNS  # (N, 6)
    tallest = heights.abs().argmax(dim=1, keepdim=True)  # (N, 1): the first of equals, as TF's loop
    return points, heights.gather(1, tallest)[:, 0]


CLASSIFICATION = "classification"  # labels 0 and 1; the output is a logit, the loss cross-entropy
REGRESSION = "regression"  # a real target; the output is the value itself, the loss squared error


@dataclass(frozen=True)
class PlaneDataset:
    """One data set's generator, what it teaches, and whether it classifies or regresses."""

    name: str
    make: Callable[[int, float, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    help: str
    task: str = CLASSIFICATION


DATASETS = {
    "spiral": PlaneDataset(
        "spiral", _spiral, "two interleaved arms: needs a curved boundary built from many cuts"
    ),
    "xor": PlaneDataset(
        "xor", _xor, "opposite quadrants share a class: no single straight cut separates them"
    ),
    "circle": PlaneDataset("circle", _circle, "a disc inside a ring: one closed boundary"),
    "gauss": PlaneDataset("gauss", _gauss, "two blobs: one straight cut is enough"),
    "plane": PlaneDataset(
        "plane", _plane, "regression: a tilted plane, one linear neuron fits it", REGRESSION
    ),
    "multi-gauss": PlaneDataset(
        "multi-gauss", _multi_gauss, "regression: six bumps, up and down: needs hidden neurons", REGRESSION
    ),
}


def check_dataset(name: str) -> PlaneDataset:
    """The data set called ``name``; an unknown name is an error listing the valid ones."""
    if name not in DATASETS:
        raise ConvlensError(f"dataset {name!r} is not one of {', '.join(DATASETS)}", parameter="dataset")
    return DATASETS[name]


@dataclass(frozen=True)
class PlanePoints:
    """The generated points, split once into training and test points."""

    train_points: torch.Tensor  # (N_train, 2) in plane coordinates
    train_labels: torch.Tensor  # (N_train,) 0.0 or 1.0; a regression's real target
    test_points: torch.Tensor  # (N_test, 2)
    test_labels: torch.Tensor  # (N_test,)


def make_points(
    dataset: str, noise: float = 0.0, train_percent: float = 50.0, seed: int = 0, count: int = POINTS
) -> PlanePoints:
    """``count`` points of ``dataset`` with ``noise`` percent, shuffled with ``seed`` and split
    ``train_percent`` : ``100 - train_percent`` (the same seed gives the same points and split)."""
    generator = torch.Generator().manual_seed(seed)
    points, labels = check_dataset(dataset).make(count, noise / 100, generator)
    order = torch.randperm(count, generator=generator)
    points, labels = points[order].float(), labels[order].float()
    train = round(count * train_percent / 100)
    return PlanePoints(points[:train], labels[:train], points[train:], labels[train:])
