"""Which pixels mattered: the registry of attribution methods, and the methods Captum implements.

Saliency, integrated gradients and occlusion run through Captum; Grad-CAM and Grad-CAM++
(``cam``), SmoothGrad (``smoothing``) and RISE (``random_masks``) live in modules of their own. This
module checks input at the boundary and registers every method in ``ATTRIBUTIONS``; each
returns one shape (``attribution_base.Attribution``): a map (H, W) at input resolution in
[0, 1] plus the method's raw numbers, so faces can draw any method the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect._stages import eval_mode
from convlens.inspect.attribution_base import Attribution, input_attribution, prepare, sampling_count
from convlens.inspect.cam import grad_cam, grad_cam_plus_plus, grad_cam_stage, last_conv_stage
from convlens.inspect.random_masks import rise
from convlens.inspect.smoothing import smoothgrad
from convlens.registry import Registry

__all__ = [
    "ATTRIBUTIONS",
    "Attribution",
    "attribute",
    "grad_cam",
    "grad_cam_plus_plus",
    "grad_cam_stage",
    "ig_baselines",
    "integrated_gradients",
    "last_conv_stage",
    "occlusion",
    "rise",
    "saliency",
    "smoothgrad",
]

IG_STEPS = 32  # Riemann steps of integrated gradients; all run as one internal batch
IG_SAMPLES = 8  # noise baselines averaged up to 64x64 pixels (sampling_count: 2 from 128x128)


def ig_samples(height: int, width: int) -> int:
    """Integrated gradients' default noise baselines on a height x width image (``sampling_count``):
    each is IG_STEPS forward and backward passes, 25 CPU-seconds for 8 on a 224x224 ResNet-18."""
    return sampling_count(IG_SAMPLES, 2, height, width)


def saliency(model: nn.Module, image: torch.Tensor, target: int | None = None) -> Attribution:
    """The gradient of the target's logit with respect to each pixel (Simonyan et al. 2014)."""
    from captum.attr import Saliency

    with eval_mode(model):
        batch, target, probability = prepare(model, image, target)
        raw = Saliency(model).attribute(batch, target=target, abs=False)  # (1, C, H, W)
    return input_attribution("saliency", raw[0].detach().cpu(), target, probability)


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
    samples: int | None = None,
    seed: int = 0,
) -> Attribution:
    """Gradients averaged along the path from a baseline image, times the pixel's distance from it
    (Sundararajan et al. 2017).

    ``baseline``: ``noise`` (default: the mean over ``samples`` uniform-noise baselines drawn
    from ``seed``), ``blur``, ``black`` or ``gray``. A black baseline makes the magnitude map
    little more than the input itself (it survives weight randomization: Spearman 0.99 on
    mnist5k); the noise baseline depends on the model (docs/inspect.md, "Which map to trust").
    ``samples`` None: ``ig_samples`` for the image's size (8 up to 64x64 pixels, 2 from 128x128).
    """
    from captum.attr import IntegratedGradients

    if steps < 1:
        raise ConvlensError(f"steps: expected at least 1, got {steps}", parameter="steps")
    with eval_mode(model):
        batch, target, probability = prepare(model, image, target)
        samples = ig_samples(*batch.shape[-2:]) if samples is None else samples
        references = ig_baselines(batch, baseline, samples, seed)  # (S, C, H, W)
        raw = IntegratedGradients(model).attribute(
            batch.detach().expand(references.shape[0], -1, -1, -1).clone().requires_grad_(),
            baselines=references,
            target=target,
            n_steps=steps,
            internal_batch_size=max(steps, min(steps * references.shape[0], 256)),
        )  # fmt: skip  (S, C, H, W)
    return input_attribution("integrated-gradients", raw.mean(dim=0).detach().cpu(), target, probability)


def occlusion(
    model: nn.Module, image: torch.Tensor, target: int | None = None, window: int | None = None
) -> Attribution:
    """How much the target's logit drops when a black square hides each region."""
    from captum.attr import Occlusion

    with eval_mode(model):
        batch, target, probability = prepare(model, image, target)
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
    return input_attribution("occlusion", raw[0].detach().cpu(), target, probability, positive_only=True)


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
    "grad-cam++",
    grad_cam_plus_plus,
    label="Grad-CAM++",
    help="weighs the last feature maps pixel by pixel, so several or thin parts of the class all show",
)
ATTRIBUTIONS.register(
    "saliency", saliency, label="saliency", help="asks which pixels change the class score fastest"
)
ATTRIBUTIONS.register(
    "smoothgrad",
    smoothgrad,
    label="SmoothGrad",
    help="averages saliency over noisy copies of the image, so the speckle of single gradients fades",
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
ATTRIBUTIONS.register(
    "rise",
    rise,
    label="RISE",
    help="shows the model random glimpses of the image and averages the glimpses that keep the class",
)


def attribute(
    model: nn.Module, image: torch.Tensor, method: str = "grad-cam", target: int | None = None, **options
) -> Attribution:
    """Run the registered attribution ``method`` (options it does not take are left out)."""
    return ATTRIBUTIONS.get(method).call(model, image, target=target, **options)
