"""What does a channel look for? Activation maximization and the dataset images that excite it most.

Following Distill's "Feature Visualization" (Olah et al. 2017): optimize an image so one
channel's mean activation is as high as possible, parameterized in Fourier space with a
1/frequency scale (so the optimizer prefers smooth, natural-looking structure) and made
robust with random jitter, scale and rotation at every step. The image is built at the
model's own input size: upsampling a low-resolution image, as ImageNet recipes do, is
what blurs Lucent's pictures of 28-pixel models. All channels are optimized as one batch.
A channel that no starting image turns on gets no gradient through its ReLUs; as in Lucid,
ReLUs pass a "redirected" gradient for an image whose ordinary ReLU gradient is all zero
(here aimed at the unit closest to firing).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from convlens.data.bundle import to_float
from convlens.data.transforms import random_affine
from convlens.errors import ConvlensError
from convlens.inspect._stages import (
    SOFTMAX,
    eval_mode,
    find_stage,
    input_shape,
    model_device,
    model_stages,
)
from convlens.inspect.hooks import StageRecorder
from convlens.inspect.layer_kinds import layer_kind

GAIN = 4.0  # sigmoid steepness: how fast a coefficient can reach black or white
DECAY = 1.0  # spectrum ~ 1/frequency**DECAY: natural images fall off about like 1/f


@dataclass
class FeatureVisualization:
    """One optimized image per channel and how strongly it drives that channel."""

    stage: str
    channels: list[int]
    images: torch.Tensor  # (K, C, H, W) pixels in [0, 1]
    activation: torch.Tensor  # (K,) mean activation of each image's own channel, without transforms
    steps: int
    closed_form: bool = False  # the stage is affine in the pixels: ``images`` are the exact optimum


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


class _RedirectedReLU(torch.autograd.Function):
    """ReLU forward; backward falls back to "do not push negatives lower" when nothing gets through."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        relu_grad = torch.where(x > 0, grad, torch.zeros_like(grad))
        stuck = relu_grad.flatten(1).norm(dim=1) == 0  # (N,) images with no gradient at all
        # loss = -activation, so a negative gradient asks to raise x; of the units asked, send the
        # whole push to the one closest to firing: raising one unit above 0 beats raising all a bit
        wanted = torch.where(grad < 0, x, torch.full_like(x, float("-inf"))).flatten(1)  # (N, M)
        closest = torch.zeros_like(wanted).scatter_(1, wanted.argmax(dim=1, keepdim=True), 1.0)
        push = grad.flatten(1).clamp_max(0).sum(dim=1, keepdim=True)  # (N, 1) total upward push
        redirected = (closest * push).view_as(grad)
        return torch.where(stuck.view(-1, *[1] * (grad.ndim - 1)), redirected, relu_grad)


@contextlib.contextmanager
def _redirected_relus(model: nn.Module) -> Iterator[None]:
    handles = []
    try:
        for module in model.modules():
            if isinstance(module, nn.ReLU):
                handles.append(module.register_forward_hook(lambda m, i, o: _RedirectedReLU.apply(i[0])))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _channel_count(model: nn.Module, stage: str) -> int:
    shape = input_shape(model)
    with eval_mode(model), torch.no_grad():
        zeros = torch.zeros(1, *shape, device=model_device(model))
        return int(_stage_output(model, stage, zeros, keep_graph=False).shape[1])


def _stage_output(model: nn.Module, stage: str, batch: torch.Tensor, keep_graph: bool) -> torch.Tensor:
    """The stage's output for a batch: (N, C, h, w) or (N, F); the logits for ``softmax``."""
    if stage == SOFTMAX:
        return model(batch)
    with StageRecorder(model, [stage], keep_graph=keep_graph) as recorder:
        model(batch)
    return recorder.outputs[stage]


