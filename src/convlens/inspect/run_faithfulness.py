"""Faithfulness measured on the user's run, stored with it, and judged beside every map.

- ``run_faithfulness``: every method's deletion, insertion and randomization result on the run's own
  test images (``verdicts.method_faithfulness``), stored in ``RUN_DIR/faithfulness.json`` keyed by
  the checkpoint's weights, so a run is measured once.
- ``image_faithfulness``: one map on its own image against random orders of that image's pixels;
  ``attribution_faithfulness``: that, with the run's result for the same method and stage.

The verdict a face shows is the run's: deletion against random order (the interval of the mean
difference must lie below 0) together with the randomization check; insertion is stored beside it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from convlens.data import to_float
from convlens.errors import ConvlensError
from convlens.inspect.attribution import ATTRIBUTIONS, Attribution
from convlens.inspect.cam_stages import grad_cam_default, takes_stage
from convlens.inspect.faithfulness_budget import method_key, run_budget
from convlens.inspect.verdicts import (
    CURVE_MODES,
    CURVE_STEPS,
    DEFAULT_FILL,
    curve_aucs,
    is_blank,
    map_orders,
    method_faithfulness,
    random_orders,
    reference_aucs,
)

FAITHFULNESS_FILE = "faithfulness.json"  # in the run folder, keyed by the checkpoint's weights
FAITHFULNESS_IMAGES = 32  # test images per run-level measurement on a cheap model (faithfulness_budget)
IMAGE_REPEATS = 32  # random orders one image's map is compared with
# what is measured and how it is judged: a stored file measured otherwise is measured again
MEASURES = ("deletion", "insertion", "randomization", "no interval from one image")


def result_key(model: nn.Module, attribution: Attribution) -> str:
    """The run-level key of one map: its method, and its stage when that is not Grad-CAM's default."""
    stage = attribution.stage
    if (
        stage is None
        or stage == grad_cam_default(model)
        or not takes_stage(ATTRIBUTIONS.get(attribution.method))
    ):
        stage = None
    return method_key(attribution.method, stage)


def weights_sha(run) -> str:
    import hashlib

    from convlens.checkpoint import tensor_file

    sha = run.metadata.get("weights", {}).get("sha256")
    if isinstance(sha, str) and len(sha) == 64:
        return sha
    return hashlib.sha256(tensor_file(run.checkpoint, run.metadata).read_bytes()).hexdigest()


