"""Explanation endpoints: cell arithmetic, attributions and attacks on one image.

Each endpoint calls one core function (``convlens.inspect`` or ``convlens.attacks``) and
returns its result as JSON; nothing is computed here that the core does not compute.
"""

from __future__ import annotations

import contextlib
import re

from fastapi import APIRouter, Depends, Form
from fastapi.responses import JSONResponse

from convlens.errors import ConvlensError
from convlens.inspect import as_dict
from convlens.server.api import image_json, probabilities_json
from convlens.server.deps import UPLOAD_ERRORS, ImageRequest, get_run, image_request, refuse_segmentation
from convlens.server.encode import packed
from convlens.server.runs import LoadedRun

router = APIRouter(prefix="/api", responses=UPLOAD_ERRORS)

MAX_PGD_STEPS = 100  # a page request, not a benchmark: keeps one click under a second
MAX_INDEX = 1_000_000  # no model has this many channels, rows or classes: the exact range is checked later


@router.post("/runs/{run_id}/arithmetic", summary="The arithmetic of one feature-map cell")
def arithmetic(
    request: ImageRequest = Depends(image_request),
    stage: str = Form(
        ...,
        description="one of the run's stage names (GET /api/runs/{run_id}), e.g. conv1, relu1, pool1, fc, "
        "softmax",
        json_schema_extra={"minLength": 1},
    ),
    channel: int = Form(
        0, ge=0, le=MAX_INDEX, description="output channel (or unit / class for flat stages)"
    ),
    row: int = Form(0, ge=0, le=MAX_INDEX, description="cell row (0 for flat stages)"),
    col: int = Form(0, ge=0, le=MAX_INDEX, description="cell column (0 for flat stages)"),
) -> JSONResponse:
    """Recomputes output cell (channel, row, col) of ``stage`` by hand — input patch, kernel,
    products, sums, bias (or window max, normalization, weighted sum, softmax) — next to the
    layer's own output, plus the input region the cell sees (its receptive field). ``steps``
    describes the same arithmetic for display (``convlens.views.arithmetic``)."""
    from convlens.inspect import cell_arithmetic
    from convlens.views.arithmetic import arithmetic_steps

    run, image = request.run, request.image
    with run.lock:
        cell = cell_arithmetic(run.model, image.pixels, stage, channel, row, col)
    field = run.stage_field(stage)
    _, height, width = run.input_shape
    top, bottom, left, right = field.cell_region(channel, row, col, (height, width))
    region = {"top": top, "bottom": bottom, "left": left, "right": right, "whole_image": field.whole_image}
    return JSONResponse(
        {
            "cell": {"type": type(cell).__name__, **as_dict(cell)},
            "steps": arithmetic_steps(cell, run.class_names),
            "receptive_field": region,
            **image_json(image),
        }
    )


def _attribution_json(result) -> dict:
    """One ``Attribution`` as JSON: the map in [0, 1] with its colour limits, and its verdict on this
    image and this run (``faithfulness``: see ``convlens.inspect.run_faithfulness.attribution_faithfulness``)."""
    from convlens.views.maps import map_limits

    return {
        "method": result.method,
        "target": result.target,
        "stage": result.stage,
        "probability": result.probability,
        "map": packed(result.map),
        "limits": map_limits(result.map, signed=False),  # importance: a magnitude
        "faithfulness": result.faithfulness,
    }


def _judged(run: LoadedRun, model, pixels, results: list) -> None:
    """Set each result's ``faithfulness``: the run-level numbers measured once for all of them (on
    first need, then read from the run folder), this image's random orders once per class."""
    from convlens.inspect.run_faithfulness import (
        attribution_faithfulness,
        image_reference,
        result_key,
        run_faithfulness,
    )

    keys = [result_key(model, r) for r in results]
    with contextlib.suppress(ConvlensError):  # each result says why below (e.g. no test images)
        run_faithfulness(run.run, keys, model=model)
    references = {}
    for result in results:
        try:
            if result.target not in references:
                references[result.target] = image_reference(model, pixels, result.target)
            result.faithfulness = attribution_faithfulness(
                run.run, pixels, result, model=model, random_aucs=references[result.target]
            )
        except ConvlensError as error:
            result.faithfulness = {"verdict": None, "error": str(error)}


def _registered(registry: str) -> list[str]:
    if registry == "ATTACKS":
        from convlens.attacks import ATTACKS as entries
    else:
        from convlens.inspect import ATTRIBUTIONS as entries
    return list(entries.names())


def _names(registry: str):
    """The schema's enum of a registry's names, read when the schema is made (after plugins
    registered theirs), not at import; the endpoint's own 400 lists them too."""
    return lambda schema: schema.update(enum=_registered(registry))


def _method_lists(schema: dict) -> None:
    """``methods``: each field one name or several joined by commas (spaces and empty parts
    are skipped, as the endpoint does)."""
    name = "|".join(re.escape(n) for n in _registered("ATTRIBUTIONS"))
    part = rf"\s*({name})?\s*"
    schema["items"] = {"type": "string", "pattern": f"^{part}(,{part})*$"}


TARGET = "class to explain [default: the predicted class]"
STAGE = "Grad-CAM only: the stage [default: last rectified]"


