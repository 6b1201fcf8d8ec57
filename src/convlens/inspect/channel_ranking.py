"""A stage's channels ranked by what Grad-CAM credits them with: the "strongest channels" the
explorer lists under a Grad-CAM map, each a link to its neuron panel.

A channel's contribution is Grad-CAM's own term for it (``neuron_effects.grad_cam_terms``): its
weight, the mean gradient of the class's logit over its map, times its mean activation. The
Grad-CAM map before its final ReLU is the sum of the weighted maps, so the contributions add up
to that map's mean, and each channel's share is its part of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convlens.inspect.neuron_effects import grad_cam_terms
from convlens.inspect.neurons import check_neuron_stage


@dataclass
class ChannelContribution:
    """One channel's line in a stage's Grad-CAM ranking."""

    channel: int
    weight: float  # mean over cells of d logit[target] / d map
    contribution: float  # weight x the channel's mean activation
    share: float | None  # contribution / the map's mean (None when that mean is <= 0: an empty map)


@dataclass
class GradCamRanking:
    """Every channel of a stage by its Grad-CAM contribution for one class, largest first."""

    stage: str
    target: int
    map_mean: float  # the sum of the contributions: the Grad-CAM map's mean before its ReLU
    channels: list[ChannelContribution]


def grad_cam_ranking(
    model: nn.Module, stage: str, image: torch.Tensor, target: int | None = None
) -> GradCamRanking | None:
    """Every channel of ``stage`` ranked by what Grad-CAM credits it with for ``target`` (default:
    the predicted class) on ``image``, largest contribution first (ties: lower channel first)."""
    check_neuron_stage(model, stage)
    terms = grad_cam_terms(model, stage, image, target)
    if terms is None:
        return None
    target, weights, contributions = terms
    map_mean = float(contributions.sum())
    order = sorted(range(len(contributions)), key=lambda c: (-float(contributions[c]), c))
    return GradCamRanking(
        stage=stage,
        target=target,
        map_mean=map_mean,
        channels=[
            ChannelContribution(
                channel=c,
                weight=float(weights[c]),
                contribution=float(contributions[c]),
                share=float(contributions[c]) / map_mean if map_mean > 0 else None,
            )
            for c in order
        ],
    )
