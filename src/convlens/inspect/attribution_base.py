"""What every attribution method shares: the result type, the checks at the boundary, chunking.

Each method lives in the module of its idea (``attribution``: gradients, paths and occlusion
through Captum; ``cam``: class activation maps; ``smoothing``: SmoothGrad; ``random_masks``:
RISE) and returns the same ``Attribution``, so the faces draw any method the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect._stages import as_batch, check_target

# Input elements (batch x C x H x W) one forward pass of a sampling method holds at most: a
# thousand 28x28 masks go in one batch, a 224x224 RGB photo about six copies at a time.
CHUNK_ELEMENTS = 1 << 20


@dataclass
class Attribution:
    """How much each input pixel mattered for ``target``: ``map`` (H, W) in [0, 1], 1 = most."""

    method: str  # a registered name: "grad-cam", "saliency", "rise", ...
    target: int  # the class explained
    stage: str | None  # the stage a CAM method looked at (None for input-space methods)
    map: torch.Tensor  # (H, W) in [0, 1] at input resolution
    raw: torch.Tensor  # the method's own numbers: (C, H, W) or (H, W) on the input, (h, w) at a CAM's stage
    probability: float  # the model's probability of ``target`` for this image
    faithfulness: dict | None = None  # the verdict on this run and image, when asked for (analyses)


def scaled(values: torch.Tensor) -> torch.Tensor:
    """``values`` divided by their maximum (all zeros stay zeros)."""
    top = values.max()
    return values / top if top > 0 else torch.zeros_like(values)


def prepare(model: nn.Module, image: torch.Tensor, target: int | None) -> tuple[torch.Tensor, int, float]:
    """One image as a (1, C, H, W) batch that requires grad, the checked target (default: the
    prediction) and the model's probability of it."""
    batch, _ = as_batch(model, image)
    if batch.shape[0] != 1:
        raise ConvlensError(f"image: attribution explains one image, got a batch of {batch.shape[0]}")
    with torch.no_grad():
        logits = model(batch)  # (1, classes)
    target = check_target(model, target, logits[0])
    probability = float(torch.softmax(logits[0].float(), dim=0)[target])
    return batch.clone().requires_grad_(), target, probability


def input_attribution(
    method: str, raw: torch.Tensor, target: int, probability: float, positive_only: bool = False
) -> Attribution:
    """An input-space method's result: ``raw`` (C, H, W) and its map, |raw| summed over channels
    (``positive_only``: only what raises the score, the channel sum clamped at 0)."""
    magnitude = raw.sum(dim=0).clamp_min(0) if positive_only else raw.abs().sum(dim=0)  # (H, W)
    return Attribution(
        method=method, target=target, stage=None, map=scaled(magnitude), raw=raw, probability=probability
    )


def check_count(name: str, value: int, least: int = 1, most: int | None = None) -> int:
    """A whole-number option (masks, samples, cells) checked at the boundary, naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least or (most and value > most):
        expected = f"{least}..{most}" if most else f"at least {least}"
        raise ConvlensError(f"{name} must be a whole number {expected}, got {value!r}", parameter=name)
    return value


def check_number(
    name: str, value: float, low: float, high: float = math.inf, low_open: bool = False
) -> float:
    """A real-valued option checked against [low, high] (``low_open``: (low, high]), naming it."""
    number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    inside = (low < number if low_open else low <= number) and number <= high
    if not inside:
        if math.isinf(high):
            bounds = f"{'above' if low_open else 'at least'} {low:g}"
        else:
            bounds = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
        raise ConvlensError(f"{name} must be a number {bounds}, got {value!r}", parameter=name)
    return number


FULL_SAMPLING_PIXELS = 64 * 64  # up to this image size a sampling method draws its full count


def sampling_count(full: int, least: int, height: int, width: int) -> int:
    """How many samples (RISE masks, integrated gradients' noise baselines) a sampling method draws by
    default on a height x width image: ``full`` up to 64x64 pixels, then falling with the pixel count,
    never under ``least``. Each sample costs forward passes; on a 224x224 ResNet-18 1,000 RISE masks
    took 23 CPU-seconds per map (docs/inspect.md, "What measuring costs")."""
    pixels = height * width
    if pixels <= FULL_SAMPLING_PIXELS:
        return full
    return max(least, round(full * FULL_SAMPLING_PIXELS / pixels))


def chunk_size(per_item_elements: int) -> int:
    """How many copies of an input of ``per_item_elements`` values one forward pass takes."""
    return max(1, CHUNK_ELEMENTS // max(1, per_item_elements))
