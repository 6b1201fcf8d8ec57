"""Parameter sharing makes convolution shift-equivariant: shift the image, and the feature maps shift too.

For every spatial stage f of a CNN we compare f(shift(x)) with shift(f(x)). A stage that has
downsampled by a total stride J can only follow shifts that are multiples of J: a 1-pixel shift
of the input is a half-cell shift after one 2×2 max-pool, which no shift of the pooled map
reproduces. Images are placed on a larger empty canvas first, so the zero padding at the
image border does not blur the measurement; errors are measured over the region of the original
image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convlens.data import Dataset, to_float
from convlens.errors import ConvlensError
from convlens.lab._common import (
    LabResult,
    check_positive,
    register_experiment,
    sample_indices,
    train_quick,
)

CANVAS_MARGIN = 16  # empty pixels around the image: more than any stage's receptive-field radius + shift


@dataclass
class EquivarianceResult(LabResult):
    dataset: str
    model: str
    images: int
    shifts: list[int]  # input shifts (pixels, along both axes)
    stages: list[str]  # spatial stages, in order
    strides: list[int]  # total downsampling before each stage's output (J)
    relative_error: list[list[float]]  # [stage][shift]: ||f(Sx) - S'f(x)|| / ||S'f(x)||
    seconds: float = 0.0


def _shift_map(feature_map: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    # torch.roll: the wrapped-around strip lies in the empty canvas margin, outside the compared region
    return torch.roll(feature_map, shifts=(rows, cols), dims=(-2, -1))


def spatial_stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The stages before the classifier that keep a (C, H, W) layout (from normalize on)."""
    stages = []
    for name, module in model.stages():
        if isinstance(module, nn.Flatten | nn.Linear | nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
            break
        stages.append((name, module))
    return stages


def _shown(name: str) -> bool:
    return name != "normalize"  # a per-pixel affine map: trivially equivariant, not worth a row


@torch.no_grad()
def measure(model: nn.Module, images: torch.Tensor, shifts: list[int]) -> tuple[list, list, list]:
    """(stage names, total strides, relative error per stage and shift) for float images (N, C, H, W)."""
    margin = CANVAS_MARGIN
    height, width = images.shape[-2:]
    canvas = F.pad(images, (margin, margin, margin, margin))  # (N, C, H + 2m, W + 2m), background 0
    stages = spatial_stages(model)
    if not any(isinstance(module, nn.Conv2d) for _, module in stages):
        raise ConvlensError("equivariance needs a model with convolution stages (e.g. convnet)")

    def run_stages(x):
        outputs = []
        for _, module in stages:
            x = module(x)
            outputs.append(x)
        return outputs

    reference = run_stages(canvas)
    names, strides, errors = [], [], []
    for (name, _), feature_map in zip(stages, reference, strict=True):
        stride = round(canvas.shape[-1] / feature_map.shape[-1])
        names.append(name)
        strides.append(stride)
        errors.append([])
    for shift in shifts:
        moved = run_stages(_shift_map(canvas, shift, shift))
        for index, (feature_map, moved_map) in enumerate(zip(reference, moved, strict=True)):
            stride = strides[index]
            # the original image's region at this stage, moved with the content
            top, bottom = margin // stride, (margin + height) // stride
            left, right = margin // stride, (margin + width) // stride
            # a shift that is not a multiple of the stride has no exact counterpart: take the nearest
            best = None
            for cells in {shift // stride, -(-shift // stride)}:
                expected = _shift_map(feature_map, cells, cells)
                region = (..., slice(top + cells, bottom + cells), slice(left + cells, right + cells))
                difference = (moved_map[region] - expected[region]).norm()
                error = float(difference / expected[region].norm().clamp_min(1e-12))
                best = error if best is None else min(best, error)
            errors[index].append(best)
    return names, strides, errors


def run(
    dataset: Dataset,
    model: nn.Module | None = None,
    shifts: tuple[int, ...] = (1, 2, 4),
    images: int = 200,
    epochs: int = 2,
    seed: int = 0,
) -> EquivarianceResult:
    """Compare feature maps of shifted images with shifted feature maps, stage by stage."""
    check_positive("images", images)
    shifts = [int(s) for s in shifts]
    if not shifts or min(shifts) < 1 or max(shifts) > CANVAS_MARGIN // 2:
        raise ConvlensError(f"shifts must be between 1 and {CANVAS_MARGIN // 2} pixels, got {shifts}")
    name = getattr(model, "arguments", {}).get("name", "model")
    if model is None:
        model, _ = train_quick(dataset, "convnet", epochs, seed)
        name = "convnet"
    index = sample_indices(dataset.test_labels.shape[0], images, seed)
    pixels = to_float(dataset.test_images[index])  # (N, C, H, W)
    stages, strides, errors = measure(model.eval(), pixels, shifts)
    keep = [i for i, stage in enumerate(stages) if _shown(stage)]
    stages, strides, errors = ([values[i] for i in keep] for values in (stages, strides, errors))
    return EquivarianceResult(
        dataset=dataset.name,
        model=name,
        images=int(pixels.shape[0]),
        shifts=shifts,
        stages=stages,
        strides=strides,
        relative_error=errors,
    )


register_experiment(
    "equivariance",
    run,
    quick={"epochs": 1, "images": 20},
    help="feature maps of a shifted image vs shifted feature maps, per stage",
)
