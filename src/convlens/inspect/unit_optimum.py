"""What one unit responds to: the input that drives the centre cell of a channel's map hardest,
cropped to the cell's receptive field (the "neuron" view of Distill's Feature Visualization).

A channel's mean over the whole map is a blur of every position; one unit sees only its window,
and its optimum inside that window is the pattern it detects. For a stage that is affine in
the pixels (``conv1`` after the normalization) that optimum is exact: 1 where the unit's
effective weight is positive, 0 where it is negative — the sign pattern of the kernel. For a
deeper stage it is found by gradient ascent on the window's pixels (sigmoid-bounded to [0, 1]),
from several starts: seeded random ones, the closed-form optimum of the last affine stage of the
same shape (exact for a ReLU right after a convolution), and, when images are given, the image
that drives the unit hardest. The best result is kept, so it never ends below the best image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convlens.data.bundle import to_float
from convlens.errors import ConvlensError
from convlens.inspect._optimize import (
    GAIN,
    affine_twin,
    ascend,
    check_channels,
    check_steps,
    is_affine_stage,
    logit,
    sign_optimum,
    stage_output,
    stage_shape,
)
from convlens.inspect._stages import SOFTMAX, eval_mode, find_stage, input_shape, model_device


@dataclass
class UnitOptimum:
    """The input that drives one unit hardest, and the receptive-field window it lives in."""

    stage: str
    channel: int
    cell: tuple[int, int] | None  # (row, col) of the unit in the channel's map; None on a flat stage
    image: torch.Tensor  # (C, H, W) in [0, 1]; 0 outside ``window``, where no pixel reaches the unit
    window: tuple[int, int, int, int]  # (top, left, bottom, right) input pixels, end-exclusive
    crop: torch.Tensor  # (C, h, w): ``image`` inside ``window``
    activation: float  # the unit's value on ``image``, as the model computes it
    closed_form: bool  # affine stage: ``image`` is the exact optimum over [0, 1] pixels
    steps: int  # gradient steps taken (0 for the closed form)
    best_image_activation: float | None = None  # the unit's value on the image that drives it hardest
    best_image_index: int | None = None  # that image's index in the images searched
    dead: bool | None = None  # no searched image turns the unit above 0 (None: no images searched)


def _centre_cell(model: nn.Module, stage: str, channel: int) -> tuple[int, int] | None:
    """The centre cell of ``channel``'s map (None on a flat stage), the channel checked."""
    if stage != SOFTMAX:
        find_stage(model, stage)  # an unknown name lists the valid ones
    shape = stage_shape(model, stage)
    check_channels(model, stage, [channel], shape)
    return (shape[1] // 2, shape[2] // 2) if len(shape) == 3 else None


def _window(model: nn.Module, stage: str, channel: int, cell) -> tuple[int, int, int, int]:
    """The unit's receptive field as (top, left, bottom, right), end-exclusive."""
    _, height, width = input_shape(model)
    if stage == SOFTMAX or getattr(model, "traced", True) is False:  # no graph: every pixel may matter
        return 0, 0, height, width
    from convlens.inspect.receptive_field import receptive_field

    row, col = cell if cell is not None else (0, 0)
    top, bottom, left, right = receptive_field(model, stage).cell_region(channel, row, col, (height, width))
    return top, left, bottom + 1, right + 1


def _unit_scores(model: nn.Module, stage: str, channel: int, cell, images: torch.Tensor, keep_graph: bool):
    output = stage_output(model, stage, images, keep_graph=keep_graph)[:, channel]  # (N, h, w) or (N,)
    return output[:, cell[0], cell[1]] if cell is not None else output


def _affine_optimum(model: nn.Module, stage: str, channel: int, cell) -> torch.Tensor:
    """(C, H, W): the exact optimum of an affine stage's unit (the sign pattern of its weights)."""

    def score(batch: torch.Tensor) -> torch.Tensor:
        return _unit_scores(model, stage, channel, cell, batch, keep_graph=True)

    return sign_optimum(score, (1, *input_shape(model)), model_device(model))[0]


def _best_image(model, stage, channel, cell, images: torch.Tensor, batch_size: int = 500):
    device = model_device(model)
    scores = []
    with eval_mode(model), torch.no_grad():
        for first in range(0, images.shape[0], batch_size):
            batch = to_float(images[first : first + batch_size]).to(device)
            scores.append(_unit_scores(model, stage, channel, cell, batch, keep_graph=False))
    scores = torch.cat(scores)  # (N,)
    index = int(scores.argmax())
    return index, float(scores[index]), to_float(images[index]).to(device)


def unit_optimum(
    model: nn.Module,
    stage: str,
    channel: int,
    images: torch.Tensor | None = None,
    steps: int = 200,
    restarts: int = 4,
    lr: float = 0.1,
    seed: int = 0,
) -> UnitOptimum:
    """The input that maximizes the centre unit of ``channel``'s map at ``stage``, cropped to its
    receptive field. ``images`` (N, C, H, W), if given, are searched for the one that drives the
    unit hardest: reported beside the optimum, and used as one of the starts."""
    if isinstance(channel, bool) or not isinstance(channel, int):
        raise ConvlensError(f"channel: expected a whole number, got {channel!r}", parameter="channel")
    check_steps(steps, lr)
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ConvlensError(f"restarts: expected a whole number >= 1, got {restarts!r}", parameter="restarts")
    shape_in = tuple(input_shape(model))
    if images is not None and (images.ndim != 4 or tuple(images.shape[1:]) != shape_in):
        raise ConvlensError(
            f"images: expected N x {'x'.join(map(str, shape_in))}, got {tuple(images.shape)}",
            parameter="images",
        )
    cell = _centre_cell(model, stage, channel)
    top, left, bottom, right = window = _window(model, stage, channel, cell)
    best = _best_image(model, stage, channel, cell, images) if images is not None else None
    with eval_mode(model):
        if is_affine_stage(model, stage):
            image, taken, closed = _affine_optimum(model, stage, channel, cell), 0, True
        else:
            starts = [] if best is None else [best[2]]
            twin = affine_twin(model, stage)
            if twin is not None:
                starts.append(_affine_optimum(model, twin, channel, cell))
            image, taken, closed = _ascend_unit(
                model, stage, channel, cell, window, starts, steps, restarts, lr, seed
            )
        image = image.detach()
        image[:, :top], image[:, bottom:], image[:, :, :left], image[:, :, right:] = 0, 0, 0, 0
        with torch.no_grad():
            activation = float(_unit_scores(model, stage, channel, cell, image[None], keep_graph=False)[0])
    return UnitOptimum(
        stage=stage,
        channel=channel,
        cell=cell,
        image=image.cpu(),
        window=window,
        crop=image[:, top:bottom, left:right].cpu(),
        activation=activation,
        closed_form=closed,
        steps=taken,
        best_image_activation=None if best is None else best[1],
        best_image_index=None if best is None else best[0],
        dead=None if best is None else best[1] <= 0,
    )


def _ascend_unit(model, stage, channel, cell, window, starts, steps, restarts, lr, seed):
    """Gradient ascent on the window's pixels from ``restarts`` random starts and ``starts``; the
    best image found (starts included, exactly as given), the steps taken, and False (not closed)."""
    top, left, bottom, right = window
    device = model_device(model)
    channels = input_shape(model)[0]
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same starts on every device
    random = torch.randn(restarts, channels, bottom - top, right - left, generator=generator) * 0.5
    given = [start[:, top:bottom, left:right].to(device) for start in starts]
    crops = torch.cat([random.to(device), *(logit(crop)[None] for crop in given)])
    crops.requires_grad_()
    background = torch.zeros(crops.shape[0], *input_shape(model), device=device)

    def image() -> torch.Tensor:
        pixels = torch.sigmoid(crops * GAIN)  # (R, C, h, w) in (0, 1)
        return torch.cat(
            [
                background[:, :, :top],
                _pad(background, pixels, top, bottom, left, right),
                background[:, :, bottom:],
            ],
            dim=2,
        )

    def score(batch: torch.Tensor) -> torch.Tensor:
        return _unit_scores(model, stage, channel, cell, batch, keep_graph=True)

    found, found_scores = ascend(model, score, image, [crops], steps, lr)
    candidates = torch.cat([found, *(start[None].to(device) for start in starts)])
    with torch.no_grad():
        values = torch.cat(
            [found_scores, _unit_scores(model, stage, channel, cell, candidates[len(found) :], False)]
        )
    return candidates[int(values.argmax())].clone(), steps, False


def _pad(background: torch.Tensor, pixels: torch.Tensor, top, bottom, left, right) -> torch.Tensor:
    """The window's rows: background left and right of ``pixels``, kept differentiable."""
    rows = background[:, :, top:bottom]
    return torch.cat([rows[..., :left], pixels, rows[..., right:]], dim=3)
