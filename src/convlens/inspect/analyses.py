"""Analyses the faces show, as library operations that return data.

Each of these used to be assembled inside a face; here each exists once, so the CLI, the report
and the explorer show the same choice of images and maps:

- ``misclassified``: the most confident mistakes first, each with Grad-CAM of the (wrong)
  predicted class — where the model looked when it decided (the report's "Misclassified").
- ``explanation_attribution``: the attribution `convlens explain` draws — which stage Grad-CAM
  looks at, and what a model without convolutions gets instead.
- ``run_faithfulness``: every method's deletion and randomization verdict on the run's own test
  images, stored in the run folder; ``attribution_faithfulness``: one map's verdict, this image's
  and the run's; ``grad_cam_stages``: the stages Grad-CAM may look at, rectified ones first.
- ``top_activating_pictures``: the test images that excite each channel most, with their pixels.
- ``one_per_class``: a few sample images of different classes (the demo's samples);
  ``correct_sample``: one image the model gets right (the report's worked example).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convlens.data import to_float
from convlens.errors import ConvlensError
from convlens.inspect._stages import find_stage, is_spatial_stage, model_stages
from convlens.inspect.attribution import ATTRIBUTIONS, Attribution, grad_cam
from convlens.inspect.featureviz import TopImages, top_activating_images
from convlens.inspect.verdicts import (
    CURVE_STEPS,
    DEFAULT_FILL,
    deletion_aucs,
    is_blank,
    map_orders,
    method_faithfulness,
    random_orders,
    reference_aucs,
)


@dataclass
class Mistakes:
    """The most confident mistakes among some labelled images, strongest first."""

    indices: torch.Tensor  # (k,) indices into the images
    labels: torch.Tensor  # (k,) the true classes
    predicted: torch.Tensor  # (k,) the (wrong) predicted classes
    confidence: torch.Tensor  # (k,) the probability of the predicted class
    cams: list[Attribution]  # Grad-CAM of the predicted class per mistake ([] when not asked for)
    wrong: int  # mistakes among all the images
    total: int  # how many images were looked at


def misclassified(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    probabilities: torch.Tensor | None = None,
    limit: int = 10,
    with_grad_cam: bool = True,
) -> Mistakes:
    """The ``limit`` most confident mistakes of ``model`` on float ``images`` (N, C, H, W).

    ``probabilities`` (N, classes): the model's, if already computed (else computed here). Ties in
    confidence keep the images' order. ``with_grad_cam``: Grad-CAM of each mistake's predicted
    class at the default stage (``grad_cam_stage``).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConvlensError(f"limit must be a positive integer, got {limit!r}", parameter="limit")
    if labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ConvlensError(
            f"labels: expected one label per image ({images.shape[0]}), got shape {tuple(labels.shape)}",
            parameter="labels",
        )
    if probabilities is None:
        from convlens.predict import predict_probabilities

        probabilities = predict_probabilities(model, images)
    confidence, predicted = probabilities.max(dim=1)
    wrong = torch.nonzero(predicted != labels).flatten()
    order = confidence[wrong].argsort(descending=True, stable=True)
    shown = wrong[order][:limit]  # most confident mistakes first
    cams = [grad_cam(model, images[int(i)], target=int(predicted[i])) for i in shown] if with_grad_cam else []
    return Mistakes(
        indices=shown,
        labels=labels[shown],
        predicted=predicted[shown],
        confidence=confidence[shown],
        cams=cams,
        wrong=int(wrong.numel()),
        total=int(labels.numel()),
    )


def _grad_cam_target(model: nn.Module, stage: str) -> bool:
    """Whether Grad-CAM may look at ``stage``: one that is or holds a convolution, or whose output is
    a feature map of a kind that allows it (``layer_kinds.stage_traits``): a graph's ReLU, addition
    or pooling is a stage of its own, with no convolution inside."""
    from convlens.inspect._stages import eval_mode, input_shape, model_device
    from convlens.inspect.hooks import StageRecorder
    from convlens.inspect.layer_kinds import stage_traits

    module = find_stage(model, stage)
    if is_spatial_stage(module):
        return True
    shape = input_shape(model)
    if shape is None:
        return False
    with eval_mode(model), torch.no_grad(), StageRecorder(model, [stage]) as recorder:
        model(torch.zeros(1, *shape, device=model_device(model)))
    return stage_traits(module, tuple(recorder.outputs[stage][0].shape)).grad_cam_target


