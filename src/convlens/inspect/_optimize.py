"""What every "optimize an input" view shares: reading a stage, checking channels, the affine test,
the redirected ReLU, and the bounded image parameterizations (pixels and decorrelated Fourier).

Used by channel visualization (``featureviz``), its regularised form (``featureviz_regularised``)
and the single-unit optimum (``unit_optimum``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

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
def redirected_relus(model: nn.Module, active: bool = True) -> Iterator[None]:
    """Within the block, every ``nn.ReLU`` of ``model`` passes the redirected gradient (if ``active``).

    A unit that no starting image turns on gets no gradient through its ReLUs; as in Lucid, the
    redirected gradient pushes the unit closest to firing until something gets through.
    """
    handles = []
    try:
        if active:
            for module in model.modules():
                if isinstance(module, nn.ReLU):
                    handles.append(module.register_forward_hook(lambda m, i, o: _RedirectedReLU.apply(i[0])))
        yield
    finally:
        for handle in handles:
            handle.remove()


def stage_output(model: nn.Module, stage: str, batch: torch.Tensor, keep_graph: bool) -> torch.Tensor:
    """The stage's output for a batch: (N, C, h, w) or (N, F); the logits for ``softmax``."""
    if stage == SOFTMAX:
        return model(batch)
    with StageRecorder(model, [stage], keep_graph=keep_graph) as recorder:
        model(batch)
    return recorder.outputs[stage]


def stage_shape(model: nn.Module, stage: str) -> tuple[int, ...]:
    """One image's output shape at ``stage``: (C, h, w) or (F,)."""
    with eval_mode(model), torch.no_grad():
        zeros = torch.zeros(1, *input_shape(model), device=model_device(model))
        return tuple(int(s) for s in stage_output(model, stage, zeros, keep_graph=False).shape[1:])


def check_channels(model: nn.Module, stage: str, channels, shape: tuple[int, ...] | None = None) -> list[int]:
    """``channels`` (None: all) as a list, each checked against the stage's channel count
    (``shape``: the stage's output shape, if the caller has it already)."""
    if stage != SOFTMAX:  # softmax is always there; every other name must be a real stage
        find_stage(model, stage)
    count = (shape or stage_shape(model, stage))[0]
    chosen = list(range(count)) if channels is None else [int(c) for c in channels]
    bad = [c for c in chosen if not 0 <= c < count]
    if bad or not chosen:
        raise ConvlensError(
            f"channels {bad or chosen}: stage {stage!r} has channels 0..{count - 1}", parameter="channels"
        )
    return chosen


def check_steps(steps, lr) -> None:
    """``steps`` a whole number >= 1 and ``lr`` a finite number > 0, or a ConvlensError naming it."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConvlensError(f"steps: expected a whole number >= 1, got {steps!r}", parameter="steps")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not (math.isfinite(lr) and lr > 0):
        raise ConvlensError(f"lr: expected a finite number > 0, got {lr!r}", parameter="lr")


def is_affine_stage(model: nn.Module, stage: str) -> bool:
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


def affine_twin(model: nn.Module, stage: str) -> str | None:
    """The last affine stage before ``stage`` with its output shape (``conv1`` for ``relu1``): its
    closed-form optimum is a strong start, the exact optimum when ``stage`` is its ReLU."""
    twin, shape = None, stage_shape(model, stage)
    for name, _ in model_stages(model):
        if name == stage:
            return twin
        if is_affine_stage(model, name) and stage_shape(model, name) == shape:
            twin = name
    return None


def sign_optimum(
    score: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], device
) -> torch.Tensor:
    """The exact maximum over [0, 1] pixels of ``score`` (rows,), affine in the pixels of a batch
    of ``shape``: 1 where a pixel's weight (the gradient, the same at every input) is positive."""
    start = torch.zeros(shape, device=device, requires_grad=True)
    (weights,) = torch.autograd.grad(score(start).sum(), start)  # rows are independent
    return (weights > 0).float()


def frequency_scale(height: int, width: int, decay: float = DECAY) -> torch.Tensor:
    """1 / |frequency| per rfft2 coefficient, so coarse structure is cheap and noise is expensive."""
    fy = torch.fft.fftfreq(height)[:, None]  # (H, 1)
    fx = torch.fft.rfftfreq(width)[None, :]  # (1, W//2+1)
    lowest = 1.0 / max(height, width)
    frequency = torch.sqrt(fx**2 + fy**2).clamp_min(lowest)
    return (lowest / frequency) ** decay  # (H, W//2+1), 1 at the lowest frequency


def logit(pixels: torch.Tensor) -> torch.Tensor:
    """The sigmoid parameter that gives ``pixels`` (clamped off 0 and 1 so it stays finite)."""
    p = pixels.clamp(0.02, 0.98)
    return torch.log(p / (1 - p)) / GAIN


def ascend(
    model: nn.Module,
    score: Callable[[torch.Tensor], torch.Tensor],
    image: Callable[[], torch.Tensor],
    parameters: list[torch.Tensor],
    steps: int,
    lr: float,
    moved: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam on ``parameters`` to raise ``score(image())`` (N,) row by row: the best image each row
    reached and its score, as the model computes it (no redirected gradient, no transform).

    The first half of the steps passes the redirected ReLU gradient, so a unit that starts off
    can turn on; the second half uses the model's own gradient, so it climbs what is measured.
    ``moved(images, step)`` may transform the images before scoring (transformation robustness);
    the best image is then only tracked on steps where it returns the images unchanged.
    """
    optimizer = torch.optim.Adam(parameters, lr=lr)
    best_images, best_scores = None, None
    with eval_mode(model):
        for step in range(steps + 1):
            images = image()
            shown = images if moved is None or step == steps else moved(images, step)
            with redirected_relus(model, active=step < steps // 2):
                scores = score(shown)  # (N,); the redirected ReLU's forward is the ReLU's
            if shown is images:
                best_images, best_scores = _keep_best(best_images, best_scores, images, scores)
            if step == steps:
                break
            gradients = torch.autograd.grad(-scores.sum(), parameters)
            optimizer.zero_grad()
            for parameter, gradient in zip(parameters, gradients, strict=True):
                parameter.grad = gradient
            optimizer.step()
            if progress is not None:
                progress(step + 1)
    return best_images, best_scores


def _keep_best(best_images, best_scores, images: torch.Tensor, scores: torch.Tensor):
    images, scores = images.detach(), scores.detach()
    if best_images is None:
        return images.clone(), scores.clone()
    better = scores > best_scores  # (N,)
    best_images[better] = images[better]
    best_scores[better] = scores[better]
    return best_images, best_scores
