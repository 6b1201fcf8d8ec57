"""Which attribution map to show by default on a run: the most faithful one that passes, measured.

``default_method`` measures every registered method on the run's own test images
(``run_faithfulness``; a stage-taking method such as Grad-CAM at each rectified stage,
``cam_stages.grad_cam_stages``) and picks, among those whose verdict passes (deletion beats random
order with its 95 % interval below 0, and the map changes when the weights are re-initialized),
the one whose deletion AUC drops furthest below random order's (at most a quarter of its maps blank).
When none passes it says so and
falls back to the largest drop, marked as not passing. The measurement is stored with the run
(``faithfulness.json``), so only the first call on a checkpoint measures.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect.attribution import ATTRIBUTIONS
from convlens.inspect.faithfulness_budget import candidate_keys, run_budget
from convlens.inspect.run_faithfulness import (
    measurement_settings,
    run_faithfulness,
    save_faithfulness,
    stored_faithfulness,
    weights_sha,
)

FALLBACK = "grad-cam"  # shown, unjudged, when nothing can be measured (no test images)


def _measured(run, keys: list[str], model: nn.Module, progress=None) -> tuple[dict, dict]:
    """Run-level results of ``keys`` and, for a method that cannot explain this model, its error."""
    try:
        return run_faithfulness(run, keys, model=model, progress=progress)["methods"], {}
    except ConvlensError:
        pass  # one method failed (or no test images): each on its own, to tell which
    found, errors = {}, {}
    for done, key in enumerate(keys):
        if progress is not None:
            progress(done, len(keys), f"measuring {key}")
        try:
            found[key] = run_faithfulness(run, [key], model=model)["methods"][key]
        except ConvlensError as error:
            errors[key] = str(error)
    return found, errors


def deletion_drop(entry: dict) -> tuple[float, float, float] | None:
    """(drop, low, high): random order's deletion AUC minus the map's, mean and 95 % interval."""
    deletion = entry["deletion"]
    if deletion.get("difference") is None or None in deletion["interval"]:
        return None
    low, high = deletion["interval"]
    return -deletion["difference"], -high, -low


def _passes(entry: dict) -> bool:
    """Passes on the run with at most a quarter of its maps blank: a default that shows nothing on
    many images is no default (Grad-CAM at a late pooling can be blank on most Fashion-MNIST images)."""
    deletion = entry["deletion"]
    return entry["verdict"] == "passes" and 4 * deletion["blank"] <= deletion["images"] + deletion["blank"]


def _label(key: str) -> str:
    name, _, stage = key.partition("@")
    return ATTRIBUTIONS.get(name).label + (f" at {stage}" if stage else "")


def _why(key: str, entry: dict, passes: bool, passing: int) -> str:
    drop, low, high = deletion_drop(entry)
    rho = entry["randomization"]["spearman"]
    numbers = f"deletion drop {drop:.2f} vs random ({low:.2f} to {high:.2f}) on {entry['images']} test images"
    if passes:
        others = f"; the largest drop of the {passing} that passed" if passing > 1 else ""
        return f"chosen because it passed on this run: {numbers}, randomization Spearman {rho:.2f}{others}"
    return (
        f"no method passed on this run; {_label(key)} has the largest {numbers} but it "
        f"{entry['verdict'] if entry['verdict'] == 'fails' else 'does not pass'} "
        f"(deletion {entry['deletion']['verdict']}, randomization {entry['randomization']['verdict']}, "
        f"Spearman {rho:.2f}, {entry['deletion']['blank']} of {entry['images']} maps blank)"
    )


def default_method(
    run, model: nn.Module | None = None, progress: Callable[[int, int, str], None] | None = None
) -> dict:
    """The run's default attribution: ``{"method", "stage", "key", "passes", "verdict", "drop",
    "interval", "vs_brightness", "why", "candidates", "errors"}``.

    ``passes``: whether the chosen method passed (None when nothing could be measured: then it is
    Grad-CAM at its default stage, unjudged, and ``why`` says why). ``stage``: where a stage-taking
    method looks (None for input-space methods). Stored under ``"default"`` in the run's
    faithfulness.json. ``model``: the run's model or a copy of it (the explorer's own).
    ``progress(done, total, what)``: while measuring (the first call on a checkpoint), per method.
    The number of test images follows the model's cost (``faithfulness_budget``).
    """
    model = run.model if model is None else model
    keys = candidate_keys(model)
    found = stored_faithfulness(run)
    stored = found.get("default")
    settings = _settings(model)
    if (
        isinstance(stored, dict)
        and stored.get("candidates") == keys
        and found.get("settings") == settings  # chosen from the budgeted default settings' numbers
        and found.get("weights_sha256") == stored.get("weights_sha256") == weights_sha(run)
    ):
        return {k: v for k, v in stored.items() if k != "weights_sha256"}
    found, errors = _measured(run, keys, model, progress)
    scored = {key: deletion_drop(entry) for key, entry in found.items()}
    passing = [key for key in found if _passes(found[key]) and scored[key] is not None]
    pool = passing or [key for key in found if scored[key] is not None]
    if not pool:
        reason = "; ".join(f"{key}: {text}" for key, text in errors.items()) or "no method could be measured"
        name = FALLBACK if FALLBACK in ATTRIBUTIONS else ATTRIBUTIONS.names()[0]
        return {
            "method": name, "stage": None, "key": name, "passes": None, "verdict": None, "drop": None,
            "interval": None, "vs_brightness": None, "why": f"not measured on this run ({reason})",
            "candidates": keys, "errors": errors,
        }  # fmt: skip
    best = max(pool, key=lambda key: scored[key][0])  # ties: the first registered
    entry = found[best]
    drop, low, high = scored[best]
    versus = entry["deletion"]["vs_brightness"]
    name, _, stage = best.partition("@")
    chosen = {
        "method": name,
        "stage": stage or entry.get("stage"),
        "key": best,
        "passes": bool(passing),
        "verdict": entry["verdict"],
        "drop": drop,
        "interval": [low, high],
        # brightness minus the map: above 0 the map deletes better than the brightest pixels first
        "vs_brightness": None
        if versus["difference"] is None or None in versus["interval"]
        else {"drop": -versus["difference"], "interval": [-versus["interval"][1], -versus["interval"][0]]},
        "why": _why(best, entry, bool(passing), len(passing)),
        "candidates": keys,
        "errors": errors,
    }
    _store(run, chosen, settings)
    return chosen


def _settings(model: nn.Module) -> dict:
    """The settings ``run_faithfulness`` measures the candidates with by default (its budget)."""
    budget = run_budget(model)
    return measurement_settings(images=budget["images"], randomization_images=budget["randomization_images"])


def _store(run, chosen: dict, settings: dict) -> None:
    stored = stored_faithfulness(run)
    if stored.get("methods") and stored.get("settings") == settings:
        stored["default"] = {**chosen, "weights_sha256": weights_sha(run)}
        save_faithfulness(run, stored)
