"""Portrait mode: keep what the model calls foreground exactly, soften or mute everything else.

The point is to show a segmentation mask doing a job people know from phone cameras: every
foreground pixel is left bit-for-bit as it was (a mask error shows up as a sharp background
patch or a blurred bit of the subject, not as a subtle tint), and the background is either
blurred with a Gaussian or turned grey and darker.

The blur is written out here (separable, edges mirrored as ``scipy.ndimage.gaussian_filter``'s
default ``reflect`` mode, kernel cut at 4 standard deviations) rather than called from SciPy,
so the test can check it against SciPy as an independent computation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from convlens.errors import ConvlensError, shown

EFFECTS = ("blur", "grey")
TRUNCATE = 4.0  # the kernel reaches this many standard deviations (SciPy's default)
MAX_RADIUS = 200.0  # pixels; beyond this the background is one flat colour anyway
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as convlens converts RGB to grey everywhere
DARKEN = 0.5  # "grey": the background's brightness is halved so the subject stands out


def _check(pixels, foreground, effect, radius) -> tuple[torch.Tensor, torch.Tensor, float]:
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 3 or not pixels.is_floating_point():
        raise ConvlensError(
            f"pixels must be one float image C x H x W in [0, 1], got {shown(pixels)}", parameter="pixels"
        )
    size = tuple(pixels.shape[1:])
    if (
        not isinstance(foreground, torch.Tensor)
        or foreground.dtype != torch.bool
        or tuple(foreground.shape) != size
    ):
        raise ConvlensError(
            f"foreground must be a bool mask of {size[0]}x{size[1]} (the image's H x W), got {shown(foreground)}",
            parameter="foreground",
        )
    if effect not in EFFECTS:
        raise ConvlensError(
            f"effect must be one of {', '.join(EFFECTS)}, got {shown(effect)}", parameter="effect"
        )
    if isinstance(radius, bool) or not isinstance(radius, int | float) or not 0 < radius <= MAX_RADIUS:
        raise ConvlensError(
            f"radius must be a number of pixels above 0 and at most {MAX_RADIUS:g}, got {shown(radius)}",
            parameter="radius",
        )
    return pixels, foreground, float(radius)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """The 1-D Gaussian (float64, sums to 1), cut at ``TRUNCATE`` standard deviations."""
    half = int(TRUNCATE * sigma + 0.5)
    x = torch.arange(-half, half + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (x / sigma) ** 2)
    return weights / weights.sum()


def _mirrored(length: int, half: int) -> torch.Tensor:
    """Indices of a row padded by ``half`` on each side, mirrored with the edge pixel repeated
    (d c b a | a b c d | d c b a), any pad width: SciPy's ``reflect``."""
    index = torch.arange(-half, length + half) % (2 * length)
    return torch.where(index >= length, 2 * length - 1 - index, index)


def gaussian_blur(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    """Every channel of ``pixels`` (C, H, W) blurred with a Gaussian of ``sigma`` pixels (float64 inside)."""
    kernel = gaussian_kernel(sigma)
    half = (kernel.numel() - 1) // 2
    image = pixels.detach().double().cpu()
    channels, height, width = image.shape
    rows = image[:, _mirrored(height, half), :]  # (C, H + 2 half, W)
    columns = F.conv1d(rows.permute(0, 2, 1).reshape(-1, 1, height + 2 * half), kernel.view(1, 1, -1))
    image = columns.reshape(channels, width, height).permute(0, 2, 1)
    padded = image[:, :, _mirrored(width, half)]  # (C, H, W + 2 half)
    blurred = F.conv1d(padded.reshape(-1, 1, width + 2 * half), kernel.view(1, 1, -1))
    return blurred.reshape(channels, height, width)


def muted(pixels: torch.Tensor) -> torch.Tensor:
    """The image grey (luma of RGB; a grey image stays grey) and ``DARKEN`` times as bright."""
    image = pixels.detach().double().cpu()
    if image.shape[0] == 3:
        grey = sum(weight * channel for weight, channel in zip(LUMA, image, strict=True))
        image = grey.unsqueeze(0).expand(3, -1, -1)
    return image * DARKEN


def portrait_effect(
    pixels: torch.Tensor, foreground: torch.Tensor, effect: str = "blur", radius: float = 6
) -> torch.Tensor:
    """``pixels`` (C, H, W) in [0, 1] with the background (``foreground`` False) changed.

    ``effect``: ``blur`` — a Gaussian whose standard deviation is ``radius`` pixels; ``grey`` —
    desaturated and darkened (``radius`` unused). Foreground pixels are returned unchanged,
    bit for bit. The blur mixes in the foreground's colours near its edge, as a lens would.
    """
    pixels, foreground, radius = _check(pixels, foreground, effect, radius)
    changed = gaussian_blur(pixels, radius) if effect == "blur" else muted(pixels)
    changed = changed.to(pixels.dtype).to(pixels.device)
    return torch.where(foreground.to(pixels.device).unsqueeze(0), pixels, changed)


def scaled_radius(radius: float, model_size: tuple[int, int], size: tuple[int, int]) -> float:
    """``radius`` given at the model's input size, for the same look on an image of ``size``
    (at most ``MAX_RADIUS``)."""
    factor = math.sqrt((size[0] / model_size[0]) * (size[1] / model_size[1]))
    return min(radius * factor, MAX_RADIUS)


def run_portrait(run, source, effect: str = "blur", radius: float = 6, foreground: int | None = None):
    """``portrait_effect`` of an image read by ``run.input``, with the run's own mask: every pixel
    the model does not call background (class 0) is foreground, or only class ``foreground``.
    Returns the (C, H, W) picture at the model's input size. Lives here, not on ``Run``: the run
    layer sits below the explanations and never imports them."""
    run.require_task("segmentation", "portrait mode needs a mask per pixel")
    maps = run.segment(source)
    keep = maps.mask != 0 if foreground is None else maps.mask == run.class_index(foreground, "foreground")
    return portrait_effect(run.input(source).pixels, keep, effect, radius)
