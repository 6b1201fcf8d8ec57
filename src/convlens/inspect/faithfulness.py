"""Does a map explain the model? Deletion/insertion curves and cascading weight randomization.

- ``deletion_curve`` (Petsiuk et al. 2018, RISE): delete the pixels a map ranks highest,
  ``step`` at a time, and follow the probability of the image's class; the area under that
  curve (AUC) is low when the map found the pixels the model needs. ``mode="insertion"``
  starts from the empty image and puts the pixels back (high AUC is good).
- ``randomization_check`` (Adebayo et al. 2018, "Sanity checks for saliency maps"):
  re-initialize the model's weights stage by stage from the top and compare each map with
  the trained model's by Spearman rank correlation; a map that stays the same explains the
  image, not the model.

``method`` is a registered attribution method's name, one of the model-free references
(``random``: a random ranking; ``brightness``: the brightest pixels first), or a function
``(model, image, target) -> Attribution | map (H, W)``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from convlens.data.bundle import to_float
from convlens.errors import ConvlensError
from convlens.inspect._stages import eval_mode, input_shape, model_device, model_stages

REFERENCES = ("random", "brightness")  # model-free maps every method is compared with
PASS_SPEARMAN = 0.5  # a mean rank correlation below this passes the randomization check


@dataclass
class DeletionCurve:
    """The class probability as a map's top pixels are deleted (or inserted), mean over images."""

    method: str
    mode: str  # "deletion" (low AUC = faithful) or "insertion" (high AUC = faithful)
    step: int  # pixels changed per point of the curve
    fractions: torch.Tensor  # (S,) share of the pixels deleted (inserted), 0 .. 1
    probabilities: torch.Tensor  # (S,) mean probability of each image's class
    aucs: torch.Tensor  # (N,) area under each image's curve
    auc: float  # mean of ``aucs``


@dataclass
class RandomizationCheck:
    """Rank correlation of each map with the trained model's as stages are re-initialized from the top."""

    method: str
    stages: list[str]  # the stage re-initialized at each cascade step (the ones above it stay random)
    spearman: torch.Tensor  # (S, N) per step and image; a constant map counts as 0
    per_step: torch.Tensor  # (S,) mean over images
    mean: float  # mean over steps and images
    passed: bool  # mean < PASS_SPEARMAN


def method_name(method) -> str:
    return method if isinstance(method, str) else getattr(method, "__name__", "custom")


def attribution_map(
    model: nn.Module, image: torch.Tensor, method, target: int, seed: int = 0, **options
) -> torch.Tensor:
    """The (H, W) map of ``method`` for one image (C, H, W) in [0, 1] and class ``target``."""
    if method == "random":
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(image.shape[-2:], generator=generator)
    if method == "brightness":
        return image.float().sum(dim=0).cpu()
    if isinstance(method, str):
        from convlens.inspect.attribution import ATTRIBUTIONS

        result = ATTRIBUTIONS.get(method).call(model, image, target=target, **options)
    elif callable(method):
        result = method(model, image, target)
    else:
        raise ConvlensError(f"method must be a method name or a function, got {method!r}", parameter="method")
    values = result.map if hasattr(result, "map") else result
    return torch.as_tensor(values).detach().float().cpu().reshape(image.shape[-2:])


