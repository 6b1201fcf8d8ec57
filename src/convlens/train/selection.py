"""Which epoch's weights become ``model.*``, and why — decided on the validation split only.

The last epoch is kept unless the best epoch on validation got clearly more images right:
by more than two standard errors of a validation accuracy (``2 sqrt(p (1 - p) / n)`` at the
best epoch's accuracy p on n images), one image, and ``SELECTION_TOLERANCE`` (0.5 points).
On 400 images at 98.5 % that is 1.2 points; on 10 images at 60 % it is 31 points — a small
split cannot tell a 1-image wobble from a worse model. A OneCycle schedule usually ends on
its best epoch; when it clearly does not (a late spike the guard let through, a collapse),
the better weights are kept and the run says so.
"""

from __future__ import annotations

import math

SELECTION_TOLERANCE = 0.005


def score(row: dict) -> tuple[float, float]:
    """How good an epoch is on validation: accuracy (a segmentation run's mean IoU) first, then
    (lower) loss."""
    return row[score_key(row)], -row["val_loss"]


def score_key(row: dict) -> str:
    """The validation number epochs are ranked by: mean IoU for a segmentation run (pixel accuracy
    rewards painting everything background), accuracy otherwise."""
    return "val_mean_iou" if "val_mean_iou" in row else "val_accuracy"


def choose_epoch(history: list[dict], best_epoch: int, validation_images: int) -> dict:
    """``{"epoch", "reason", "worse_last"}``: the epoch to keep, given the best one on validation."""
    last = history[-1]
    if not validation_images:
        return {"epoch": last["epoch"], "reason": "the last epoch (no validation split to choose with)"}
    if best_epoch in (0, last["epoch"]):
        return {"epoch": last["epoch"], "reason": "the last epoch, also the best on validation"}
    best = next(row for row in history if row["epoch"] == best_epoch)
    key = score_key(best)
    what = "mean IoU " if key == "val_mean_iou" else ""  # accuracy reads as a bare percentage
    # a mean IoU is judged like an accuracy measured on the validation images: its pixels are not
    # independent draws, the images are
    p = best[key]
    standard_error = math.sqrt(max(p * (1 - p), 0.0) / validation_images)
    tolerance = max(SELECTION_TOLERANCE, 1 / validation_images, 2 * standard_error)
    gap = best[key] - last[key]
    if gap <= 1e-12:  # "within 7.7 points of the best" read as a loss when both were 100 %
        return {
            "epoch": last["epoch"],
            "reason": f"the last epoch, as {'good' if what else 'accurate'} on validation as the best "
            f"({what}{100 * last[key]:.2f} %; epoch {best_epoch} had a lower loss)",
        }
    if gap <= tolerance + 1e-12:
        return {
            "epoch": last["epoch"],
            "reason": f"the last epoch: {what}{100 * last[key]:.2f} % on validation, {100 * gap:.2g} "
            f"points below the best (epoch {best_epoch}, {100 * best[key]:.2f} %), within the "
            f"{100 * tolerance:.2g} points {validation_images} validation images cannot tell apart",
        }
    return {
        "epoch": best_epoch,
        "worse_last": True,
        "reason": f"the last epoch ({last['epoch']}) was clearly worse on validation: {what}"
        f"{100 * last[key]:.2f} % vs {100 * best[key]:.2f} % at epoch {best_epoch}; "
        f"model.* holds epoch {best_epoch}",
    }


def stopping_text(epochs: int, stopped: str | None, validation_images: int) -> str:
    """What ended a training, as the CLI says it: a run that ran every epoch did not "stop
    early" (early stopping needs ``MIN_VALIDATION_TO_STOP`` validation images to tell a plateau
    from noise, so a small split never stops early)."""
    from convlens.train.recipe import MIN_VALIDATION_TO_STOP

    if stopped:
        return f"stopped after epoch {epochs}: {stopped}"
    ran = f"ran all {epochs} epochs" if epochs != 1 else "ran its 1 epoch"
    if validation_images < MIN_VALIDATION_TO_STOP:
        return (
            f"{ran} (early stopping needs {MIN_VALIDATION_TO_STOP} validation images, "
            f"this run had {validation_images})"
        )
    return ran