@router.post("/runs/{run_id}/attribution", summary="Where the model looks: one attribution method")
def attribution(
    request: ImageRequest = Depends(image_request),
    method: str = Form(
        "grad-cam",
        description="a registered attribution method (GET /api/registry)",
        json_schema_extra=_names("ATTRIBUTIONS"),
    ),
    target: int = Form(None, ge=0, le=MAX_INDEX, description=TARGET),
    stage: str = Form(None, description=STAGE),
) -> JSONResponse:
    """A heat map (H, W) in [0, 1] over the input: which pixels raise the target class's score."""
    from convlens.inspect import ATTRIBUTIONS

    run, image = request.run, request.image
    entry = ATTRIBUTIONS.get(method)
    target = run.check_class(target)
    # integrated gradients and occlusion take a while: on the run's own copy, so predictions and
    # activations of other requests do not wait; options a method does not take are left out
    with run.slow_lock:
        model = run.slow_model()
        result = entry.call(model, image.pixels, target=target, stage=stage or None)
        _judged(run, model, image.pixels, [result])
    return JSONResponse({**_attribution_json(result), **image_json(image)})


@router.post("/runs/{run_id}/attributions", summary="Where the model looks: several methods, one image")
def attributions(
    request: ImageRequest = Depends(image_request),
    methods: list[str] = Form(
        None,
        description="registered attribution methods (GET /api/registry), one field each or comma-separated "
        "[default: every one]",
        json_schema_extra=_method_lists,
    ),
    target: int = Form(None, ge=0, le=MAX_INDEX, description=TARGET),
    stage: str = Form(None, description=STAGE),
) -> JSONResponse:
    """The maps of several methods for one upload, the input sent back once: ``attributions``
    maps each method to its map (as ``/attribution`` answers) or to ``{"error"}`` when that
    method cannot explain this model (e.g. Grad-CAM at a stage without a feature map)."""
    from convlens.inspect import ATTRIBUTIONS

    run, image = request.run, request.image
    names = list(dict.fromkeys(n.strip() for field in methods or [] for n in field.split(",") if n.strip()))
    entries = [ATTRIBUTIONS.get(name, parameter="methods") for name in names or ATTRIBUTIONS.names()]
    target = run.check_class(target)
    answers, results = {}, []
    with run.slow_lock:  # one lock for all of them: the run's own copy, as for one method
        model = run.slow_model()
        for entry in entries:
            try:
                results.append(entry.call(model, image.pixels, target=target, stage=stage or None))
            except ConvlensError as error:
                answers[entry.name] = {"method": entry.name, "error": str(error)}
        _judged(run, model, image.pixels, results)
    answers.update({result.method: _attribution_json(result) for result in results})
    return JSONResponse({**image_json(image), "attributions": {e.name: answers[e.name] for e in entries}})


@router.get("/runs/{run_id}/grad-cam-stages", summary="The stages Grad-CAM may look at, rectified first")
def grad_cam_stage_list(run: LoadedRun = Depends(get_run)) -> list[dict]:
    """Every stage Grad-CAM may look at, as ``{"stage", "rectified", "default"}``: the rectified ones
    (after a ReLU) first; Grad-CAM before a ReLU weighs evidence the network throws away."""
    from convlens.inspect.cam_stages import grad_cam_stages

    with run.lock:
        return grad_cam_stages(run.model)


@router.get(
    "/runs/{run_id}/default-attribution", summary="The attribution method measured most faithful on this run"
)
def default_attribution(run: LoadedRun = Depends(get_run)) -> dict:
    """``{"method", "stage", "passes", "verdict", "drop", "interval", "vs_brightness", "why", ...}``
    (``convlens.inspect.method_choice.default_method``): the most faithful method that passes on the
    run's own test images, or, when none passes, the most faithful one marked as not passing. The
    first request on a checkpoint measures every method (15 CPU-seconds on a mnist5k convnet; a costly
    model is measured on fewer test images, ``faithfulness_budget``; the page says so while it waits);
    later ones read the run's faithfulness.json."""
    from convlens.inspect.method_choice import default_method

    refuse_segmentation(run, f": its attribution is one pixel's Grad-CAM, POST /api/runs/{run.run_id}/pixel")
    with run.slow_lock:  # measuring takes a while: on the run's own copy, as the maps are
        return default_method(run.run, model=run.slow_model())


@router.post("/runs/{run_id}/attack", summary="Fool it: FGSM or PGD on one image")
def attack_endpoint(
    request: ImageRequest = Depends(image_request),
    method: str = Form(
        "fgsm", description="a registered attack (GET /api/registry)", json_schema_extra=_names("ATTACKS")
    ),
    eps: float = Form(
        0.1, ge=0, le=1, allow_inf_nan=False, description="L-infinity budget in pixel units, 0..1"
    ),
    steps: int = Form(10, ge=1, le=MAX_PGD_STEPS, description="PGD steps"),
    target: int = Form(
        None, ge=0, le=MAX_INDEX, description="class to push towards [default: away from the label]"
    ),
) -> JSONResponse:
    """The original, the perturbation (adversarial − original, within ±eps), the adversarial
    image and the class probabilities before and after. The label attacked is the test image's
    true class, or for a drawing or upload the model's own prediction."""
    from convlens.attacks import ATTACKS, attack_image
    from convlens.views.maps import bound_limits

    run, image = request.run, request.image
    ATTACKS.get(method)
    target = run.check_class(target)
    if not 1 <= steps <= MAX_PGD_STEPS:
        raise ConvlensError(f"steps must be 1..{MAX_PGD_STEPS}, got {steps}")
    with run.slow_lock:  # a PGD attack takes a while: on the run's own copy of the model
        found = attack_image(run.slow_model(), image.batch, image.label, method, eps, steps, target)
    result = found.result
    return JSONResponse(
        {
            **image_json(image),
            "summary": result.summary(),
            "attacked_label": found.label,
            "adversarial": packed(result.adversarial_images[0]),
            "perturbation": packed(result.perturbations[0]),
            "perturbation_limits": bound_limits(eps if eps > 0 else 1.0),  # ±ε at full colour
            "clean": probabilities_json(found.clean, run.class_names),
            "attacked": probabilities_json(found.attacked, run.class_names),
        }
    )
