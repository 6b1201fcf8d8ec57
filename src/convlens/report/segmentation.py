"""The sections of a segmentation run's report: scores, per-class table, pixel confusion,
overlays of sample and worst images, calibration of the per-pixel confidence.

A segmentation model answers once per pixel, so the classifier's sections that need one answer
per image (softmax bars, misclassified images with Grad-CAM, attribution faithfulness,
adversarial attacks, the lab's classification experiments) are left out rather than shown
wrong. Every number is computed once, on the test data the report is given, by
``convlens.inspect.segmentation_quality``; this module only lays the results out.
"""

from __future__ import annotations

from collections.abc import Callable

from convlens.report.parts import Section, figure_image, table_dict
from convlens.run import Run

SAMPLES = 4  # test images shown as overlays: the first of the seeded order, not chosen by score
WORST = 6  # lowest-mean-IoU test images shown

__all__ = ["SAMPLES", "WORST", "segmentation_builders"]


def segmentation_builders(run: Run, images, masks, spec: str) -> list[tuple[str, Callable[[], Section]]]:
    """(what, build) for each segmentation section, in order; the model runs once over the split,
    when the first of them is built."""
    from convlens.inspect.segmentation_quality import segmentation_quality

    found = {}

    def quality():
        if "result" not in found:
            found["result"] = segmentation_quality(run.model, images, masks, run.class_names, worst=WORST)
        return found["result"]

    return [
        ("segmentation scores", lambda: _scores(run, quality(), spec)),
        ("per-class scores", lambda: _per_class(quality())),
        ("pixel confusion", lambda: _confusion(run, quality())),
        ("sample overlays", lambda: _samples(run, images, masks, quality())),
        ("worst images", lambda: _worst(run, images, masks, quality())),
        ("calibration", lambda: _calibration(quality())),
    ]


def _scores(run: Run, quality, spec: str) -> Section:
    """The headline: mean IoU (what chose the kept epoch), pixel accuracy, Dice, and the kept epoch."""
    from convlens.views.segmentation_tables import scores_table

    table = table_dict(scores_table(quality.scores, quality.scored_pixels, quality.images))
    table["css"] = "facts"
    metrics = run.metrics
    if metrics.get("selected_epoch") is not None:
        table["rows"].append(["kept epoch", str(metrics["selected_epoch"])])
    if metrics.get("selection"):
        table["rows"].append(["why that epoch", str(metrics["selection"])])
    text = (
        f"On the test split of {spec} ({quality.images:,} images). Mean IoU (intersection over union "
        "per class, averaged over the classes present in the truth or the prediction) is the headline: "
        "pixel accuracy is dominated by the largest class, usually the background. Pixels marked as "
        "no class are left out of every number."
    )
    return Section("scores", "Segmentation scores", text=text, tables=[table])


def _per_class(quality) -> Section:
    from convlens.views.segmentation_tables import per_class_table

    return Section(
        "per-class",
        "Per-class IoU and Dice",
        text="Each class's IoU and Dice over the whole test split, with its support: the pixels that "
        "truly are the class, and those predicted as it. A class in neither has no score (-).",
        tables=[table_dict(per_class_table(quality.scores))],
    )


def _confusion(run: Run, quality) -> Section:
    from convlens.views.plots.segmentation import pixel_confusion_matrix

    return Section(
        "confusion",
        "Pixel confusion matrix",
        text=f"Where each true class's pixels went ({quality.scored_pixels:,} pixels): every row is "
        "divided by its total, so a row reads as percentages of that class and the diagonal is its "
        "recall. Rows: true class; columns: predicted class.",
        images=[
            figure_image(pixel_confusion_matrix(quality.confusion_share, run.class_names), "pixel confusion")
        ],
    )


def _overlays(run: Run, images, masks, quality, indices: list[int], alt: str) -> dict:
    from convlens.views.plots.segmentation import mask_overlays

    titles = []
    for i in indices:
        score = quality.per_image[i]
        titles.append(f"#{i}: IoU {'-' if score.mean_iou is None else f'{100 * score.mean_iou:.1f} %'}")
    figure = mask_overlays(
        [images[i] for i in indices],
        [masks[i] for i in indices],
        [quality.predicted[i] for i in indices],
        titles,
        run.class_names,
    )
    return figure_image(figure, alt)


def _samples(run: Run, images, masks, quality) -> Section:
    indices = list(range(min(SAMPLES, quality.images)))
    return Section(
        "samples",
        "Sample test images",
        text=f"The first {len(indices)} test images: the image, its true mask over it and the predicted "
        "mask over it (background left as the image), with each image's own mean IoU.",
        images=[_overlays(run, images, masks, quality, indices, "sample overlays")],
    )


def _worst(run: Run, images, masks, quality) -> Section:
    from convlens.views.segmentation_tables import image_scores_table

    if not quality.worst:
        return Section("worst", "Worst test images", text="No test image has a pixel to score.")
    return Section(
        "worst",
        "Worst test images",
        text=f"The {len(quality.worst)} test images with the lowest mean IoU of their own (each image "
        "scored alone: IoU averaged over the classes in its true or predicted mask), worst first.",
        tables=[table_dict(image_scores_table(quality.per_image, quality.worst))],
        images=[_overlays(run, images, masks, quality, quality.worst, "worst images")],
    )


def _calibration(quality) -> Section:
    from convlens.views.plots.segmentation import pixel_reliability
    from convlens.views.segmentation_tables import calibration_table, reliability_table

    calibration = quality.calibration
    return Section(
        "calibration",
        "Calibration of pixel confidences",
        text=f"Is a pixel said to be 90 % sure right 90 % of the time? Every scored pixel of the test split "
        f"({calibration.pixels:,}, none sampled) is binned by its confidence (the winning class's "
        f"probability) into {len(calibration.bins)} equal-width bins; the expected calibration error is the "
        "pixel-weighted mean gap between each bin's accuracy and its mean confidence.",
        tables=[
            {**table_dict(calibration_table(calibration)), "css": "facts"},
            table_dict(reliability_table(calibration.bins)),
        ],
        images=[figure_image(pixel_reliability(calibration), "reliability diagram of pixel confidences")],
    )