def _check_images(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    expected = input_shape(model)
    if (
        not isinstance(images, torch.Tensor)
        or images.ndim != 4
        or (expected is not None and tuple(images.shape[1:]) != tuple(expected))
    ):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConvlensError(
            f"images must be N x C x H x W pixels the model takes, got {shape}", parameter="images"
        )
    if images.shape[0] == 0:
        raise ConvlensError("images must hold at least one image", parameter="images")
    return to_float(images).float()


def pixel_order(saliency: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pixel indices, highest value first; ties broken at random (an all-zero map is a random order)."""
    flat = saliency.flatten()
    shuffled = torch.randperm(flat.numel(), generator=generator)
    ranked = torch.sort(flat[shuffled], descending=True, stable=True).indices
    return shuffled[ranked]


def deletion_curve(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    method="grad-cam",
    step: int = 8,
    mode: str = "deletion",
    fill: float = 0.0,
    seed: int = 0,
    maps: torch.Tensor | None = None,
    **options,
) -> DeletionCurve:
    """Delete (``mode="insertion"``: insert) each image's pixels ``step`` at a time in the order of
    ``method``'s map and record the probability of its label; the curve and its area, mean over images.

    A deleted pixel becomes ``fill`` (black) in every channel; insertion starts from an all-``fill``
    image. ``maps`` (N, H, W) skips computing the maps; ``options`` go to the method.
    """
    images = _check_images(model, images)
    labels = torch.as_tensor(labels).long().flatten()
    if labels.shape[0] != images.shape[0]:
        raise ConvlensError(
            f"labels must have one class per image ({images.shape[0]}), got {labels.shape[0]}",
            parameter="labels",
        )
    if step < 1:
        raise ConvlensError(f"step must be at least 1 pixel, got {step}", parameter="step")
    if mode not in ("deletion", "insertion"):
        raise ConvlensError(f"mode must be deletion or insertion, got {mode!r}", parameter="mode")
    height, width = images.shape[-2:]
    pixels = height * width
    points = math.ceil(pixels / step) + 1
    counts = torch.clamp(torch.arange(points) * step, max=pixels)  # (S,) pixels changed at each point
    fractions = counts.float() / pixels
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    curves = []
    with eval_mode(model):
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            saliency = (
                maps[index]
                if maps is not None
                else attribution_map(model, image, method, int(label), seed=seed + index, **options)
            )
            order = pixel_order(saliency, generator)
            # mask[s, p] = 1 where pixel p is changed at point s: p's rank < counts[s]
            rank = torch.empty(pixels, dtype=torch.long)
            rank[order] = torch.arange(pixels)
            changed = (rank[None, :] < counts[:, None]).view(points, 1, height, width).float()
            if mode == "insertion":
                changed = 1 - changed
            batch = image[None] * (1 - changed) + fill * changed  # (S, C, H, W)
            with torch.no_grad():
                probabilities = torch.softmax(model(batch.to(device)).float(), dim=1)[:, int(label)].cpu()
            curves.append(probabilities)
    curves = torch.stack(curves)  # (N, S)
    aucs = torch.trapezoid(curves, fractions, dim=1)
    return DeletionCurve(
        method=method_name(method),
        mode=mode,
        step=step,
        fractions=fractions,
        probabilities=curves.mean(dim=0),
        aucs=aucs,
        auc=float(aucs.mean()),
    )


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n with ties sharing their mean rank (what Spearman's rho needs)."""
    ordered, order = torch.sort(values.double())
    _, group, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, dim=0).double()  # last rank of each group of equal values
    mean_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(ordered)
    ranks[order] = mean_rank[group]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two maps; 0 when either is constant (it carries no ranking)."""
    ra, rb = _ranks(a.flatten()), _ranks(b.flatten())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denominator if denominator > 0 else 0.0


def cascade_stages(model: nn.Module) -> list[str]:
    """The stages with weights, from the output back to the input: the order they are re-initialized."""
    return [name for name, module in reversed(model_stages(model)) if any(True for _ in module.parameters())]


def reinitialize(module: nn.Module) -> None:
    for child in module.modules():
        if hasattr(child, "reset_parameters"):
            child.reset_parameters()


def randomization_check(
    model: nn.Module,
    images: torch.Tensor,
    method="grad-cam",
    labels: torch.Tensor | None = None,
    seed: int = 0,
    maps: torch.Tensor | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    **options,
) -> RandomizationCheck:
    """Cascading randomization (Adebayo et al. 2018): re-initialize the stages with weights one by
    one from the top (``cascade_stages``), and after each compare ``method``'s maps with the trained
    model's by Spearman rank correlation, for class ``labels`` (default: the trained prediction).

    The model is copied; it is not changed. ``maps`` (N, H, W): the trained model's maps, if known.
    """
    images = _check_images(model, images)
    stages = cascade_stages(model)
    if not stages:
        raise ConvlensError("model has no weights to randomize", parameter="model")
    device = model_device(model)
    with eval_mode(model), torch.no_grad():
        predictions = model(images.to(device)).argmax(dim=1).cpu()
    targets = predictions if labels is None else torch.as_tensor(labels).long().flatten()
    if maps is None:
        maps = torch.stack(
            [attribution_map(model, image, method, int(t), seed=seed + i, **options)
             for i, (image, t) in enumerate(zip(images, targets, strict=True))]
        )  # fmt: skip
    randomized = copy.deepcopy(model)
    named = dict(model_stages(randomized))
    rows = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for done, stage in enumerate(stages):
            reinitialize(named[stage])
            row = []
            for i, (image, t) in enumerate(zip(images, targets, strict=True)):
                other = attribution_map(randomized, image, method, int(t), seed=seed + i, **options)
                row.append(spearman(maps[i], other))
            rows.append(row)
            if progress is not None:
                progress(done + 1, len(stages), f"{method_name(method)}: {stage} randomized")
    correlations = torch.tensor(rows, dtype=torch.float32)  # (S, N)
    mean = float(correlations.mean())
    return RandomizationCheck(
        method=method_name(method),
        stages=stages,
        spearman=correlations,
        per_step=correlations.mean(dim=1),
        mean=mean,
        passed=mean < PASS_SPEARMAN,
    )
