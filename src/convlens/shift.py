"""Is this image like the ones the model was trained on? A cheap check before trusting a prediction.

A model trained on white digits on black says something confident about a black digit on
white paper, or about a photo of a cat, and it is wrong for a reason no explanation shows:
the image is far from everything it has seen. The checkpoint knows two facts about its
training pixels per channel, their mean μ and standard deviation σ (``Run.normalization``,
in [0, 1] pixel units); ``check_shift`` compares one image (C, H, W) with them:

1. **Tones** (ink data only). Digits, scans and drawings are nearly black and white. A
   channel's contrast ``variance / (m (1 − m))`` is 1 for pure black and white and near 0 for
   flat grey; where the training pixels' ``σ² / (μ (1 − μ))`` is at least ``INK_CONTRAST``
   (0.5; mnist5k 0.83, digits 0.67, while the photo set faces is 0.31) the data is ink. Ink
   images are mostly clean background, so most of their pixels lie within ``NEAR`` (0.1) of
   black or white (measured on test images: mnist5k ≥ 86 %, digits ≥ 50 %; a stroke drawn in
   the explorer and shrunk to 8x8 ≥ 67 %). An image with under ``MIN_BLACK_OR_WHITE`` (25 %)
   of such pixels is mostly mid-grey: a photo, not ink (scikit-image's four photos: 0–12 %).
2. **Brightness.** The distance of the image's mean m from μ in training standard deviations,
   ``d = max over channels |m − μ| / σ``. The spread of the training images' own means cannot
   exceed σ (law of total variance), so ``d > FAR_DISTANCE`` (2) is an outlier for any data
   set; measured on test images: d ≤ 0.55 (mnist5k), 0.33 (digits), 1.58 (faces).
3. **Polarity** (ink data only). The background of ink images is the majority value, so an
   ink image whose mean lies on the other side of 0.5 from μ has the other polarity: dark on
   light where training was light on dark (mnist5k test images have m ≤ 0.30, their
   inversions m ≥ 0.70; digits m ≤ 0.43 and ≥ 0.57).

The first that applies makes the image **far**. It **looks inverted** when it is far by
brightness or polarity and its inversion ``1 − pixels`` is closer to the training mean:
inverting it is the fix. Measured: every test image of mnist5k (1,000), digits (360) and
faces (50) passes; every inverted mnist5k and digits test image looks inverted; the four
photos given to the mnist5k or digits model are far (tones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from convlens.errors import ConvlensError

FAR_DISTANCE = 2.0  # training standard deviations between the image's mean and the training mean
INK_CONTRAST = 0.5  # training contrast from which the data set counts as black-and-white "ink"
NEAR = 0.1  # a pixel this close to 0 or 1 counts as black or white
MIN_BLACK_OR_WHITE = 0.25  # an ink image with fewer black-or-white pixels is mostly mid-grey
FLAT = 1e-3  # m (1 - m) below this: a blank image, whose contrast means nothing


@dataclass
class ShiftCheck:
    """How far one image is from the training images, and whether it looks inverted."""

    is_far: bool
    looks_inverted: bool
    message: str  # one line for a person; "" when the image looks like the training images
    reason: str | None  # "tones", "brightness", "polarity" (what made it far) or None
    distance: float  # max over channels of |image mean − training mean| / training std
    inverted_distance: float  # the same for 1 − pixels
    contrast: float | None  # the image's σ² / (m (1 − m)); None for a blank image
    training_contrast: float | None  # the same for the training pixels
    black_or_white: float  # fraction of the image's pixels within NEAR of 0 or 1
    mean: list[float]  # the image's mean per channel, [0, 1] units
    training_mean: list[float]
    training_std: list[float]

    def to_json(self) -> dict:
        return asdict(self)


def invert(image: torch.Tensor) -> torch.Tensor:
    """``1 − pixels``: a dark-on-light image as light-on-dark, and back (pixels in [0, 1])."""
    return 1 - image


def _contrast(mean: torch.Tensor, variance: torch.Tensor) -> float | None:
    spread = mean * (1 - mean)  # the largest variance a channel with this mean can have
    if bool((spread < FLAT).any()):
        return None
    return float((variance / spread).mean())


def _describe(value: float) -> str:
    return "light on dark" if value < 0.5 else "dark on light"


def check_shift(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> ShiftCheck:
    """Compare ``image`` (C, H, W) in [0, 1] with training pixels of per-channel ``mean`` and ``std``.

    The rule is in this module's docstring; ``mean``/``std`` are ``Run.normalization``'s.
    """
    if image.ndim != 3:
        raise ConvlensError(f"image must be C x H x W, got shape {tuple(image.shape)}", parameter="image")
    pixels = image.detach().float().cpu().flatten(1)  # (C, H*W)
    mu = torch.tensor([float(v) for v in mean])
    sigma = torch.tensor([float(v) for v in std]).clamp_min(1e-3)
    if mu.numel() != pixels.shape[0] or sigma.numel() != pixels.shape[0]:
        raise ConvlensError(
            f"mean/std have {mu.numel()}/{sigma.numel()} values, the image has {pixels.shape[0]} channels",
            parameter="mean",
        )
    m = pixels.mean(dim=1)  # (C,)
    variance = pixels.var(dim=1, unbiased=False)
    distance = float(((m - mu).abs() / sigma).max())
    inverted_distance = float(((1 - m - mu).abs() / sigma).max())
    contrast = _contrast(m, variance)
    training_contrast = _contrast(mu, sigma**2)
    black_or_white = float(((pixels < NEAR) | (pixels > 1 - NEAR)).float().mean())
    ink = training_contrast is not None and training_contrast >= INK_CONTRAST
    image_mean, training_mean = float(m.mean()), float(mu.mean())

    grey = ink and black_or_white < MIN_BLACK_OR_WHITE
    flipped = ink and not grey and (image_mean < 0.5) != (training_mean < 0.5)
    reason, message = None, ""
    if grey:
        reason = "tones"  # inverting a photo does not make it a drawing
    elif distance > FAR_DISTANCE:
        reason = "brightness"
    elif flipped:
        reason = "polarity"
    looks_inverted = reason in ("brightness", "polarity") and inverted_distance < distance
    if looks_inverted and ink:
        message = (
            f"looks inverted: {_describe(image_mean)}, where the training images are "
            f"{_describe(training_mean)} (mean brightness {image_mean:.2f} vs {training_mean:.2f})"
        )
    elif looks_inverted:
        message = (
            f"looks inverted: mean brightness {image_mean:.2f} is {distance:.1f} training standard deviations "
            f"from theirs ({training_mean:.2f}); its inversion (1 − pixels) is closer"
        )
    elif reason == "tones":
        message = (
            f"far from the training images: mostly mid-grey tones ({100 * black_or_white:.0f} % of pixels "
            "near black or white) where theirs are nearly black and white, like a photo given to a model "
            "of drawn shapes"
        )
    elif reason is not None:
        message = (
            f"far from the training images: mean brightness {image_mean:.2f} is {distance:.1f} training "
            f"standard deviations from theirs ({training_mean:.2f})"
        )
    return ShiftCheck(
        is_far=reason is not None,
        looks_inverted=looks_inverted,
        message=message,
        reason=reason,
        distance=distance,
        inverted_distance=inverted_distance,
        contrast=contrast,
        training_contrast=training_contrast,
        black_or_white=black_or_white,
        mean=[float(v) for v in m],
        training_mean=[float(v) for v in mu],
        training_std=[float(v) for v in sigma],
    )
