"""Where a class-activation method (Grad-CAM and its kin) may look, and which of those stages to offer first.

A stage-taking attribution method (one whose function has a ``stage`` parameter, e.g. Grad-CAM) looks
at a feature map; which stages qualify is the layer-kind table's decision (``grad_cam_target``).
Rectified stages (after a ReLU, through poolings) come first: before a ReLU the map weighs evidence
the network throws away (on the digits convnet conv1/conv2 maps are often blank).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect._stages import find_stage, is_spatial_stage, model_stages


def takes_stage(entry) -> bool:
    """Whether a registered attribution method looks at a stage (its function names ``stage``)."""
    return "stage" in inspect.signature(entry.function).parameters


def is_grad_cam_target(model: nn.Module, stage: str) -> bool:
    """Whether Grad-CAM may look at ``stage``: one that is or holds a convolution, or whose output is
    a feature map of a kind that allows it (``layer_kinds.stage_traits``): a graph's ReLU, addition
    or pooling is a stage of its own, with no convolution inside."""
    from convlens.inspect._stages import eval_mode, input_shape, model_device
    from convlens.inspect.hooks import StageRecorder
    from convlens.inspect.layer_kinds import stage_traits

    module = find_stage(model, stage)
    if is_spatial_stage(module):
        return True
    shape = input_shape(model)
    if shape is None:
        return False
    with eval_mode(model), torch.no_grad(), StageRecorder(model, [stage]) as recorder:
        model(torch.zeros(1, *shape, device=model_device(model)))
    return stage_traits(module, tuple(recorder.outputs[stage][0].shape)).grad_cam_target


def grad_cam_default(model: nn.Module) -> str | None:
    """Grad-CAM's default stage (``grad_cam_stage``), or None for a model without convolutions."""
    from convlens.inspect.attribution import grad_cam_stage

    try:
        return grad_cam_stage(model)
    except ConvlensError:
        return None


def grad_cam_stages(model: nn.Module) -> list[dict]:
    """Every stage Grad-CAM may look at as ``{"stage", "rectified", "default"}``: rectified ones
    (after a ReLU, through poolings) first, then the others, each group in model order."""
    from convlens.inspect.layer_kinds import layer_kind, rectifies

    default, rectified, found = grad_cam_default(model), False, []
    for name, module in model_stages(model):
        kind = layer_kind(module)
        if rectifies(module):
            rectified = True
        elif is_spatial_stage(module) or kind is None or not kind.grad_cam_target:
            rectified = False
        if is_grad_cam_target(model, name):
            found.append({"stage": name, "rectified": rectified, "default": name == default})
    return sorted(found, key=lambda s: not s["rectified"])


def stage_help(model: nn.Module) -> str:
    """The stages Grad-CAM may look at as one line: rectified ones first, the others marked."""
    stages = grad_cam_stages(model)
    if not stages:
        return "none (the model has no convolution)"
    return ", ".join(
        s["stage"] + (" (default)" if s["default"] else "") + ("" if s["rectified"] else " (before a ReLU)")
        for s in stages
    )
