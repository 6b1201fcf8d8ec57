"""RISE (Petsiuk et al. 2018): which random glimpses of the image keep the class probable.

Each mask keeps a random half of the cells of a coarse grid, smoothed by bilinear upsampling
and shifted by a random fraction of a cell; the map is the mean of the masks weighed by the
probability the model gives the class through each. It needs no gradient and no stage, so it
explains any model, and it asks the model only about images it was shown parts of.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from convlens.inspect._stages import eval_mode
from convlens.inspect.attribution_base import (
    Attribution,
    check_count,
    check_number,
    chunk_size,
    prepare,
    sampling_count,
)

RISE_MASKS = 1000  # masks per image up to 64x64 pixels; all of a 28x28 image's go in one batch
RISE_MASKS_LEAST = 250  # masks on large images (128x128 and up): 1,000 cost 23 CPU-s on a 224x224 ResNet-18
RISE_CELLS = 8  # the grid is cells x cells before upsampling (the paper's 7 for 224 pixels)
RISE_KEEP = 0.5  # the probability that a grid cell is kept


def rise_grids(count: int, cells: int, keep: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of ``count`` masks, drawn on the CPU from ``seed``: binary grids
    (count, 1, cells + 1, cells + 1) and each mask's shift in [0, 1) of a cell, (count, 2)."""
    generator = torch.Generator().manual_seed(seed)
    grids = (torch.rand((count, 1, cells + 1, cells + 1), generator=generator) < keep).float()
    shifts = torch.rand((count, 2), generator=generator)  # (row, col) fractions of a cell
    return grids, shifts


def upsampled_masks(grids: torch.Tensor, shifts: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Grids (n, 1, g, g) upsampled bilinearly to g cells of ceil(size / (g - 1)) pixels and cut
    to (n, height, width) at each mask's shift: smooth masks in [0, 1] whose cell edges fall anywhere."""
    count, cells = grids.shape[0], grids.shape[-1] - 1
    cell_height, cell_width = math.ceil(height / cells), math.ceil(width / cells)
    smooth = nn.functional.interpolate(
        grids,
        size=((cells + 1) * cell_height, (cells + 1) * cell_width),
        mode="bilinear",
        align_corners=False,
    )[:, 0]  # (n, (cells + 1) * cell_height, (cells + 1) * cell_width)
    top = (shifts[:, 0] * cell_height).long()  # (n,)
    left = (shifts[:, 1] * cell_width).long()
    rows = top[:, None] + torch.arange(height)  # (n, height)
    cols = left[:, None] + torch.arange(width)  # (n, width)
    return smooth[torch.arange(count)[:, None, None], rows[:, :, None], cols[:, None, :]]  # (n, H, W)


def default_masks(height: int, width: int) -> int:
    """RISE's default mask count for a height x width image (``sampling_count``): 1,000 up to 64x64
    pixels, 250 from 128x128 up. The grid stays 8 x 8 cells, so fewer masks make a noisier map, not a
    coarser one; the run's faithfulness verdict is measured on the same masks."""
    return sampling_count(RISE_MASKS, RISE_MASKS_LEAST, height, width)


def rise_masks(
    count: int, height: int, width: int, cells: int = RISE_CELLS, keep: float = RISE_KEEP, seed: int = 0
) -> torch.Tensor:
    """The ``count`` masks (count, height, width) ``rise`` uses for these settings and ``seed``."""
    return upsampled_masks(*rise_grids(count, cells, keep, seed), height, width)


def rise(
    model: nn.Module,
    image: torch.Tensor,
    target: int | None = None,
    masks: int | None = None,
    cells: int = RISE_CELLS,
    keep: float = RISE_KEEP,
    seed: int = 0,
) -> Attribution:
    """sum_i P(target | image x mask_i) mask_i / (masks x keep), over random masks of a
    ``cells`` x ``cells`` grid whose cells are kept with probability ``keep`` (drawn from ``seed``).
    ``masks`` None: ``default_masks`` for the image's size (1,000 up to 64x64 pixels).

    ``raw`` (H, W) is that sum: the expected probability of the class when each pixel is
    shown. The map stretches it from its lowest to its highest value, because every pixel is
    kept in about ``keep`` of the masks and the raw values all sit near the mean probability.
    """
    if masks is not None:
        check_count("masks", masks)
    check_number("keep", keep, 0.0, 1.0, low_open=True)
    with eval_mode(model):
        batch, target, probability = prepare(model, image, target)
        height, width = batch.shape[-2:]
        masks = default_masks(height, width) if masks is None else masks
        check_count("cells", cells, 1, min(height, width))
        grids, shifts = rise_grids(masks, cells, keep, seed)
        saliency = torch.zeros(height * width, dtype=torch.float64, device=batch.device)
        step = chunk_size(batch[0].numel())
        with torch.no_grad():
            for start in range(0, masks, step):
                chosen = upsampled_masks(
                    grids[start : start + step], shifts[start : start + step], height, width
                )
                chosen = chosen.to(batch.device)  # (n, H, W)
                shown = batch.detach() * chosen[:, None]  # (n, C, H, W)
                probabilities = torch.softmax(model(shown).float(), dim=1)[:, target]  # (n,)
                saliency += probabilities.double() @ chosen.reshape(len(chosen), -1).double()
    raw = (saliency / (masks * keep)).float().view(height, width).cpu()
    low, spread = raw.min(), raw.max() - raw.min()
    shown_map = (raw - low) / spread if spread > 0 else torch.zeros_like(raw)
    return Attribution(
        method="rise", target=target, stage=None, map=shown_map, raw=raw, probability=probability
    )
