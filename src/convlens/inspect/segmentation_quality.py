"""How well a segmentation model does on a split, image by image and pixel by pixel.

A split's mean IoU hides where the model fails: one image can be wrong everywhere while the
split's score stays high, because large easy images dominate the pixel counts. So besides the
split's scores this module scores every image on its own and ranks the worst, and it asks
whether the model's per-pixel confidence can be believed (a reliability table and the expected
calibration error over pixels).

Every score comes from the same arithmetic as training's (``convlens.pixel_metrics``): the
split's from one pixel confusion matrix, an image's from that image's own confusion matrix, so
an image's mean IoU averages the classes present in its truth or its prediction (a class absent
from both has no IoU, not 0). Pixels marked ``IGNORE_INDEX`` count nowhere: not in the scores,
not in the calibration. Calibration bins every scored pixel (none is sampled) by the lab's rule
(``convlens.lab.calibration.confidence_bins``): a pixel's confidence is its winning class's
softmax probability, and it is right when that class is the mask's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convlens.data.bundle import IGNORE_INDEX
from convlens.errors import ConvlensError
from convlens.lab.calibration import BINS, ReliabilityBin, calibration_error, confidence_bins
from convlens.pixel_metrics import pixel_confusion, segmentation_scores
from convlens.predict import predict_probabilities

__all__ = [
    "ImageScore",
    "PixelCalibration",
    "SegmentationQuality",
    "pixel_calibration",
    "segmentation_quality",
]

BATCH = 50  # images per forward pass: the probabilities of one batch are all that is held


@dataclass
class ImageScore:
    """One test image's own scores; ``mean_iou`` is None when every pixel of it is ignored."""

    index: int  # position in the images given
    mean_iou: float | None
    pixel_accuracy: float | None
    scored_pixels: int  # pixels not marked IGNORE_INDEX


@dataclass
class PixelCalibration:
    """Whether the per-pixel confidence matches how often the pixel is right."""

    bins: list[ReliabilityBin]
    ece: float  # expected calibration error over every scored pixel
    pixels: int  # scored pixels binned
    mean_confidence: float
    accuracy: float  # share of the binned pixels whose winning class is the mask's


@dataclass
class SegmentationQuality:
    """A segmentation model's results on a split (see the module docstring)."""

    images: int
    scored_pixels: int
    confusion: torch.Tensor  # (K, K) int64 pixel counts, row = true class, column = predicted
    confusion_share: torch.Tensor  # (K, K) float64: each row divided by its total (0 for an empty row)
    scores: dict  # segmentation_scores: pixel_accuracy, mean_iou, dice, per_class_iou
    per_image: list[ImageScore]  # in the order of the images given
    worst: list[int]  # indices of the lowest-mean-IoU images, worst first (ties: lower index first)
    predicted: torch.Tensor  # (N, H, W) uint8 predicted class ids
    calibration: PixelCalibration


def image_scores(
    index: int, mask: torch.Tensor, predicted: torch.Tensor, class_names: list[str]
) -> ImageScore:
    """The scores of one image (mask, predicted: (H, W)) from its own pixel confusion matrix."""
    confusion = pixel_confusion(mask, predicted, len(class_names))
    scored = int(confusion.sum())
    if scored == 0:
        return ImageScore(index, None, None, 0)
    scores = segmentation_scores(confusion, class_names)
    return ImageScore(index, scores["mean_iou"], scores["pixel_accuracy"], scored)


def row_shares(confusion: torch.Tensor) -> torch.Tensor:
    """Each row of a confusion matrix as shares of its total: where each true class's pixels went."""
    counts = confusion.double()
    totals = counts.sum(1, keepdim=True)
    return torch.where(totals > 0, counts / totals.clamp(min=1), torch.zeros_like(counts))


def pixel_calibration(probabilities: torch.Tensor, masks: torch.Tensor, bins: int = BINS) -> PixelCalibration:
    """Reliability bins and ECE of softmax ``probabilities`` (N, K, H, W) against ``masks`` (N, H, W)."""
    confidence, correct = _confidence_and_correct(probabilities, masks)
    return _calibration(confidence, correct, bins)


def _confidence_and_correct(
    probabilities: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each scored pixel's winning probability and whether its class is the mask's (flat)."""
    if probabilities.ndim != 4 or tuple(masks.shape) != (probabilities.shape[0], *probabilities.shape[2:]):
        raise ConvlensError(
            f"masks: expected (N, H, W) = {(probabilities.shape[0], *probabilities.shape[2:])} for probabilities "
            f"{tuple(probabilities.shape)}, got {tuple(masks.shape)}",
            parameter="masks",
        )
    confidence, predicted = probabilities.max(dim=1)
    scored = masks.long() != IGNORE_INDEX
    return confidence[scored], predicted[scored] == masks.long()[scored]


def _calibration(confidence: torch.Tensor, correct: torch.Tensor, bins: int) -> PixelCalibration:
    table = confidence_bins(confidence, correct, bins)
    pixels = int(confidence.numel())
    return PixelCalibration(
        bins=table,
        ece=calibration_error(table),
        pixels=pixels,
        mean_confidence=float(confidence.double().mean()) if pixels else 0.0,
        accuracy=float(correct.double().mean()) if pixels else 0.0,
    )


def segmentation_quality(
    model: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    class_names: list[str],
    worst: int = 6,
    bins: int = BINS,
) -> SegmentationQuality:
    """Score a segmentation ``model`` on float ``images`` (N, C, H, W) in [0, 1] with ``masks`` (N, H, W).

    ``worst``: how many of the lowest-scoring images to rank (images with no scored pixel are
    never ranked). The forward passes go a batch at a time, so the split can be large.
    """
    if getattr(model, "task", "classification") != "segmentation":
        raise ConvlensError("model: a segmentation model is needed (a class per pixel)", parameter="model")
    if images.shape[0] != masks.shape[0] or images.shape[0] == 0:
        raise ConvlensError(
            f"masks: expected one mask per image ({images.shape[0]}), got {masks.shape[0]}", parameter="masks"
        )
    predicted, confidences, corrects = [], [], []
    for first in range(0, images.shape[0], BATCH):
        probabilities = predict_probabilities(model, images[first : first + BATCH])  # (B, K, H, W)
        batch_masks = masks[first : first + BATCH]
        predicted.append(probabilities.argmax(1).to(torch.uint8))
        confidence, correct = _confidence_and_correct(probabilities, batch_masks)
        confidences.append(confidence)
        corrects.append(correct)
    predicted = torch.cat(predicted)
    confusion = pixel_confusion(masks, predicted, len(class_names))
    per_image = [image_scores(i, masks[i], predicted[i], class_names) for i in range(masks.shape[0])]
    ranked = sorted((s for s in per_image if s.mean_iou is not None), key=lambda s: (s.mean_iou, s.index))
    return SegmentationQuality(
        images=int(masks.shape[0]),
        scored_pixels=int(confusion.sum()),
        confusion=confusion,
        confusion_share=row_shares(confusion),
        scores=segmentation_scores(confusion, class_names),
        per_image=per_image,
        worst=[s.index for s in ranked[: max(0, worst)]],
        predicted=predicted,
        calibration=_calibration(torch.cat(confidences), torch.cat(corrects), bins),
    )
