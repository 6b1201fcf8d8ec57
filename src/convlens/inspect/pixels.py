"""One pixel of a segmentation model's answer: its class probabilities, what it can see, why.

A segmentation model answers per pixel, so "why" is asked per pixel (or per region):

- ``segment`` gives every pixel's probabilities, the mask, the confidence and the uncertainty
  (``convlens.predict.segment``, re-exported here beside the explanations);
- ``explain_pixel`` says, for one output pixel, which window of every earlier stage's map can
  change it — walked through the graph's branches and the decoder's upsampling by the
  receptive-field machinery (``receptive_field.stage_windows``), so the skip connections'
  detail and the bottom's context both show — and draws a Grad-CAM for that pixel's logit
  (or a region's summed logits: "why is this region class c", Vinogradova et al., 2020).

Grad-CAM's default stage for a per-pixel question is the last rectified stage before the
output (``pixel_grad_cam_stage``): on the U-Net the last decoder ReLU, which is at full
resolution and has seen both the skip connection and the bottom level. The head itself would
be useless — the gradient of one pixel's logit there is one-hot at that pixel, so its map only
repeats the logit map — and a stage before the ReLU weighs negative evidence the network
throws away (``attribution.grad_cam_stage`` measures why).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convlens.errors import ConvlensError, shown
from convlens.inspect._stages import eval_mode, find_stage, model_stages, stage_inputs
from convlens.inspect.layer_kinds import rectifies
from convlens.inspect.receptive_field import stage_output_shapes, stage_windows
from convlens.predict import SegmentationMaps, check_pixels, check_segmentation_model, segment

__all__ = ["PixelExplanation", "SegmentationMaps", "explain_pixel", "pixel_grad_cam_stage", "segment"]


@dataclass
class PixelExplanation:
    """Why one output pixel got its class (see the module docstring)."""

    row: int
    col: int
    probabilities: torch.Tensor  # (K,) softmax at (row, col)
    predicted: int  # argmax class at (row, col)
    target: int  # the class Grad-CAM explains (default: predicted)
    # per earlier feature-map stage, in forward order: {"stage", "top", "left", "bottom", "right"
    # (inclusive, in that stage's map), "shape" (C, h, w), "whole" (True: no narrower window known)}
    receptive_fields: list[dict]
    grad_cam: torch.Tensor  # (H, W) in [0, 1] at input resolution
    stage: str  # where Grad-CAM looked
    region_pixels: int  # pixels whose logits Grad-CAM sums: 1, or the region's size


def output_stage(model: nn.Module) -> str:
    """The stage whose map is the model's output (the graph's output, else the last stage)."""
    return getattr(model, "output", None) or model_stages(model)[-1][0]


def pixel_grad_cam_stage(model: nn.Module) -> str:
    """The last rectified stage before the output (the module docstring says why)."""
    output = output_stage(model)
    names = [name for name, module in model_stages(model) if name != output and rectifies(module)]
    if not names:
        raise ConvlensError("model has no rectified stage before its output; name a stage", parameter="stage")
    return names[-1]


def _whole_number(value, parameter: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
        raise ConvlensError(
            f"{parameter} must be a whole number 0..{limit - 1}, got {shown(value)}", parameter=parameter
        )
    return value


def _region(region, size: tuple[int, int]) -> torch.Tensor | None:
    if region is None:
        return None
    if not isinstance(region, torch.Tensor) or region.dtype != torch.bool or tuple(region.shape) != size:
        got = tuple(region.shape) if isinstance(region, torch.Tensor) else type(region).__name__
        raise ConvlensError(
            f"region must be a bool mask of {size[0]}x{size[1]} (the image's H x W), got {got}",
            parameter="region",
        )
    if not bool(region.any()):
        raise ConvlensError("region must mark at least one pixel, got an empty mask", parameter="region")
    return region


def pixel_windows(model: nn.Module, row: int, col: int) -> list[dict]:
    """For every earlier feature-map stage, the window of its map that output pixel (row, col) reads.

    A stage the walk cannot follow cell by cell (a layer of unknown geometry on the way) gets
    its whole map, marked ``whole``: a window that is too large is honest, one too small is not.
    """
    if stage_inputs(model) is None:
        raise ConvlensError(
            "model: windows of one pixel need a model with a graph of stages", parameter="model"
        )
    output = output_stage(model)
    windows = stage_windows(model).get(output, {})
    _, stages, _ = stage_output_shapes(model, "pixel windows")
    fields = []
    for name, _, shape in stages:
        if name == output or len(shape) != 3:
            continue
        if name in windows:
            rows, cols = windows[name]
            (top, bottom), (left, right) = rows[row], cols[col]
            whole = False
        else:
            top, left, bottom, right, whole = 0, 0, shape[1] - 1, shape[2] - 1, True
        fields.append(
            {
                "stage": name,
                "top": top,
                "left": left,
                "bottom": bottom,
                "right": right,
                "shape": shape,
                "whole": whole,
            }
        )
    return fields


def _pixel_grad_cam(model, image, stage: str, target: int, row: int, col: int, region) -> torch.Tensor:
    """Grad-CAM by hand: the stage's map weighed by the spatial mean of the score's gradient."""
    module = find_stage(model, stage)
    captured: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda _m, _i, output: captured.__setitem__("map", output))
    try:
        with torch.enable_grad():
            batch = image.unsqueeze(0).clone().requires_grad_(True)
            logits = model(batch)[0]  # (K, H, W)
            if region is None:
                score = logits[target, row, col]
            else:
                score = (logits[target] * region.to(logits.device, logits.dtype)).sum()
            activation = captured.get("map")
            if activation is None or activation.ndim != 4:
                spatial = [name for name, _, shape in _spatial(model)]
                raise ConvlensError(
                    f"stage {stage!r} has no spatial feature map for Grad-CAM; choose one of: {', '.join(spatial)}",
                    parameter="stage",
                )
            gradient = torch.autograd.grad(score, activation)[0]  # (1, C, h, w)
    finally:
        handle.remove()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = (weights * activation).sum(dim=1, keepdim=True).detach().relu()  # (1, 1, h, w)
    upsampled = F.interpolate(cam, size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
    upsampled = upsampled.clamp_min(0).cpu()
    top = upsampled.max()
    return upsampled / top if top > 0 else torch.zeros_like(upsampled)


def _spatial(model):
    return [s for s in stage_output_shapes(model, "Grad-CAM")[1] if len(s[2]) == 3]


def explain_pixel(
    model: nn.Module,
    pixels: torch.Tensor,
    row: int,
    col: int,
    target: int | None = None,
    region: torch.Tensor | None = None,
    stage: str | None = None,
) -> PixelExplanation:
    """Why output pixel (``row``, ``col``) of image ``pixels`` (C, H, W) in [0, 1] got its class.

    ``target``: the class Grad-CAM explains (default: the pixel's predicted class).
    ``region``: a (H, W) bool mask; Grad-CAM then explains the region's summed ``target`` logits
    instead of the one pixel's. ``stage``: where Grad-CAM looks (default: ``pixel_grad_cam_stage``).
    """
    check_segmentation_model(model)
    image = check_pixels(model, pixels)
    height, width = image.shape[-2:]
    row = _whole_number(row, "row", height)
    col = _whole_number(col, "col", width)
    region = _region(region, (height, width))
    names = [name for name, _ in model_stages(model)]
    if stage is not None and stage not in names:
        raise ConvlensError(
            f"stage: unknown stage {stage!r}; this model's stages are: {', '.join(names)}", parameter="stage"
        )
    with eval_mode(model):
        device = next(model.parameters()).device
        image = image.to(device)
        with torch.no_grad():
            logits = model(image.unsqueeze(0))[0, :, row, col].float().cpu()  # (K,)
        probabilities = torch.softmax(logits, dim=0)
        predicted = int(probabilities.argmax())
        classes = probabilities.shape[0]
        if target is None:
            target = predicted
        elif isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < classes:
            raise ConvlensError(
                f"target must be a class index 0..{classes - 1}, got {shown(target)}", parameter="target"
            )
        stage = stage or pixel_grad_cam_stage(model)
        cam = _pixel_grad_cam(model, image, stage, target, row, col, region)
    return PixelExplanation(
        row=row,
        col=col,
        probabilities=probabilities,
        predicted=predicted,
        target=target,
        receptive_fields=pixel_windows(model, row, col),
        grad_cam=cam,
        stage=stage,
        region_pixels=1 if region is None else int(region.sum()),
    )


def explain_run_pixel(
    run,
    source,
    row: int,
    col: int,
    target: int | str | None = None,
    region: torch.Tensor | None = None,
    stage: str | None = None,
    invert: bool = False,
) -> PixelExplanation:
    """``explain_pixel`` of a ``convlens.run.Run`` on an image read by ``run.input`` (a file, a
    built-in picture, bytes or pixels); ``target`` may be a class name. Lives here, not on
    ``Run``: the run layer sits below the explanations and never imports them."""
    run.require_task("segmentation", "explain a classifier with grad_cam or attribute")
    pixels = run.input(source, invert=invert).pixels
    return explain_pixel(run.model, pixels, row, col, run.class_index(target), region, stage)
