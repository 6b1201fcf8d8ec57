"""Colours of segmentation masks: one palette per class count, overlays, palette PNGs.

Class 0 is the background by convention (``convlens.data``'s segmentation sets put it
first), so it gets no colour of its own: black in the palette, and left as the photo in an
overlay, where only the objects are tinted. The other classes take the project's series
colours (``plots.colours.SERIES``, the lab's charts and training curves) in order, then evenly
spread hues, so the same class has the same colour in every picture, the CLI's and the
report's alike. A mask is written as a palette PNG whose indices are the class ids: image
viewers show it in these colours and a program reads the class ids back unchanged.
"""

from __future__ import annotations

import colorsys
import io

import numpy as np
import torch

from convlens.errors import ConvlensError, shown
from convlens.views.plots.colours import SERIES

BACKGROUND = (0, 0, 0)  # class 0: no colour of its own
GOLDEN = 0.618033988749895  # hue step beyond SERIES: each new hue lands in the widest gap
MAX_CLASSES = 255  # a palette PNG holds 256 entries; 255 stays free for "no class" (IGNORE_INDEX)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def class_palette(k: int) -> np.ndarray:
    """(k, 3) uint8 colours: class 0 black (background), then ``SERIES``, then spread hues."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_CLASSES:
        raise ConvlensError(f"k must be a class count 1..{MAX_CLASSES}, got {shown(k)}", parameter="k")
    colours = [BACKGROUND]
    for index in range(1, k):
        if index - 1 < len(SERIES):
            colours.append(_rgb(SERIES[index - 1]))
        else:
            hue = ((index - 1 - len(SERIES)) * GOLDEN + 0.05) % 1.0
            red, green, blue = colorsys.hsv_to_rgb(hue, 0.75, 0.9)
            colours.append((round(red * 255), round(green * 255), round(blue * 255)))
    return np.asarray(colours, dtype=np.uint8)


def _check_mask(mask, size: tuple[int, int] | None = None) -> np.ndarray:
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else mask
    if not isinstance(array, np.ndarray) or array.ndim != 2 or array.dtype.kind not in "iu":
        raise ConvlensError(f"mask must be an H x W array of class ids, got {shown(mask)}", parameter="mask")
    if size is not None and tuple(array.shape) != size:
        raise ConvlensError(
            f"mask must be {size[0]}x{size[1]} (the image's H x W), got {tuple(array.shape)}",
            parameter="mask",
        )
    if array.size and (int(array.min()) < 0 or int(array.max()) > MAX_CLASSES):
        raise ConvlensError(f"mask: class ids must be 0..{MAX_CLASSES}", parameter="mask")
    return array.astype(np.int64)


def rgb_pixels(pixels: torch.Tensor) -> np.ndarray:
    """(C, H, W) float pixels in [0, 1] (grey or RGB) as (H, W, 3) uint8."""
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 3 or pixels.shape[0] not in (1, 3):
        raise ConvlensError(
            f"pixels must be a 1- or 3-channel image C x H x W, got {shown(pixels)}", parameter="pixels"
        )
    image = pixels.detach().cpu().float().clamp(0, 1)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def overlay(pixels: torch.Tensor, mask, alpha: float = 0.5, k: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8: the image with every non-background pixel tinted its class's colour.

    ``alpha``: how much of the colour (0: the photo, 1: the flat colour). Background (0) and
    ids beyond the palette (255, "no class") stay as they are. ``k``: classes in the palette
    (default: enough for the mask's largest id).
    """
    image = rgb_pixels(pixels)
    ids = _check_mask(mask, tuple(image.shape[:2]))
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
        raise ConvlensError(f"alpha must be a number in [0, 1], got {shown(alpha)}", parameter="alpha")
    k = k if k is not None else max(int(ids.max()) + 1 if ids.size else 1, 1)
    palette = class_palette(min(k, MAX_CLASSES)).astype(np.float64)
    tinted = (ids > 0) & (ids < len(palette))
    result = image.astype(np.float64)
    colours = palette[np.where(tinted, ids, 0)]
    result[tinted] = (1 - alpha) * result[tinted] + alpha * colours[tinted]
    return np.clip(result + 0.5, 0, 255).astype(np.uint8)


def mask_png(mask, k: int) -> bytes:
    """A palette PNG of ``mask`` (H, W) whose pixel values are the class ids, shown in ``class_palette(k)``."""
    from PIL import Image

    ids = _check_mask(mask)
    picture = Image.frombytes("P", (ids.shape[1], ids.shape[0]), ids.astype(np.uint8).tobytes())
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: min(k, MAX_CLASSES)] = class_palette(min(k, MAX_CLASSES))
    palette[255] = (255, 255, 255)  # "no class"
    picture.putpalette(palette.reshape(-1).tolist())
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def rgb_png(array: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 array as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
