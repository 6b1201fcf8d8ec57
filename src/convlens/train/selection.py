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
    """How good an epoch is on validation: accuracy first, then (lower) loss."""
    return row["val_accuracy"], -row["val_loss"]


def choose_epoch(history: list[dict], best_epoch: int, validation_images: int) -> dict:
    """``{"epoch", "reason", "worse_last"}``: the epoch to keep, given the best one on validation."""
    last = history[-1]
    if not validation_images:
        return {"epoch": last["epoch"], "reason": "the last epoch (no validation split to choose with)"}
    if best_epoch in (0, last["epoch"]):
        return {"epoch": last["epoch"], "reason": "the last epoch, also the best on validation"}
    best = next(row for row in history if row["epoch"] == best_epoch)
    p = best["val_accuracy"]
    standard_error = math.sqrt(p * (1 - p) / validation_images)
    tolerance = max(SELECTION_TOLERANCE, 1 / validation_images, 2 * standard_error)
    if best["val_accuracy"] - last["val_accuracy"] <= tolerance + 1e-12:
        return {
            "epoch": last["epoch"],
            "reason": f"the last epoch: within {100 * tolerance:.2g} points of the best on validation "
            f"(epoch {best_epoch}, {100 * best['val_accuracy']:.2f} %)",
        }
    return {
        "epoch": best_epoch,
        "worse_last": True,
        "reason": f"the last epoch ({last['epoch']}) was clearly worse on validation: "
        f"{100 * last['val_accuracy']:.2f} % vs {100 * best['val_accuracy']:.2f} % at epoch {best_epoch}; "
        f"model.* holds epoch {best_epoch}",
    }
