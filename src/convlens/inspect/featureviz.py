"""What does a channel look for? Activation maximization and the dataset images that excite it most.

Following Distill's "Feature Visualization" (Olah et al. 2017): optimize an image so one
channel's mean activation is as high as possible, parameterized in Fourier space with a
1/frequency scale (so the optimizer prefers smooth, natural-looking structure). The image is
built at the model's own input size: upsampling a low-resolution image, as ImageNet recipes
do, is what blurs Lucent's pictures of 28-pixel models. All channels and starts are one batch.

Two aims, two recipes:
- ``feature_visualization`` finds the image that drives the channel hardest. It climbs from
  several starts — a seeded random one, the closed-form optimum of the affine stage just
  before (``relu1`` from ``conv1``'s), and, given images, the one that drives the channel
  hardest — with random jitter, scale and rotation for the first three quarters of the steps
  and none after, and keeps the best image any start reached, measured without transforms. So
  it never ends below the best image searched.
- ``regularised_visualization`` is the readable picture (Distill/Lucent): a random start and
  transformation robustness at every step (jitter, scale, rotation), so only structure that
  survives being moved is drawn. Its activation, measured on the untransformed image, is
  reported beside the best real image's; it may be lower — it trades strength for legibility.

A channel that no image turns on gets no gradient through its ReLUs; as in Lucid, for the
first half of the steps the ReLUs pass a "redirected" gradient for an image whose ordinary ReLU
gradient is all zero (aimed at the unit closest to firing). A channel that no searched image
turns on is ``dead`` on the data; the optimized image may still turn it on (an input unlike
any test image), and its activation says by how much.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from convlens.data.bundle import to_float
from convlens.data.transforms import random_affine
from convlens.errors import ConvlensError
from convlens.inspect._optimize import (
    DECAY,
    GAIN,
    affine_twin,
    ascend,
    check_channels,
    check_steps,
    frequency_scale,
    is_affine_stage,
    logit,
    sign_optimum,
    stage_output,
)
from convlens.inspect._stages import SOFTMAX, eval_mode, input_shape, model_device, model_stages

SETTLE = 0.25  # the last quarter of the steps climbs without transforms, where it is measured


@dataclass
class FeatureVisualization:
    """One optimized image per channel and how strongly it drives that channel."""

    stage: str
    channels: list[int]
    images: torch.Tensor  # (K, C, H, W) pixels in [0, 1]
    activation: torch.Tensor  # (K,) mean activation of each image's own channel, without transforms
    steps: int
    closed_form: bool = False  # the stage is affine in the pixels: ``images`` are the exact optimum
    regularised: bool = False  # transformed at every step: legible, not necessarily the strongest
    best_image_activation: torch.Tensor | None = None  # (K,) the best searched image's activation
    best_image_index: torch.Tensor | None = None  # (K,) that image's index
    dead: list[bool] | None = None  # per channel: no searched image turns it above 0 anywhere


@dataclass
class RegularisedVisualization:
    """One channel's regularised visualization, beside the real image that drives it hardest."""

    stage: str
    channel: int
    image: torch.Tensor  # (C, H, W) in [0, 1]
    activation: float  # the channel's mean activation on ``image``, untransformed
    best_image_activation: float | None  # the best searched image's (None: no images given)
    best_image_index: int | None
    dead: bool | None  # no searched image turns the channel above 0 (None: no images given)
    steps: int


@dataclass
class TopImages:
    """The k dataset images that drive each channel hardest (same measure as feature visualization)."""

    stage: str
    channels: list[int]
    indices: torch.Tensor  # (K, k) indices into the image set, strongest first
    scores: torch.Tensor  # (K, k) mean activation of the channel
    dead: list[bool] | None = None  # per channel: never above 0 anywhere on any of the images
    image_count: int = 0  # how many images were searched

    def dead_label(self, row: int) -> str | None:
        """What a face shows instead of a dead channel's top images (None for a live channel)."""
        if not self.dead or not self.dead[row]:
            return None
        return f"dead: never active on the {self.image_count} test images"