def _channel_scores(output: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """Mean activation of each row's own channel: output (K, C, ...) → (K,)."""
    picked = output[torch.arange(output.shape[0]), channels]  # (K, ...) or (K,)
    return picked.flatten(1).mean(dim=1) if picked.ndim > 1 else picked


def _check_channels(model: nn.Module, stage: str, channels) -> list[int]:
    if stage != SOFTMAX:  # softmax is always there; every other name must be a real stage
        find_stage(model, stage)
    count = _channel_count(model, stage)
    chosen = list(range(count)) if channels is None else [int(c) for c in channels]
    bad = [c for c in chosen if not 0 <= c < count]
    if bad or not chosen:
        raise ConvlensError(f"channels {bad or chosen}: stage {stage!r} has channels 0..{count - 1}")
    return chosen


def _frequency_scale(height: int, width: int, decay: float = DECAY) -> torch.Tensor:
    """1 / |frequency| per rfft2 coefficient, so coarse structure is cheap and noise is expensive."""
    fy = torch.fft.fftfreq(height)[:, None]  # (H, 1)
    fx = torch.fft.rfftfreq(width)[None, :]  # (1, W//2+1)
    frequency = torch.sqrt(fx**2 + fy**2).clamp_min(1.0 / max(height, width))
    lowest = 1.0 / max(height, width)
    return (lowest / frequency) ** decay  # (H, W//2+1), 1 at the lowest frequency


def _is_affine_stage(model: nn.Module, stage: str) -> bool:
    """Whether ``stage``'s output is an affine function of the pixels: every layer before it is of
    a kind the layer-kind table declares affine (normalization, convolutions, BatchNorm in eval
    mode, average pooling, flatten, linear layers, ...)."""
    if stage == SOFTMAX:
        return False
    for name, module in model_stages(model):
        leaves = [m for m in module.modules() if not list(m.children())] or [module]
        if not all((kind := layer_kind(m)) is not None and kind.affine for m in leaves):
            return False
        if name == stage:
            return True
    return False


def _closed_form(
    model: nn.Module, stage: str, targets: torch.Tensor, shape
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact maximum over [0, 1] pixels of an affine stage's mean activation: each pixel is 1
    where its effective weight (the gradient, the same at every input) is positive, else 0."""
    device = model_device(model)
    start = torch.zeros(len(targets), *shape, device=device, requires_grad=True)
    scores = _channel_scores(_stage_output(model, stage, start, keep_graph=True), targets)
    (weights,) = torch.autograd.grad(scores.sum(), start)  # (K, C, H, W): rows are independent
    images = (weights > 0).float()
    with torch.no_grad():
        activation = _channel_scores(_stage_output(model, stage, images, keep_graph=False), targets)
    return images, activation


def feature_visualization(
    model: nn.Module,
    stage: str,
    channels: list[int] | None = None,
    steps: int = 256,
    lr: float = 0.2,
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
) -> FeatureVisualization:
    """Optimize one input image per channel of ``stage`` to maximize that channel's mean activation.

    A stage that is affine in the pixels (the first convolution after normalization) has a
    known optimum, the sign pattern of its effective weights; it is computed in closed form
    instead (``closed_form=True``). ``progress(steps done, steps, what)`` is called after every
    optimization step.
    """
    chosen = _check_channels(model, stage, channels)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConvlensError(f"steps: expected a whole number >= 1, got {steps!r}", parameter="steps")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not (math.isfinite(lr) and lr > 0):
        raise ConvlensError(f"lr: expected a finite number > 0, got {lr!r}", parameter="lr")
    c, height, width = input_shape(model)
    device = model_device(model)
    if _is_affine_stage(model, stage):
        with eval_mode(model):
            images, activation = _closed_form(
                model, stage, torch.tensor(chosen, device=device), (c, height, width)
            )
        if progress is not None:
            progress(steps, steps, f"{stage}: {len(chosen)} channels (closed form)")
        return FeatureVisualization(
            stage=stage,
            channels=chosen,
            images=images.detach().cpu(),
            activation=activation.detach().cpu(),
            steps=0,
            closed_form=True,
        )
    generator = torch.Generator().manual_seed(seed)
    scale = _frequency_scale(height, width, DECAY).to(device)  # (H, W//2+1)
    spectrum_shape = (len(chosen), c, height, width // 2 + 1)
    # drawn on the CPU generator, so a seed gives the same start on every device
    real = (torch.randn(spectrum_shape, generator=generator) * 0.01).to(device).requires_grad_()
    imag = (torch.randn(spectrum_shape, generator=generator) * 0.01).to(device).requires_grad_()
    targets = torch.tensor(chosen, device=device)

    def image() -> torch.Tensor:
        spatial = torch.fft.irfft2(torch.complex(real, imag) * scale, s=(height, width), norm="ortho")
        return torch.sigmoid(spatial * GAIN)  # (K, C, H, W) in (0, 1)

    optimizer = torch.optim.Adam([real, imag], lr=lr)
    jitter = max(1, height // 14) / height  # a pixel of shift per 14: a few pixels on 28x28
    with eval_mode(model):
        with _redirected_relus(model):
            for step in range(steps):
                # robustness first; the last quarter settles the image exactly where it is measured
                strength = 1.0 if step < steps * 3 // 4 else 0.0
                moved = random_affine(
                    image(),
                    generator,
                    degrees=5.0 * strength,
                    scale=0.05 * strength,
                    translate=jitter * strength,
                )
                scores = _channel_scores(_stage_output(model, stage, moved, keep_graph=True), targets)
                gradients = torch.autograd.grad(-scores.sum(), [real, imag])
                optimizer.zero_grad()
                real.grad, imag.grad = gradients
                optimizer.step()
                if progress is not None:
                    progress(step + 1, steps, f"{stage}: {len(chosen)} channels")
        with torch.no_grad():
            final = image()
            activation = _channel_scores(_stage_output(model, stage, final, keep_graph=False), targets)
    return FeatureVisualization(
        stage=stage,
        channels=chosen,
        images=final.detach().cpu(),
        activation=activation.detach().cpu(),
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
    chosen = _check_channels(model, stage, channels)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(input_shape(model)):
        raise ConvlensError(
            f"images: expected N x {'x'.join(map(str, input_shape(model)))}, got {tuple(images.shape)}"
        )
    k = max(1, min(k, images.shape[0]))
    device = model_device(model)
    index = torch.tensor(chosen, device=device)
    scores, peaks = [], []
    with eval_mode(model), torch.no_grad():
        for first in range(0, images.shape[0], batch_size):
            batch = to_float(images[first : first + batch_size]).to(device)  # (B, C, H, W)
            output = _stage_output(model, stage, batch, keep_graph=False)[:, index]  # (B, K, ...)
            scores.append(output.flatten(2).mean(dim=2) if output.ndim > 2 else output)
            peaks.append(output.flatten(2).amax(dim=2) if output.ndim > 2 else output)
    per_image = torch.cat(scores).T.cpu()  # (K, N)
    values, indices = per_image.topk(k, dim=1)
    logits = stage in (SOFTMAX, model_stages(model)[-1][0])
    dead = [False] * len(chosen) if logits else (torch.cat(peaks).amax(dim=0) <= 0).cpu().tolist()
    return TopImages(
        stage=stage, channels=chosen, indices=indices, scores=values, dead=dead, image_count=images.shape[0]
    )