def explanation_attribution(
    model: nn.Module,
    image: torch.Tensor,
    method: str = "grad-cam",
    target: int | None = None,
    stage: str | None = None,
    run=None,
) -> Attribution | None:
    """The attribution `convlens explain` shows: registered ``method`` for ``target`` (default: the
    prediction).

    Grad-CAM looks at ``stage`` when that stage has a spatial map, else at its default stage. A
    model without any convolution has no Grad-CAM: that is None, not an error (the explanation
    still has its feature maps and probabilities), but ``target`` is still checked, so a bad
    target is the same error with or without convolutions.

    With ``run`` (a ``Run``), the result carries ``faithfulness``: this image's verdict and the
    run's (``attribution_faithfulness``).
    """
    entry = ATTRIBUTIONS.get(method)
    cam_stage = stage if stage is not None and _grad_cam_target(model, stage) else None
    if entry.name != "grad-cam" or any(is_spatial_stage(module) for _, module in model_stages(model)):
        result = entry.call(model, image, target=target, stage=cam_stage)
        if run is not None:
            result.faithfulness = attribution_faithfulness(run, image, result, model=model)
        return result
    if target is not None:
        ATTRIBUTIONS.get("saliency").call(model, image, target=target)  # only to check the target
    return None


@dataclass
class TopPictures:
    """The images that excite each channel most (``TopImages``), with their pixels."""

    top: TopImages
    pixels: torch.Tensor  # (channels, k, C, H, W) float in [0, 1], in the order of ``top.indices``


def top_activating_pictures(
    model: nn.Module, images: torch.Tensor, stage: str, channels: list[int] | None = None, k: int = 6
) -> TopPictures:
    """``top_activating_images`` of ``images`` (N, C, H, W), and those images as float pixels."""
    top = top_activating_images(model, images, stage, channels, k=k)
    pixels = to_float(images[top.indices.flatten()]).view(*top.indices.shape, *images.shape[1:])
    return TopPictures(top, pixels)


