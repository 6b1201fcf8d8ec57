"""Class activation maps: Grad-CAM and Grad-CAM++ weigh a stage's feature maps by the class score's gradient.

Both read the same two tensors at a stage, its feature maps A (1, K, h, w) and the gradient g
of the target's logit with respect to them, and differ only in how they weigh each channel:
Grad-CAM by the mean of g (Selvaraju et al. 2017), Grad-CAM++ by a per-pixel weighted sum of
the positive gradients (Chattopadhay et al. 2018). ``class_activation_map`` does the shared
part once: stage choice, one forward and backward pass with a hook removed in ``finally``,
the spatial check, and the bilinear upsampling to the input.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect._stages import eval_mode, find_stage, is_spatial_stage, model_stages, stage_inputs
from convlens.inspect.attribution_base import Attribution, prepare, scaled
from convlens.inspect.layer_kinds import layer_kind, rectifies

# How a CAM method turns a stage's feature maps (1, K, h, w) and the score's gradient with
# respect to them (same shape) into one weight per channel (1, K, 1, 1).
ChannelWeights = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def last_conv_stage(model: nn.Module) -> str:
    """The last stage that is (or contains) a convolution."""
    names = [name for name, module in model_stages(model) if is_spatial_stage(module)]
    if not names:
        raise ConvlensError("model has no convolution stage; Grad-CAM needs one (try saliency)")
    return names[-1]


def grad_cam_stage(model: nn.Module) -> str:
    """Grad-CAM's default: the last rectified spatial stage, the ReLU (or the pooling after it)
    that follows the last convolution; the last convolution itself when no ReLU follows it.
    It moves past the stages whose layer kind keeps the map cell by cell and may be a Grad-CAM
    target (``convlens.inspect.layer_kinds``), never past a module the table does not know.

    Grad-CAM before the ReLU weighs negative evidence that the network throws away: on the
    mnist5k convnet its maps at conv2 delete pixels worse than a random order (deletion AUC
    0.54 vs 0.50), at pool2 far better (0.28; docs/inspect.md, "Which map to trust").
    """
    stages = model_stages(model)
    last = max((i for i, (_, module) in enumerate(stages) if is_spatial_stage(module)), default=None)
    if last is None:
        raise ConvlensError("model has no convolution stage; Grad-CAM needs one (try saliency)")
    chosen = stages[last][0]
    rectified = rectifies(stages[last][1])  # a block ending in a ReLU
    reads = stage_inputs(model)  # a graph: follow only the stages that read the last convolution's map
    path = {chosen}
    for name, module in stages[last + 1 :]:
        if reads is not None and not path.intersection(reads[name]):
            continue  # another branch
        path.add(name)
        kind = layer_kind(module)
        if kind is None or not kind.grad_cam_target:
            break  # flatten, global pooling, linear: no spatial map any more; unknown: may move cells
        rectified = rectified or kind.rectifies
        if rectified:
            chosen = name
    return chosen


def stage_map_and_gradient(
    model: nn.Module, batch: torch.Tensor, layer: nn.Module, target: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The output of ``layer`` for ``batch`` (1, C, H, W) and the gradient of logit ``target``
    with respect to it, both detached. The first call of the layer is the one read (a traced
    model gives each further call a stage of its own)."""
    kept: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: tuple, output):
        if not isinstance(output, torch.Tensor):
            return None
        if not kept:
            kept.append(output)
        # hand the rest of the network a copy: an in-place layer after this stage (ReLU(inplace=True))
        # then changes the copy, and the map read here stays the stage's own output
        return output.clone()

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(batch)  # (1, classes)
    finally:
        handle.remove()
    if not kept:
        raise ConvlensError("stage did not run in the forward pass; choose another stage", parameter="stage")
    (gradient,) = torch.autograd.grad(logits[0, target], kept[0], allow_unused=True)
    if gradient is None:  # a branch the class score does not read: nothing there raises it
        gradient = torch.zeros_like(kept[0])
    return kept[0].detach(), gradient.detach()


