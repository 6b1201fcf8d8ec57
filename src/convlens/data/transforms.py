"""Tensor transforms on whole batches: resizing, splitting and the training augmentation."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F

from convlens.errors import ConvlensError

MAX_SIDE = 4096  # pixels per side that image_size accepts
MAX_DATA_BYTES = 4 * 2**30  # the most memory a resized data set may take (all splits together)


def parse_image_size(value: int | str | tuple[int, int] | None) -> tuple[int, int] | None:
    """Accept 28, "28", "32x48" or (32, 48); return (height, width) or None."""
    if value is None or value == "":
        return None
    if isinstance(value, tuple) and len(value) == 2 and all(_is_int(v) for v in value):
        height, width = value
    elif _is_int(value):
        height = width = value
    else:
        text = str(value).lower().strip()
        try:
            parts = [int(p) for p in text.split("x")]
        except ValueError:
            parts = []
        if len(parts) == 1:
            height = width = parts[0]
        elif len(parts) == 2:
            height, width = parts
        else:
            raise ConvlensError(
                f"image_size: expected N or HxW (e.g. 28 or 32x48), got {value!r}", parameter="image_size"
            )
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise ConvlensError(
            f"image_size: expected sides between 1 and {MAX_SIDE} pixels, got {height}x{width}",
            parameter="image_size",
        )
    return int(height), int(width)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_data_size(images: int, channels: int, size: tuple[int, int], bytes_per_value: int = 1) -> None:
    """Refuse an image_size at which ``images`` pictures would not fit in MAX_DATA_BYTES, before resizing."""
    height, width = size
    needed = images * channels * height * width * bytes_per_value
    if needed > MAX_DATA_BYTES:
        kind = "uint8" if bytes_per_value == 1 else f"{8 * bytes_per_value}-bit floats"
        raise ConvlensError(
            f"image_size: {height}x{width} would make the data set {images:,} x {channels} x {height} x {width} "
            f"= {needed / 2**30:,.1f} GiB as {kind}, over the {MAX_DATA_BYTES / 2**30:g} GiB limit; "
            "choose a smaller size",
            parameter="image_size",
        )


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (N, C, H, W) batch with antialiasing, keeping the dtype (uint8 stays uint8)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    if images.shape[0] == 0:
        return images.new_zeros((0, images.shape[1], *size))
    # chunks of at most ~256 MiB of floats bound the float copy of big sets (and of big images)
    floats_per_image = images.shape[1] * max(images.shape[2] * images.shape[3], size[0] * size[1])
    step = max(1, min(4096, 2**26 // floats_per_image))
    resized = []
    for start in range(0, images.shape[0], step):
        chunk = images[start : start + step].float()
        chunk = F.interpolate(chunk, size=size, mode="bilinear", antialias=True, align_corners=False)
        if images.dtype == torch.uint8:
            resized.append(chunk.round_().clamp_(0, 255).to(torch.uint8))
        else:
            resized.append(chunk.clamp_(0, 1))
    return torch.cat(resized)


def sample_indices(count: int, limit: int | None, seed: int = 0) -> torch.Tensor:
    """``limit`` indices out of ``count``, drawn with a fixed seed (splits are stored sorted by class)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order if limit is None else order[:limit]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a fixed stratified train/test split (every class in both halves)."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels)
    if (counts[counts > 0] < 2).any():
        raise ConvlensError("every class needs at least 2 images to be split into train and test")
    indices = np.arange(len(labels))
    n_test = max(round(len(labels) * test_fraction), int((counts > 0).sum()))
    train_idx, test_idx = train_test_split(indices, test_size=n_test, stratify=labels, random_state=seed)
    return np.sort(train_idx), np.sort(test_idx)


AUGMENTATIONS = {
    # name: (degrees, scale, translate as a fraction of the side, horizontal flip)
    "affine": (10.0, 0.1, 0.1, False),  # handwriting: small rotations and zooms keep the digit
    "flip-shift": (0.0, 0.0, 0.08, True),  # clothing, faces, photos: mirror images keep the class
    "shift": (0.0, 0.0, 0.1, False),  # the safest default for unknown data (X-rays are not mirror-symmetric)
    "flip": (0.0, 0.0, 0.0, True),  # scenes: a mirrored scene is a scene; no pixel leaves the frame
    "none": None,
}


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    degrees: float = 10.0,
    scale: float = 0.1,
    translate: float = 0.1,
    flip: bool = False,
) -> torch.Tensor:
    """Random rotation, scale, shift (and mirror) for every image, in one batched grid_sample call.

    Sampling a whole batch at once costs almost nothing, where per-image augmentation in a
    Dataset slows CPU training by 20-35 %. ``translate`` is a fraction of the image side.
    """
    return warp(images, affine_theta(images.shape[0], generator, degrees, scale, translate, flip))


def affine_theta(
    batch: int,
    generator: torch.Generator,
    degrees: float = 10.0,
    scale: float = 0.1,
    translate: float = 0.1,
    flip: bool = False,
) -> torch.Tensor:
    """(B, 2, 3) random affine matrices for ``warp``, drawn from ``generator`` (on the CPU: the same
    stream on every device). A segmentation batch warps its masks with the same matrices."""
    angle = (torch.rand(batch, generator=generator) * 2 - 1) * math.radians(degrees)
    zoom = 1 + (torch.rand(batch, generator=generator) * 2 - 1) * scale
    shift = (torch.rand(batch, 2, generator=generator) * 2 - 1) * (2 * translate)  # grid units span 2
    mirror = torch.ones(batch)
    if flip:
        mirror = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    return torch.stack(
        [
            torch.stack([cos * mirror, -sin, shift[:, 0]], dim=1),
            torch.stack([sin * mirror, cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    )  # (B, 2, 3)


def warp(images: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``images`` (B, C, H, W) float resampled through ``theta``; outside the image reads 0."""
    # from pinned memory, so that the copy is queued: a copy from pageable memory may wait for
    # every kernel queued before it, once a step
    if images.device.type == "cuda":
        theta = theta.pin_memory()
    theta = theta.to(device=images.device, dtype=images.dtype, non_blocking=True)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


def augment(images: torch.Tensor, generator: torch.Generator, name: str) -> torch.Tensor:
    """Apply the named augmentation (see AUGMENTATIONS) to a float batch."""
    setting = AUGMENTATIONS[name]
    if setting is None:
        return images
    degrees, scale, translate, flip = setting
    return random_affine(images, generator, degrees, scale, translate, flip)
