"""Which pixels mattered: Grad-CAM, saliency, integrated gradients and occlusion, through Captum.

Captum implements the methods; this module picks their stage and target, checks input at
the boundary, and returns one shape for every method: a map (H, W) at input resolution in
[0, 1] plus the signed raw attribution, so faces can draw any method the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect._stages import (
    as_batch,
    check_target,
    eval_mode,
    find_stage,
    is_spatial_stage,
    model_stages,
    stage_inputs,
)
from convlens.inspect.layer_kinds import layer_kind, rectifies
from convlens.registry import Registry

IG_STEPS = 32  # Riemann steps of integrated gradients; all run as one internal batch


@dataclass
class Attribution:
    """How much each input pixel mattered for ``target``: ``map`` (H, W) in [0, 1], 1 = most."""

    method: str  # "grad-cam", "saliency", "integrated-gradients", "occlusion"
    target: int  # the class explained
    stage: str | None  # the stage Grad-CAM looked at (None for input-space methods)
    map: torch.Tensor  # (H, W) in [0, 1] at input resolution
    raw: torch.Tensor  # signed attribution: (C, H, W) for input methods, (h, w) at the stage for Grad-CAM
    probability: float  # the model's probability of ``target`` for this image
    faithfulness: dict | None = None  # the verdict on this run and image, when asked for (analyses)


def _scaled(values: torch.Tensor) -> torch.Tensor:
    top = values.max()
    return values / top if top > 0 else torch.zeros_like(values)


def _prepare(model: nn.Module, image: torch.Tensor, target: int | None) -> tuple[torch.Tensor, int, float]:
    batch, _ = as_batch(model, image)
    if batch.shape[0] != 1:
        raise ConvlensError(f"image: attribution explains one image, got a batch of {batch.shape[0]}")
    with torch.no_grad():
        logits = model(batch)  # (1, classes)
    target = check_target(model, target, logits[0])
    probability = float(torch.softmax(logits[0].float(), dim=0)[target])
    return batch.clone().requires_grad_(), target, probability


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


def grad_cam(
    model: nn.Module, image: torch.Tensor, target: int | None = None, stage: str | None = None
) -> Attribution:
    """Grad-CAM at ``stage`` for ``target`` (default: the prediction).

    The default stage is the last rectified spatial stage (``grad_cam_stage``: pool2 on the
    convnet); any spatial stage can be named. How faithful the maps are depends on the run:
    ``convlens.inspect.analyses.run_faithfulness`` measures it (docs/inspect.md).
    """
    from captum.attr import LayerAttribution, LayerGradCam

    with eval_mode(model):
        batch, target, probability = _prepare(model, image, target)
        stage = stage or grad_cam_stage(model)
        layer = find_stage(model, stage)
        cam = LayerGradCam(model, layer).attribute(batch, target=target)  # (1, 1, h, w) or (1, F)
        if cam.ndim != 4:
            spatial = [n for n, m in model_stages(model) if is_spatial_stage(m)]
            raise ConvlensError(
                f"stage {stage!r} has no spatial feature map for Grad-CAM; choose one of: {', '.join(spatial)}"
            )
        upsampled = LayerAttribution.interpolate(
            cam.relu(), tuple(batch.shape[-2:]), interpolate_mode="bilinear"
        )  # (1, 1, H, W)
    return Attribution(
        method="grad-cam",
        target=target,
        stage=stage,
        map=_scaled(upsampled[0, 0].detach().cpu().clamp_min(0)),
        raw=cam[0, 0].detach().cpu(),
        probability=probability,
    )


def _input_attribution(method: str, raw: torch.Tensor, target: int, probability: float) -> Attribution:
    magnitude = raw.abs().sum(dim=0) if method != "occlusion" else raw.sum(dim=0).clamp_min(0)  # (H, W)
    return Attribution(
        method=method, target=target, stage=None, map=_scaled(magnitude), raw=raw, probability=probability
    )


def saliency(model: nn.Module, image: torch.Tensor, target: int | None = None) -> Attribution:
    """The gradient of the target's logit with respect to each pixel (Simonyan et al. 2014)."""
    from captum.attr import Saliency

    with eval_mode(model):
        batch, target, probability = _prepare(model, image, target)
        raw = Saliency(model).attribute(batch, target=target, abs=False)  # (1, C, H, W)
    return _input_attribution("saliency", raw[0].detach().cpu(), target, probability)


IG_BASELINES = ("noise", "blur", "black", "gray")  # the first is the default