def class_activation_map(
    method: str,
    weigh: ChannelWeights,
    model: nn.Module,
    image: torch.Tensor,
    target: int | None,
    stage: str | None,
) -> Attribution:
    """relu(sum_k w_k A_k) at ``stage`` (default ``grad_cam_stage``), with ``weigh`` giving w,
    upsampled bilinearly to the input and scaled to [0, 1]; ``raw`` is the sum before the ReLU."""
    with eval_mode(model):
        batch, target, probability = prepare(model, image, target)
        stage = stage or grad_cam_stage(model)
        layer = find_stage(model, stage)
        feature_maps, gradient = stage_map_and_gradient(model, batch, layer, target)  # (1, K, h, w) each
        if feature_maps.ndim != 4:
            spatial = [n for n, m in model_stages(model) if is_spatial_stage(m)]
            raise ConvlensError(
                f"stage {stage!r} has no spatial feature map for Grad-CAM; choose one of: {', '.join(spatial)}"
            )
        cam = (weigh(feature_maps, gradient) * feature_maps).sum(dim=1, keepdim=True)  # (1, 1, h, w)
        upsampled = nn.functional.interpolate(
            cam.relu(), size=tuple(batch.shape[-2:]), mode="bilinear"
        )  # (1, 1, H, W)
    return Attribution(
        method=method,
        target=target,
        stage=stage,
        map=scaled(upsampled[0, 0].cpu().clamp_min(0)),
        raw=cam[0, 0].cpu(),
        probability=probability,
    )


def grad_cam_weights(feature_maps: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Grad-CAM: each channel weighs by the mean of the score's gradient over its map."""
    return gradient.mean(dim=(2, 3), keepdim=True)  # (1, K, 1, 1)


def grad_cam_plus_plus_weights(feature_maps: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++: w_k = sum_ij alpha_ij^k relu(g_ij^k), alpha = g^2 / (2 g^2 + (sum_ab A_ab^k) g^3).

    The closed form of Chattopadhay et al. (eq. 19) for the score exp(logit) of a network that
    is piecewise linear in A: its higher derivatives are powers of g, and the exp factor cancels
    in alpha. A pixel whose denominator is 0 (no gradient) gets alpha 0.
    """
    squared = gradient.pow(2)
    totals = feature_maps.sum(dim=(2, 3), keepdim=True)  # (1, K, 1, 1): sum_ab A_ab per channel
    denominator = 2 * squared + totals * gradient.pow(3)
    alpha = torch.where(denominator != 0, squared / denominator.where(denominator != 0, 1.0), 0.0)
    return (alpha * gradient.relu()).sum(dim=(2, 3), keepdim=True)  # (1, K, 1, 1)


def grad_cam(
    model: nn.Module, image: torch.Tensor, target: int | None = None, stage: str | None = None
) -> Attribution:
    """Grad-CAM at ``stage`` for ``target`` (default: the prediction).

    The default stage is the last rectified spatial stage (``grad_cam_stage``: pool2 on the
    convnet); any spatial stage can be named. How faithful the maps are depends on the run:
    ``convlens.inspect.run_faithfulness.run_faithfulness`` measures it (docs/inspect.md).
    """
    return class_activation_map("grad-cam", grad_cam_weights, model, image, target, stage)


def grad_cam_plus_plus(
    model: nn.Module, image: torch.Tensor, target: int | None = None, stage: str | None = None
) -> Attribution:
    """Grad-CAM++ at ``stage`` (default: Grad-CAM's) for ``target`` (Chattopadhay et al. 2018).

    Grad-CAM's mean gradient lets a large part of an object outweigh a small one; Grad-CAM++
    weighs each pixel's positive gradient so that several instances, or thin parts, of the
    class each light up.
    """
    return class_activation_map("grad-cam++", grad_cam_plus_plus_weights, model, image, target, stage)
