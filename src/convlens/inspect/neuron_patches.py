"""Which real images a channel responds to, and where: the dataset patches of Zeiler & Fergus.

One pass over the test images records, for every channel of a stage, each image's largest value
and the cell where it sits (``stage_peaks``; the explorer keeps it per run and stage, so a second
click on another channel of the stage costs nothing). A channel's top patches are the images whose
largest value is highest, each cropped to the receptive field of its strongest cell
(``convlens.inspect.receptive_field``): the part of the image the channel actually saw. Ranking
by the largest value rather than the mean (``top_activating_images``) asks "where does this
detector fire hardest", which is what a patch can show.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convlens.data.bundle import to_float
from convlens.errors import ConvlensError
from convlens.inspect._stages import eval_mode, input_shape, model_device
from convlens.inspect.hooks import StageRecorder
from convlens.inspect.receptive_field import ReceptiveField

SCAN_BATCH = 256  # images per forward pass of the scan


@dataclass
class StagePeaks:
    """Each image's largest value of each channel of one stage, and the cell where it is."""

    stage: str
    values: torch.Tensor  # (N, C) the largest value of channel c on image n
    rows: torch.Tensor  # (N, C) its row in the stage's map (the first, scanning row by row)
    cols: torch.Tensor  # (N, C) its column

    @property
    def image_count(self) -> int:
        return int(self.values.shape[0])


@dataclass
class Patch:
    """One test image's strongest cell of a channel, and the pixels that cell sees."""

    index: int  # which test image
    value: float  # the channel's largest value on that image
    row: int  # where in the stage's map
    col: int
    region: tuple[int, int, int, int]  # input rows top..bottom, cols left..right (inclusive)
    pixels: torch.Tensor  # (C, bottom - top + 1, right - left + 1) the image cropped to ``region``


def stage_peaks(
    model: nn.Module, images: torch.Tensor, stage: str, batch_size: int = SCAN_BATCH
) -> StagePeaks:
    """Scan ``images`` (N, C, H, W) once: every channel's largest value of ``stage`` per image."""
    shape = input_shape(model)
    if (
        not isinstance(images, torch.Tensor)
        or images.ndim != 4
        or (shape is not None and tuple(images.shape[1:]) != tuple(shape))
    ):
        expected = "x".join(map(str, shape)) if shape is not None else "C x H x W"
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConvlensError(f"test_images: expected N x {expected}, got {got}", parameter="test_images")
    if images.shape[0] == 0:
        raise ConvlensError("test_images: expected at least one image, got none", parameter="test_images")
    device = model_device(model)
    values, positions = [], []
    width = None
    with eval_mode(model), torch.no_grad():
        for first in range(0, images.shape[0], batch_size):
            batch = to_float(images[first : first + batch_size]).to(device)  # (B, C, H, W)
            with StageRecorder(model, [stage]) as recorder:
                model(batch)
            output = recorder.outputs[stage]  # (B, K, h, w)
            width = output.shape[-1]
            peak, where = output.flatten(2).max(dim=2)  # (B, K) each
            values.append(peak.cpu())
            positions.append(where.cpu())
    where = torch.cat(positions)
    return StagePeaks(stage, torch.cat(values), where // width, where % width)


def extreme_patches(
    images: torch.Tensor,
    peaks: StagePeaks,
    field: ReceptiveField | None,
    channel: int,
    k: int,
    largest: bool = True,
) -> list[Patch]:
    """The ``k`` images whose largest value of ``channel`` is highest (``largest``) or lowest, each
    cropped to its strongest cell's receptive field (the whole image without a ``field``)."""
    scores = peaks.values[:, channel]  # (N,)
    k = max(0, min(k, scores.shape[0]))
    chosen = scores.topk(k, largest=largest).indices.tolist()
    height, width = images.shape[-2:]
    patches = []
    for index in chosen:
        row, col = int(peaks.rows[index, channel]), int(peaks.cols[index, channel])
        whole = (0, height - 1, 0, width - 1)
        region = whole if field is None else field.region(row, col, (height, width))
        top, bottom, left, right = region
        pixels = to_float(images[index])[:, top : bottom + 1, left : right + 1].clone()
        patches.append(Patch(index, float(scores[index]), row, col, region, pixels))
    return patches