def _blurred(batch: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of ``batch`` (N, C, H, W), reflected at the borders."""
    radius = max(1, min(int(3 * sigma), min(batch.shape[-2:]) - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=batch.dtype, device=batch.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = batch.shape[1]
    rows = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    cols = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    padded = torch.nn.functional.pad(batch, (0, 0, radius, radius), mode="reflect")
    batch = torch.nn.functional.conv2d(padded, rows, groups=channels)
    padded = torch.nn.functional.pad(batch, (radius, radius, 0, 0), mode="reflect")
    return torch.nn.functional.conv2d(padded, cols, groups=channels)


def ig_baselines(batch: torch.Tensor, baseline: str, samples: int = 1, seed: int = 0) -> torch.Tensor:
    """The reference image(s) integrated gradients walks from: (S, C, H, W) for a (1, C, H, W) batch.

    ``noise``: ``samples`` uniform-noise images (their attributions are averaged, as in
    "expected gradients", Erion et al. 2021); ``blur``: the image blurred (sigma = 1/7 of its
    size); ``black``: zeros; ``gray``: 0.5 everywhere.
    """
    if baseline not in IG_BASELINES:
        raise ConvlensError(
            f"baseline must be one of {', '.join(IG_BASELINES)}, got {baseline!r}", parameter="baseline"
        )
    if baseline == "noise":
        if samples < 1:
            raise ConvlensError(f"samples must be at least 1, got {samples}", parameter="samples")
        generator = torch.Generator().manual_seed(seed)
        return torch.rand((samples, *batch.shape[1:]), generator=generator).to(batch)
    if baseline == "blur":
        return _blurred(batch.detach(), max(1.0, min(batch.shape[-2:]) / 7))
    return torch.full_like(batch, 0.5 if baseline == "gray" else 0.0)


def integrated_gradients(
    model: nn.Module,
    image: torch.Tensor,
    target: int | None = None,
    steps: int = IG_STEPS,
    baseline: str = IG_BASELINES[0],
    samples: int = 8,
    seed: int = 0,
) -> Attribution:
    """Gradients averaged along the path from a baseline image, times the pixel's distance from it
    (Sundararajan et al. 2017).

    ``baseline``: ``noise`` (default: the mean over ``samples`` uniform-noise baselines drawn
    from ``seed``), ``blur``, ``black`` or ``gray``. A black baseline makes the magnitude map
    little more than the input itself (it survives weight randomization: Spearman 0.99 on
    mnist5k); the noise baseline depends on the model (docs/inspect.md, "Which map to trust").
    """
    from captum.attr import IntegratedGradients

    if steps < 1:
        raise ConvlensError(f"steps: expected at least 1, got {steps}", parameter="steps")
    with eval_mode(model):
        batch, target, probability = _prepare(model, image, target)
        references = ig_baselines(batch, baseline, samples, seed)  # (S, C, H, W)
        raw = IntegratedGradients(model).attribute(
            batch.detach().expand(references.shape[0], -1, -1, -1).clone().requires_grad_(),
            baselines=references,
            target=target,
            n_steps=steps,
            internal_batch_size=max(steps, min(steps * references.shape[0], 256)),
        )  # fmt: skip  (S, C, H, W)
    return _input_attribution("integrated-gradients", raw.mean(dim=0).detach().cpu(), target, probability)


def occlusion(
    model: nn.Module, image: torch.Tensor, target: int | None = None, window: int | None = None
) -> Attribution:
    """How much the target's logit drops when a black square hides each region."""
    from captum.attr import Occlusion

    with eval_mode(model):
        batch, target, probability = _prepare(model, image, target)
        channels, height, width = batch.shape[1:]
        window = window or max(2, round(min(height, width) / 7))
        if not 1 <= window <= min(height, width):
            raise ConvlensError(
                f"window: expected 1..{min(height, width)} pixels, got {window}", parameter="window"
            )
        stride = max(1, window // 2)
        raw = Occlusion(model).attribute(
            batch,
            sliding_window_shapes=(channels, window, window),
            strides=(channels, stride, stride),
            baselines=0.0,
            target=target,
            perturbations_per_eval=256,  # a 28x28 image: all 169 windows in one forward pass
        )  # fmt: skip  (1, C, H, W)
    return _input_attribution("occlusion", raw[0].detach().cpu(), target, probability)


# One registry of attribution methods: the CLI's --method choices, the server's validation and
# the explorer's menu read it. A new method is a function (model, image, target, **options)
# returning an Attribution, plus one line here (or a register() call from anywhere).
ATTRIBUTIONS = Registry("attribution method", shared_inputs=("model", "image", "target"))
# ``help`` is the sentence the explorer's "Where it looks" tab and `convlens methods` show
ATTRIBUTIONS.register(
    "grad-cam",
    grad_cam,
    label="Grad-CAM",
    help="weighs the last feature maps by how much they raise the class score",
)
ATTRIBUTIONS.register(
    "saliency", saliency, label="saliency", help="asks which pixels change the class score fastest"
)
ATTRIBUTIONS.register(
    "integrated-gradients",
    integrated_gradients,
    label="integrated gradients",
    help="adds up the score's changes along the way from random-noise images to this one",
)
ATTRIBUTIONS.register(
    "occlusion", occlusion, label="occlusion", help="covers patches and watches the class score drop"
)


def attribute(
    model: nn.Module, image: torch.Tensor, method: str = "grad-cam", target: int | None = None, **options
) -> Attribution:
    """Run the registered attribution ``method`` (options it does not take are left out)."""
    return ATTRIBUTIONS.get(method).call(model, image, target=target, **options)
