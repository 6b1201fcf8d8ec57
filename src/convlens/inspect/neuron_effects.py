"""Where a channel matters: what the prediction loses without it, and what Grad-CAM credits it with.

Ablation zeroes the channel's map with a forward hook (removed in ``finally``) and runs the model
again: on one image, the predicted class's probability before and after; on the test images, the
mean change of each image's own predicted-class probability and the accuracy before and after.
Grad-CAM's share is the number Grad-CAM itself forms for the channel at that stage: its weight
(the gradient of the class's logit, averaged over the map's cells) times the channel's mean
activation; the Grad-CAM map is the sum of these weighted maps, so the contribution is this
channel's part of the map's mean before Grad-CAM's final ReLU (``grad_cam_terms`` forms it for
every channel at once; ``channel_ranking.grad_cam_ranking`` orders a stage by it).

Both need one class per image (logits N x classes); a segmentation model's per-pixel answer
has neither, and gets None.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from convlens.data.bundle import to_float
from convlens.inspect._stages import as_batch, check_target, eval_mode, find_stage, model_device

SAMPLE_BATCH = 256  # images per forward pass over the test images


@dataclass
class Ablation:
    """One image's predicted class and its probability with and without the channel."""

    target: int  # the class predicted with the channel
    before: float  # its probability with the channel
    after: float  # its probability with the channel's map zeroed
    predicted_after: int  # the class predicted without the channel


@dataclass
class SampleAblation:
    """Zeroing the channel over the test images."""

    images: int
    mean_change: float  # mean over images of (after - before) of each image's own predicted class
    changed_predictions: int  # images whose predicted class changes
    accuracy_before: float | None  # None without labels
    accuracy_after: float | None


@dataclass
class GradCamShare:
    """What Grad-CAM at the channel's stage credits the channel with, for one class."""

    target: int
    weight: float  # mean over cells of d logit[target] / d map
    contribution: float  # weight x the channel's mean activation on the image
    rank: int  # 1: the largest contribution of the stage's channels
    channels: int  # how many channels the stage has


@contextlib.contextmanager
def zeroed_channel(model: nn.Module, stage: str, channel: int) -> Iterator[None]:
    """Within the block, ``stage``'s output has ``channel`` set to 0 (every later stage sees that)."""

    def zero(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        ablated = output.clone()  # a later in-place layer must not see (or undo) the original
        ablated[:, channel] = 0
        return ablated

    handle = find_stage(model, stage).register_forward_hook(zero)
    try:
        yield
    finally:
        handle.remove()


def _class_probabilities(model: nn.Module, images: torch.Tensor) -> torch.Tensor | None:
    """Softmax over the classes (N, classes) of float images, in batches; None for a per-pixel model."""
    device = model_device(model)
    found = []
    with eval_mode(model), torch.no_grad():
        for first in range(0, images.shape[0], SAMPLE_BATCH):
            logits = model(to_float(images[first : first + SAMPLE_BATCH]).to(device))
            if logits.ndim != 2:
                return None
            found.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(found)


def ablation(model: nn.Module, stage: str, channel: int, image: torch.Tensor) -> Ablation | None:
    """The predicted class's probability on ``image`` with and without ``stage``'s ``channel``."""
    batch, _ = as_batch(model, image)
    before = _class_probabilities(model, batch)
    if before is None:
        return None
    with zeroed_channel(model, stage, channel):
        after = _class_probabilities(model, batch)
    target = int(before[0].argmax())
    return Ablation(target, float(before[0, target]), float(after[0, target]), int(after[0].argmax()))


def _sample_effect(before: torch.Tensor, after: torch.Tensor, labels: torch.Tensor | None) -> SampleAblation:
    predicted = before.argmax(dim=1)  # (N,)
    rows = torch.arange(before.shape[0])
    change = after[rows, predicted] - before[rows, predicted]  # (N,)
    accuracy = None, None
    if labels is not None and labels.ndim == 1:
        labels = labels.to(predicted.device)
        accuracy = (
            float((predicted == labels).float().mean()),
            float((after.argmax(dim=1) == labels).float().mean()),
        )
    return SampleAblation(
        images=int(before.shape[0]),
        mean_change=float(change.double().mean()),
        changed_predictions=int((after.argmax(dim=1) != predicted).sum()),
        accuracy_before=accuracy[0],
        accuracy_after=accuracy[1],
    )


def sample_ablation(
    model: nn.Module,
    stage: str,
    channel: int,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> SampleAblation | None:
    """Zero ``channel`` of ``stage`` on every image of ``images`` (N, C, H, W): how each image's
    predicted-class probability changes on average, and the accuracy against ``labels``."""
    before = _class_probabilities(model, images)
    if before is None:
        return None
    with zeroed_channel(model, stage, channel):
        after = _class_probabilities(model, images)
    return _sample_effect(before, after, labels)


def channel_ablations(
    model: nn.Module,
    stage: str,
    channels: list[int],
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> list[SampleAblation] | None:
    """``sample_ablation`` of each of ``channels``, with the unablated pass run once for all."""
    before = _class_probabilities(model, images)
    if before is None:
        return None
    effects = []
    for channel in channels:
        with zeroed_channel(model, stage, channel):
            effects.append(_sample_effect(before, _class_probabilities(model, images), labels))
    return effects


def grad_cam_terms(
    model: nn.Module, stage: str, image: torch.Tensor, target: int | None
) -> tuple[int, torch.Tensor, torch.Tensor] | None:
    """(target, weights (C,), contributions (C,)) of Grad-CAM at ``stage``: each channel's mean
    gradient of the target's logit over the map, and that times the channel's mean activation.
    None for a per-pixel model (no one logit per class)."""
    batch, _ = as_batch(model, image)
    kept: dict[str, torch.Tensor] = {}

    def keep(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        # a frozen model's map carries no graph: start one here, all the gradient needs
        kept["map"] = output if output.requires_grad else output.detach().requires_grad_()
        return kept["map"] + 0  # a new tensor: a later in-place layer changes it, not the one kept

    handle = find_stage(model, stage).register_forward_hook(keep)
    try:
        with eval_mode(model), torch.enable_grad():
            logits = model(batch)
            if logits.ndim != 2:
                return None
            target = check_target(model, target, logits[0].detach())
            (gradient,) = torch.autograd.grad(logits[0, target], kept["map"])
    finally:
        handle.remove()
    feature_map = kept["map"].detach()[0].double()  # (C, h, w)
    weights = gradient[0].double().mean(dim=(1, 2))  # (C,) Grad-CAM's alpha
    return target, weights, weights * feature_map.mean(dim=(1, 2))


def grad_cam_share(
    model: nn.Module, stage: str, channel: int, image: torch.Tensor, target: int | None = None
) -> GradCamShare | None:
    """Grad-CAM's weight and weighted mean activation of ``channel`` at ``stage`` for ``target``
    (default: the predicted class), and its rank among the stage's channels."""
    terms = grad_cam_terms(model, stage, image, target)
    if terms is None:
        return None
    target, weights, contributions = terms
    rank = int((contributions > contributions[channel]).sum()) + 1
    return GradCamShare(
        target=target,
        weight=float(weights[channel]),
        contribution=float(contributions[channel]),
        rank=rank,
        channels=int(contributions.shape[0]),
    )
