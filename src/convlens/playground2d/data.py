"""The four 2-D data sets of the learning playground: points in the plane [-6, 6]², two classes.

Each generator follows the TensorFlow Playground's recipe, so a learner who knows that page
recognises the pictures: ``circle`` (a disc inside a ring), ``xor`` (the four quadrants),
``gauss`` (two blobs) and ``spiral`` (two interleaved arms). ``noise`` is a percentage, 0 to
50, as on that page: it jitters the points (or widens the blobs) so that the classes overlap.
Labels are 0 and 1; the plane is the same for every data set, so every heat map covers it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from convlens.errors import ConvlensError

PLANE = 6.0  # points and heat maps cover [-PLANE, PLANE]² (data sets stay within radius 5, plus noise)
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


@dataclass(frozen=True)
class PlaneDataset:
    """One data set's generator and what it teaches."""

    name: str
    make: Callable[[int, float, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    help: str


DATASETS = {
    "spiral": PlaneDataset(
        "spiral", _spiral, "two interleaved arms: needs a curved boundary built from many cuts"
    ),
    "xor": PlaneDataset(
        "xor", _xor, "opposite quadrants share a class: no single straight cut separates them"
    ),
    "circle": PlaneDataset("circle", _circle, "a disc inside a ring: one closed boundary"),
    "gauss": PlaneDataset("gauss", _gauss, "two blobs: one straight cut is enough"),
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
    train_labels: torch.Tensor  # (N_train,) 0.0 or 1.0
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
