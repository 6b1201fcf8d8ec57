"""Shared plumbing of the inside view: finding stages by name and shaping user images into batches.

Everything in ``convlens.inspect`` reaches a model only through ``stages()``; this module is
the one place that turns a stage name into its module and checks an image against the
model's input shape, so every explanation fails the same way on the same bad input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from convlens.data import to_float
from convlens.errors import ConvlensError

SOFTMAX = "softmax"  # the pseudo-stage after the logits; every explanation can point at it


def model_stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's named stages; plain modules fall back to their direct children."""
    if hasattr(model, "stages"):
        return list(model.stages())
    return list(model.named_children())


def stage_inputs(model: nn.Module) -> dict[str, tuple[str, ...]] | None:
    """Each stage's inputs by name (``input``: the image) for a model traced to a graph
    (``convlens.models.traced``); None for a chain of stages or a model seen through hooks."""
    inputs = getattr(model, "stage_inputs", None)
    return inputs() if callable(inputs) else None


def kind_name(module: nn.Module) -> str:
    """What a face calls a stage's layer: its class (``Conv2d``), or for a call a traced model runs
    as it is (``convlens.models.calls.FunctionCall``) the function's name (``sigmoid``, ``mul``)."""
    return getattr(module, "kind_name", None) or type(module).__name__


def stage_names(model: nn.Module, with_softmax: bool = True) -> list[str]:
    return [name for name, _ in model_stages(model)] + ([SOFTMAX] if with_softmax else [])


def find_stage(model: nn.Module, name: str) -> nn.Module:
    """The module of stage ``name``; an unknown name is a ConvlensError listing the valid ones."""
    for stage_name, module in model_stages(model):
        if stage_name == name:
            return module
    raise ConvlensError(f"unknown stage {name!r}; this model's stages are: {', '.join(stage_names(model))}")


def input_shape(model: nn.Module) -> tuple[int, ...] | None:
    shape = getattr(model, "in_shape", None)
    return tuple(shape) if shape is not None else None


def as_batch(model: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """One image (C, H, W) or a batch (N, C, H, W) → a float batch on the model's device, and
    whether it was a single image. A shape the model cannot take is a ConvlensError."""
    if not isinstance(image, torch.Tensor):
        raise ConvlensError(f"image: expected a torch.Tensor, got {type(image).__name__}")
    expected = input_shape(model)
    single = image.ndim == 3
    if image.ndim == 2 and expected is not None and expected[0] == 1:
        image, single = image.unsqueeze(0), True  # (H, W) grayscale → (1, H, W)
    if image.ndim not in (3, 4):
        raise ConvlensError(f"image: expected C x H x W or N x C x H x W, got shape {tuple(image.shape)}")
    batch = image.unsqueeze(0) if single else image  # (N, C, H, W)
    if expected is not None and tuple(batch.shape[1:]) != expected:
        raise ConvlensError(
            f"image: shape {tuple(batch.shape[1:])} does not fit the model, which takes "
            f"{'x'.join(map(str, expected))} (C x H x W); load files with convlens.data.load_image"
        )
    batch = to_float(batch)  # uint8 pixels → [0, 1]
    return batch.to(device=model_device(model), dtype=torch.float32), single


def model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Explain the model as it predicts (BatchNorm with running statistics), then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def check_target(model: nn.Module, target: int | None, logits: torch.Tensor) -> int:
    """``target`` checked against the number of classes; None means the predicted class."""
    classes = logits.shape[-1]
    if target is None:
        return int(logits.reshape(-1, classes)[0].argmax())
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < classes:
        raise ConvlensError(f"target class {target!r} is out of range; expected 0..{classes - 1}")
    return int(target)


def is_spatial_stage(module: nn.Module) -> bool:
    """Whether a stage is, or contains, a 2-D convolution (what Grad-CAM and filters point at)."""
    return any(isinstance(m, nn.Conv2d) for m in module.modules())