def stored_faithfulness(run) -> dict:
    """What ``RUN_DIR/faithfulness.json`` holds ({} when nothing readable is there)."""
    import json

    try:
        value = json.loads((run.folder / FAITHFULNESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def save_faithfulness(run, stored: dict) -> dict:
    """Write ``stored`` to the run folder atomically; a read-only folder keeps it in memory and
    says so under ``not_stored``."""
    import json

    from convlens.storage import atomic_write

    try:
        atomic_write(run.folder / FAITHFULNESS_FILE, json.dumps(stored, indent=1).encode("utf-8"))
    except OSError as error:  # a read-only run folder: measured, not stored
        stored["not_stored"] = str(error)
    return stored


def measurement_settings(
    images: int = FAITHFULNESS_IMAGES,
    seed: int = 0,
    fill: str = DEFAULT_FILL,
    steps: int = CURVE_STEPS,
    randomization_images: int = 16,
) -> dict:
    """The settings a stored measurement is keyed by (with the weights): any change measures again."""
    return {
        "images": images,
        "seed": seed,
        "fill": fill,
        "steps": steps,
        "randomization_images": randomization_images,
        "measures": list(MEASURES),
    }


def measure_methods(
    model: nn.Module,
    pixels: torch.Tensor,
    targets: torch.Tensor,
    keys: list[str],
    fill: str = DEFAULT_FILL,
    steps: int = CURVE_STEPS,
    seed: int = 0,
    randomization_images: int = 16,
    progress: Callable[[int, int, str], None] | None = None,
) -> tuple[dict, dict]:
    """(reference, methods): the reference curves (random order, brightness) on ``pixels`` and each
    of ``keys`` (``METHOD`` or ``METHOD@STAGE``) measured by ``verdicts.method_faithfulness``, as
    stored in faithfulness.json. The run's measurement and the lab's model trained on the spot share it.
    ``progress(done, total, what)`` before each key and once at the end."""
    references, stored_references = {}, {}
    for mode in CURVE_MODES:
        random, brightness, curves = reference_aucs(
            model, pixels, targets, fill, steps, seed, with_curves=True, mode=mode
        )
        references[mode] = {"random": random, "brightness": brightness}
        stored_references[mode] = {
            "random_auc": float(random.mean()),
            "brightness_auc": float(brightness.mean()),
            "random_curve": curves["random"].tolist(),
            "brightness_curve": curves["brightness"].tolist(),
        }
    reference = {
        **stored_references["deletion"],  # deletion's at the top: what the verdict is judged on
        "insertion": stored_references["insertion"],
        "fractions": (
            torch.round(torch.linspace(0, pixels[0, 0].numel(), steps + 1)) / pixels[0, 0].numel()
        ).tolist(),
    }
    methods = {}
    for done, key in enumerate(keys):
        if progress is not None:
            progress(done, len(keys), f"measuring {key} on {pixels.shape[0]} test images")
        name, _, stage = key.partition("@")
        options = {"stage": stage} if stage else {}
        methods[key] = method_faithfulness(
            model, pixels, targets, name, references, fill, steps, seed, randomization_images, **options
        )
    if progress is not None:
        progress(len(keys), len(keys), "measured")
    return reference, methods


def run_faithfulness(
    run,
    methods: list[str] | tuple[str, ...] | None = None,
    images: int | None = None,
    seed: int = 0,
    model: nn.Module | None = None,
    fill: str = DEFAULT_FILL,
    steps: int = CURVE_STEPS,
    randomization_images: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Each method's faithfulness on ``run``'s own test images (``verdicts.method_faithfulness``):
    a seeded sample of ``images``, the model's prediction as target, deletion and insertion against
    random order and pixel brightness (``reference_aucs``), full weight randomization on the first
    ``randomization_images``. A method's ``verdict`` is deletion's with randomization's.

    ``images`` None: as many as the model's cost allows (``faithfulness_budget.measurement_budget``
    for every candidate method: 32 on digits and mnist5k, down to 8 on a costly model; fewer images
    widen the intervals the verdicts are judged on); ``randomization_images`` None: half of them, at
    most 16. ``methods``: registered names, or ``METHOD@STAGE`` (default: every registered method).
    Stored in ``RUN_DIR/faithfulness.json`` (atomically) with the checkpoint's weights' SHA-256 and
    these settings; a method already there is read back, a changed checkpoint or setting measures
    again. ``model``: the run's model or a copy of it (the explorer's own). ``progress(done, total,
    what)``: while measuring, per method.
    """
    if images is not None and (isinstance(images, bool) or not isinstance(images, int) or images < 2):
        raise ConvlensError(f"images must be an integer of at least 2, got {images!r}", parameter="images")
    keys = list(dict.fromkeys(methods or ATTRIBUTIONS.names()))
    for key in keys:
        ATTRIBUTIONS.get(key.split("@")[0], parameter="methods")
    model = run.model if model is None else model
    if images is None:
        budget = run_budget(model)
        images, randomization_images = (
            budget["images"],
            randomization_images or budget["randomization_images"],
        )
    elif randomization_images is None:
        randomization_images = min(16, images)
    settings = measurement_settings(images, seed, fill, steps, randomization_images)
    sha = weights_sha(run)
    stored = stored_faithfulness(run)
    if stored.get("weights_sha256") != sha or stored.get("settings") != settings:
        stored = {
            "weights_sha256": sha,
            "checkpoint": run.checkpoint.name,
            "settings": settings,
            "methods": {},
        }
    missing = [key for key in keys if key not in stored["methods"]]
    if missing:
        pixels, _, spec = run.test_data(limit=images, seed=seed)
        targets = _predictions(model, pixels)  # the model's prediction is the class explained
        stored["data"] = spec
        stored["reference"], measured = measure_methods(
            model, pixels, targets, missing, fill, steps, seed, randomization_images, progress
        )
        stored["methods"].update(measured)
        stored.pop("default", None)  # chosen among the methods stored before: choose again
        save_faithfulness(run, stored)
    return {**stored, "methods": {key: stored["methods"][key] for key in keys}}


def _predictions(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    from convlens.predict import predict_probabilities

    return predict_probabilities(model, pixels).argmax(dim=1)


def image_faithfulness(
    model: nn.Module,
    image: torch.Tensor,
    attribution: Attribution,
    random_aucs: torch.Tensor | None = None,
    fill: str = DEFAULT_FILL,
    steps: int = CURVE_STEPS,
    seed: int = 0,
) -> dict:
    """One map on its own image: its deletion AUC against ``IMAGE_REPEATS`` random orders'
    (``random_aucs``, computed when not given). ``passes`` below the random orders' 2.5th percentile,
    ``fails`` at or above their mean, else ``inconclusive``; ``drop``: random mean minus the map's."""
    pixels = to_float(image).float()[None]
    target = torch.tensor([attribution.target])
    if random_aucs is None:
        random_aucs = image_reference(model, image, attribution.target, fill, steps, seed)
    random = float(random_aucs.mean())
    low, high = (
        float(q)
        for q in torch.quantile(random_aucs.double(), torch.tensor([0.025, 0.975], dtype=torch.float64))
    )
    if is_blank(attribution.map):
        auc, verdict = None, "inconclusive"
    else:
        aucs, _ = curve_aucs(model, pixels, target, map_orders(attribution.map[None], seed), fill, steps)
        auc = float(aucs[0])
        verdict = "passes" if auc < low else "fails" if auc >= random else "inconclusive"
    return {
        "verdict": verdict,
        "deletion_auc": auc,
        "random_deletion_auc": random,
        "interval": [low, high],  # the middle 95 % of the random orders' AUCs
        "drop": None if auc is None else random - auc,
        "blank": auc is None,
        "random_orders": int(random_aucs.numel()),
    }


def image_reference(
    model: nn.Module,
    image: torch.Tensor,
    target: int,
    fill: str = DEFAULT_FILL,
    steps: int = CURVE_STEPS,
    seed: int = 0,
) -> torch.Tensor:
    """(IMAGE_REPEATS,) deletion AUCs of one image under seeded random orders: the reference every
    method's map on it is compared with."""
    pixels = to_float(image).float()[None]
    orders = random_orders(IMAGE_REPEATS, pixels.shape[-2] * pixels.shape[-1], seed)
    aucs, _ = curve_aucs(
        model,
        pixels.expand(IMAGE_REPEATS, -1, -1, -1),
        torch.full((IMAGE_REPEATS,), target),
        orders,
        fill,
        steps,
    )
    return aucs


def run_summary(entry: dict) -> dict:
    """A run-level method result without its per-image numbers: what a face shows."""
    trimmed = {
        mode: {k: v for k, v in entry[mode].items() if k != "per_image"}
        for mode in CURVE_MODES
        if mode in entry
    }
    return {**entry, **trimmed}


def attribution_faithfulness(
    run, image: torch.Tensor, attribution: Attribution, model: nn.Module | None = None, random_aucs=None
) -> dict:
    """This image's verdict (``image_faithfulness``) with the run's for the same method and stage
    (``run_faithfulness``, under ``"run"``; ``None`` with ``run_error`` when the run's test images
    cannot be loaded)."""
    model = run.model if model is None else model
    found = image_faithfulness(model, image, attribution, random_aucs)
    key = result_key(model, attribution)
    try:
        result = run_faithfulness(run, [key], model=model)
    except ConvlensError as error:
        return {**found, "run": None, "run_error": str(error)}
    return {**found, "run": {**run_summary(result["methods"][key]), "fill": result["settings"]["fill"]}}
