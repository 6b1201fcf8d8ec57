"""A segmentation model's results as tables (``views.tables.Table``), the same in every face.

The numbers come from ``convlens.pixel_metrics`` and ``convlens.inspect.segmentation_quality``;
here they are only formatted. A class absent from both the truth and the prediction has no
IoU or Dice (0 / 0): it shows ``-``, not 0, as the mean leaves it out.
"""

from __future__ import annotations

from convlens.views.tables import Table, percent


def _maybe_percent(value: float | None) -> str:
    return "-" if value is None else percent(value)


def scores_table(scores: dict, scored_pixels: int, images: int, title: str = "") -> Table:
    """The split's headline scores (``segmentation_scores``) and what they were measured on."""
    rows = [
        ["mean IoU", percent(scores["mean_iou"])],
        ["pixel accuracy", percent(scores["pixel_accuracy"])],
        ["mean Dice", percent(scores["dice"])],
        ["images", f"{images:,}"],
        ["pixels scored", f"{scored_pixels:,}"],
    ]
    return Table(title, [], rows)


def per_class_table(scores: dict, title: str = "per class") -> Table:
    """IoU, Dice and pixel supports of every class (``segmentation_scores``' ``per_class_iou``)."""
    rows = [
        [
            row["class"],
            _maybe_percent(row["iou"]),
            _maybe_percent(row["dice"]),
            f"{row['pixels']:,}",
            f"{row['predicted_pixels']:,}",
        ]
        for row in scores["per_class_iou"]
    ]
    return Table(title, ["class", "IoU", "Dice", "true pixels", "predicted pixels"], rows)


def image_scores_table(per_image: list, indices: list[int], title: str = "") -> Table:
    """Some images' own scores (``ImageScore``), in the order of ``indices``."""
    rows = [
        [
            str(rank),
            str(per_image[i].index),
            _maybe_percent(per_image[i].mean_iou),
            _maybe_percent(per_image[i].pixel_accuracy),
            f"{per_image[i].scored_pixels:,}",
        ]
        for rank, i in enumerate(indices, start=1)
    ]
    return Table(title, ["rank", "test image", "mean IoU", "pixel accuracy", "pixels scored"], rows)


def calibration_table(calibration, title: str = "") -> Table:
    """Expected calibration error over pixels and the two averages it compares (``PixelCalibration``)."""
    rows = [
        ["expected calibration error", f"{calibration.ece:.4f}"],
        ["mean confidence", percent(calibration.mean_confidence)],
        ["pixels right", percent(calibration.accuracy)],
        ["pixels binned", f"{calibration.pixels:,}"],
    ]
    return Table(title, [], rows)


def reliability_table(bins: list, title: str = "reliability bins") -> Table:
    """The non-empty confidence bins: pixels, their accuracy and their mean confidence."""
    rows = [
        [f"{b.lower:.3f}–{b.upper:.3f}", f"{b.count:,}", percent(b.accuracy), percent(b.confidence)]
        for b in bins
        if b.count
    ]
    return Table(title, ["confidence", "pixels", "accuracy", "mean confidence"], rows)