def one_per_class(labels: torch.Tensor, count: int = 6, seed: int = 0) -> list[int]:
    """Indices of up to ``count`` images of different classes, in a seeded random order.

    At most one image per class: a handful of samples that show six zeros shows nothing.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConvlensError(f"count must be a positive integer, got {count!r}", parameter="count")
    order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed)).tolist()
    chosen, seen = [], set()
    for index in order:
        if int(labels[index]) not in seen:
            chosen.append(index)
            seen.add(int(labels[index]))
        if len(chosen) == count:
            break
    return chosen


def correct_sample(labels: torch.Tensor, probabilities: torch.Tensor) -> int:
    """The first image whose predicted class is its label (0 when there is none): an example that
    shows how the model works rather than how it fails."""
    right = torch.nonzero(probabilities.argmax(dim=1) == labels).flatten()
    return int(right[0]) if right.numel() else 0


# ------------------------------------------------------------------- faithfulness on the user's run

FAITHFULNESS_FILE = "faithfulness.json"  # in the run folder, keyed by the checkpoint's weights
FAITHFULNESS_IMAGES = 32  # test images per run-level measurement
IMAGE_REPEATS = 32  # random orders one image's map is compared with


def method_key(method: str, stage: str | None = None) -> str:
    """How a run-level result is stored: the method, or ``grad-cam@STAGE`` off its default stage."""
    return f"{method}@{stage}" if stage else method


def _weights_sha(run) -> str:
    import hashlib

    from convlens.checkpoint import tensor_file

    sha = run.metadata.get("weights", {}).get("sha256")
    if isinstance(sha, str) and len(sha) == 64:
        return sha
    return hashlib.sha256(tensor_file(run.checkpoint, run.metadata).read_bytes()).hexdigest()


def _stored(path) -> dict:
    import json

    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def run_faithfulness(
    run,
    methods: list[str] | tuple[str, ...] | None = None,
    images: int = FAITHFULNESS_IMAGES,
    seed: int = 0,
    model: nn.Module | None = None,
    fill: str = DEFAULT_FILL,
    steps: int = CURVE_STEPS,
    randomization_images: int = 16,
) -> dict:
    """Each method's faithfulness on ``run``'s own test images (``faithfulness.method_faithfulness``):
    a seeded sample of ``images``, the model's prediction as target, deletion against random order
    (``reference_aucs``) and full weight randomization on the first ``randomization_images``.

    ``methods``: registered names, or ``grad-cam@STAGE`` (default: every registered method). Stored in
    ``RUN_DIR/faithfulness.json`` (atomically) with the checkpoint's weights' SHA-256 and these
    settings; a method already there is read back, a changed checkpoint or setting measures again.
    ``model``: the run's model or a copy of it (the explorer's own).
    """
    import json

    from convlens.storage import atomic_write

    if isinstance(images, bool) or not isinstance(images, int) or images < 2:
        raise ConvlensError(f"images must be an integer of at least 2, got {images!r}", parameter="images")
    keys = list(dict.fromkeys(methods or ATTRIBUTIONS.names()))
    for key in keys:
        ATTRIBUTIONS.get(key.split("@")[0], parameter="methods")
    settings = {
        "images": images,
        "seed": seed,
        "fill": fill,
        "steps": steps,
        "randomization_images": randomization_images,
    }
    path = run.folder / FAITHFULNESS_FILE
    sha = _weights_sha(run)
    stored = _stored(path)
    if stored.get("weights_sha256") != sha or stored.get("settings") != settings:
        stored = {
            "weights_sha256": sha,
            "checkpoint": run.checkpoint.name,
            "settings": settings,
            "methods": {},
        }
    missing = [key for key in keys if key not in stored["methods"]]
    if missing:
        model = run.model if model is None else model
        pixels, _, spec = run.test_data(limit=images, seed=seed)
        targets = _predictions(model, pixels)  # the model's prediction is the class explained
        random, brightness, curves = reference_aucs(
            model, pixels, targets, fill, steps, seed, with_curves=True
        )
        stored["data"] = spec
        stored["reference"] = {
            "random_auc": float(random.mean()),
            "brightness_auc": float(brightness.mean()),
            "random_curve": curves["random"].tolist(),
            "brightness_curve": curves["brightness"].tolist(),
            "fractions": (
                torch.round(torch.linspace(0, pixels[0, 0].numel(), steps + 1)) / pixels[0, 0].numel()
            ).tolist(),
        }
        for key in missing:
            name, _, stage = key.partition("@")
            options = {"stage": stage} if stage else {}
            stored["methods"][key] = method_faithfulness(
                model, pixels, targets, name, random, fill, steps, seed, randomization_images, **options
            )
        try:
            atomic_write(path, json.dumps(stored, indent=1).encode("utf-8"))
        except OSError as error:  # a read-only run folder: measured, not stored
            stored["not_stored"] = str(error)
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
        aucs, _ = deletion_aucs(model, pixels, target, map_orders(attribution.map[None], seed), fill, steps)
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
    aucs, _ = deletion_aucs(
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
    deletion = {k: v for k, v in entry["deletion"].items() if k != "per_image"}
    return {**entry, "deletion": deletion}


def attribution_faithfulness(
    run, image: torch.Tensor, attribution: Attribution, model: nn.Module | None = None, random_aucs=None
) -> dict:
    """This image's verdict (``image_faithfulness``) with the run's for the same method and stage
    (``run_faithfulness``, under ``"run"``; ``None`` with ``run_error`` when the run's test images
    cannot be loaded)."""
    model = run.model if model is None else model
    found = image_faithfulness(model, image, attribution, random_aucs)
    stage = attribution.stage
    if attribution.method == "grad-cam" and stage == grad_cam_default(model):
        stage = None
    key = method_key(attribution.method, stage if attribution.method == "grad-cam" else None)
    try:
        result = run_faithfulness(run, [key], model=model)
    except ConvlensError as error:
        return {**found, "run": None, "run_error": str(error)}
    return {**found, "run": {**run_summary(result["methods"][key]), "fill": result["settings"]["fill"]}}


def grad_cam_default(model: nn.Module) -> str | None:
    from convlens.inspect.attribution import grad_cam_stage

    try:
        return grad_cam_stage(model)
    except ConvlensError:
        return None


def grad_cam_stages(model: nn.Module) -> list[dict]:
    """Every stage Grad-CAM may look at as ``{"stage", "rectified", "default"}``: rectified ones
    (after a ReLU, through poolings) first, then the others, each group in model order."""
    from convlens.inspect.layer_kinds import layer_kind, rectifies

    default, rectified, found = grad_cam_default(model), False, []
    for name, module in model_stages(model):
        kind = layer_kind(module)
        if rectifies(module):
            rectified = True
        elif is_spatial_stage(module) or kind is None or not kind.grad_cam_target:
            rectified = False
        if _grad_cam_target(model, name):
            found.append({"stage": name, "rectified": rectified, "default": name == default})
    return sorted(found, key=lambda s: not s["rectified"])