def _channel_scores(output: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """Mean activation of each row's own channel: output (K, C, ...) → (K,)."""
    picked = output[torch.arange(output.shape[0]), channels]  # (K, ...) or (K,)
    return picked.flatten(1).mean(dim=1) if picked.ndim > 1 else picked


def _closed_form(model: nn.Module, stage: str, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact maximum over [0, 1] pixels of an affine stage's mean activation, and its value."""

    def score(batch: torch.Tensor) -> torch.Tensor:
        return _channel_scores(stage_output(model, stage, batch, keep_graph=True), targets)

    images = sign_optimum(score, (len(targets), *input_shape(model)), model_device(model))
    with torch.no_grad():
        return images, score(images)


def _spectrum(images: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The Fourier coefficients whose image (``_FourierImages``) is ``images`` (clamped off 0, 1)."""
    return torch.fft.rfft2(logit(images), norm="ortho") / scale


class _FourierImages:
    """A batch of images as decorrelated Fourier coefficients: sigmoid(irfft2(coefficients x 1/f))."""

    def __init__(self, starts: torch.Tensor, scale: torch.Tensor, size: tuple[int, int]) -> None:
        self.real = starts.real.clone().requires_grad_()
        self.imag = starts.imag.clone().requires_grad_()
        self.scale, self.size = scale, size

    def __call__(self) -> torch.Tensor:
        coefficients = torch.complex(self.real, self.imag) * self.scale
        spatial = torch.fft.irfft2(coefficients, s=self.size, norm="ortho")
        return torch.sigmoid(spatial * GAIN)  # (N, C, H, W) in (0, 1)


def feature_visualization(
    model: nn.Module,
    stage: str,
    channels: list[int] | None = None,
    steps: int = 256,
    lr: float = 0.2,
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
    images: torch.Tensor | None = None,
    regularised: bool = False,
) -> FeatureVisualization:
    """Optimize one input image per channel of ``stage`` to maximize that channel's mean activation.

    ``images`` (N, C, H, W), if given, are searched for each channel's best image: reported
    beside the optimum (``best_image_activation``, ``dead``) and, unless ``regularised``, used
    as one of the starts. A stage that is affine in the pixels has a known optimum, the sign
    pattern of its effective weights, computed in closed form (``closed_form=True``) unless
    ``regularised``. ``progress(steps done, steps, what)`` is called after every step.
    """
    chosen = check_channels(model, stage, channels)
    check_steps(steps, lr)
    best = None if images is None else top_activating_images(model, images, stage, chosen, k=1)
    targets = torch.tensor(chosen, device=model_device(model))
    what = f"{stage}: {len(chosen)} channels"
    with eval_mode(model):
        if is_affine_stage(model, stage) and not regularised:
            found, activation = _closed_form(model, stage, targets)
            if progress is not None:
                progress(steps, steps, f"{what} (closed form)")
            return _result(stage, chosen, found, activation, 0, best, closed_form=True)
        found, activation = _climb(
            model, stage, targets, steps, lr, seed, progress, what, best, images, regularised
        )
    return _result(stage, chosen, found, activation, steps, best, regularised=regularised)


def _climb(model, stage, targets, steps, lr, seed, progress, what, best, images, regularised):
    """Gradient ascent from every start at once; per channel, the best image any start reached."""
    c, height, width = input_shape(model)
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same run on every device
    scale = frequency_scale(height, width, DECAY).to(device)  # (H, W//2+1)
    shape = (len(targets), c, height, width // 2 + 1)
    random = torch.complex(torch.randn(shape, generator=generator), torch.randn(shape, generator=generator))
    exact = [] if regularised else _exact_starts(model, stage, targets, best, images)
    spectra = torch.cat([random.to(device) * 0.01, *(_spectrum(start, scale) for start in exact)])
    rows = targets.repeat(len(spectra) // len(targets))  # row r optimizes channel targets[r % K]
    image = _FourierImages(spectra, scale, (height, width))
    jitter = max(1, height // 14) / height  # a pixel of shift per 14: a few pixels on 28x28
    strength = 2.0 if regularised else 1.0  # regularised: twice the jitter, scale and rotation
    robust_until = steps if regularised else int(steps * (1 - SETTLE))

    def moved(batch: torch.Tensor, step: int) -> torch.Tensor:
        if step >= robust_until:
            return batch
        return random_affine(
            batch, generator, degrees=5.0 * strength, scale=0.05 * strength, translate=jitter * strength
        )

    def score(batch: torch.Tensor) -> torch.Tensor:
        return _channel_scores(stage_output(model, stage, batch, keep_graph=True), rows)

    report = None if progress is None else (lambda done: progress(done, steps, what))
    found, scores = ascend(model, score, image, [image.real, image.imag], steps, lr, moved, report)
    if exact:  # the starts themselves, as given (the sigmoid only comes near 0 and 1)
        given = torch.cat(exact)
        with torch.no_grad():
            given_scores = _channel_scores(
                stage_output(model, stage, given, keep_graph=False), rows[len(targets) :]
            )
        found, scores = torch.cat([found, given]), torch.cat([scores, given_scores])
    per_start = scores.view(-1, len(targets))  # (S, K)
    winner = per_start.argmax(dim=0) * len(targets) + torch.arange(len(targets), device=scores.device)
    return found[winner], scores[winner]


def _exact_starts(model, stage, targets, best: TopImages | None, images) -> list[torch.Tensor]:
    """(K, C, H, W) starts besides the random one: the affine twin's closed form (``relu1`` starts
    from ``conv1``'s optimum) and each channel's best searched image."""
    starts = []
    twin = affine_twin(model, stage)
    if twin is not None:
        starts.append(_closed_form(model, twin, targets)[0].detach())
    if best is not None:
        starts.append(to_float(images[best.indices[:, 0]]).to(model_device(model)))
    return starts


def _result(stage, chosen, found, activation, steps, best, **flags) -> FeatureVisualization:
    return FeatureVisualization(
        stage=stage,
        channels=chosen,
        images=found.detach().cpu(),
        activation=activation.detach().cpu(),
        steps=steps,
        best_image_activation=None if best is None else best.scores[:, 0],
        best_image_index=None if best is None else best.indices[:, 0],
        dead=None if best is None else best.dead,
        **flags,
    )


def regularised_visualization(
    model: nn.Module,
    stage: str,
    channel: int,
    images: torch.Tensor | None = None,
    steps: int = 256,
    lr: float = 0.2,
    seed: int = 0,
) -> RegularisedVisualization:
    """One channel's regularised visualization (random start, jitter, scale and rotation at every
    step), with the activation it reaches untransformed beside the best of ``images``'."""
    if isinstance(channel, bool) or not isinstance(channel, int):
        raise ConvlensError(f"channel: expected a whole number, got {channel!r}", parameter="channel")
    result = feature_visualization(model, stage, [channel], steps, lr, seed, images=images, regularised=True)
    return RegularisedVisualization(
        stage=stage,
        channel=channel,
        image=result.images[0],
        activation=float(result.activation[0]),
        best_image_activation=None if images is None else float(result.best_image_activation[0]),
        best_image_index=None if images is None else int(result.best_image_index[0]),
        dead=None if result.dead is None else result.dead[0],
        steps=steps,
    )


def top_activating_images(
    model: nn.Module,
    images: torch.Tensor,
    stage: str,
    channels: list[int] | None = None,
    k: int = 9,
    batch_size: int = 500,
) -> TopImages:
    """The ``k`` images of ``images`` (N, C, H, W) with the highest mean activation per channel.

    A channel that is never above 0 at any position of any image is ``dead`` (its "top" images
    are no better than any others; ``dead_label`` says so). The logits and softmax are never dead.
    """
    chosen = check_channels(model, stage, channels)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(input_shape(model)):
        raise ConvlensError(
            f"images: expected N x {'x'.join(map(str, input_shape(model)))}, got {tuple(images.shape)}",
            parameter="images",
        )
    k = max(1, min(k, images.shape[0]))
    device = model_device(model)
    index = torch.tensor(chosen, device=device)
    scores, peaks = [], []
    with eval_mode(model), torch.no_grad():
        for first in range(0, images.shape[0], batch_size):
            batch = to_float(images[first : first + batch_size]).to(device)  # (B, C, H, W)
            output = stage_output(model, stage, batch, keep_graph=False)[:, index]  # (B, K, ...)
            scores.append(output.flatten(2).mean(dim=2) if output.ndim > 2 else output)
            peaks.append(output.flatten(2).amax(dim=2) if output.ndim > 2 else output)
    per_image = torch.cat(scores).T.cpu()  # (K, N)
    values, indices = per_image.topk(k, dim=1)
    logits = stage in (SOFTMAX, model_stages(model)[-1][0])
    dead = [False] * len(chosen) if logits else (torch.cat(peaks).amax(dim=0) <= 0).cpu().tolist()
    return TopImages(
        stage=stage, channels=chosen, indices=indices, scores=values, dead=dead, image_count=images.shape[0]
    )
