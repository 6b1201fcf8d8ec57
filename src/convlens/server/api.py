"""The JSON API of the model itself: runs, model card, test images, predict and activations.

Every number here comes from the core (``convlens.predict``, ``convlens.inspect``,
``convlens.models.summary``) or from the checkpoint; this module only shapes it as JSON.
"""

from __future__ import annotations

import torch
from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from convlens.server.deps import (
    ERRORS,
    UPLOAD_ERRORS,
    ImageRequest,
    get_run,
    get_store,
    image_request,
    refuse_segmentation,
)
from convlens.server.encode import PackedTensor, packed
from convlens.server.runs import LoadedRun, RunStore
from convlens.server.uploads import ModelInput

router = APIRouter(prefix="/api", responses=ERRORS)
MAX_TEST_IMAGES = 200  # per request: thumbnails for the picker, not a data export


class RunSummary(BaseModel):
    id: str
    task: str = Field(description="classification (a class per image) or segmentation (a class per pixel)")
    model: str
    dataset: str
    input_shape: list[int]
    classes: int
    test_accuracy: float | None


class ClassProbability(BaseModel):
    index: int
    name: str = Field(alias="class")
    probability: float


class Prediction(BaseModel):
    source: str = Field(description="where the image came from: an upload or a test image")
    label: int | None = Field(description="true class of a test image, else null")
    input: PackedTensor = Field(description="the model's input (C, H, W), pixels in [0, 1]")
    inverted: bool = Field(description="the input is 1 − the image's pixels (the form's invert)")
    shift: dict | None = Field(
        description="how far the input is from the training images: is_far, looks_inverted, message "
        "and the numbers (convlens.shift.ShiftCheck); null when the checkpoint has no mean/std"
    )
    probabilities: list[float] = Field(description="softmax probability per class")
    top: list[ClassProbability]


class StageOutput(BaseModel):
    name: str
    kind: str = Field(description="layer type, e.g. Conv2d, ReLU, MaxPool2d, Linear, Softmax")
    shape: list[int]
    min: float
    max: float
    output: PackedTensor
    limits: dict = Field(
        description="robust colour limits of the whole stage (convlens.views.maps.limits_json): "
        "low, high, signed (diverging map) or not (sequential), what was clipped"
    )
    channel_limits: list[dict] | None = Field(description="the same per channel; null for a flat stage")


class ActivationsResponse(Prediction):
    stages: list[StageOutput] = Field(description="every stage's output in forward order, then softmax")


def image_json(image: ModelInput) -> dict:
    return {
        "source": image.source,
        "label": image.label,
        "input": packed(image.pixels),
        "inverted": image.inverted,
        "shift": image.shift_json(),
    }


def probabilities_json(probabilities: torch.Tensor, class_names: list[str]) -> dict:
    """Probabilities (classes,) and the top 3, ranked by ``convlens.predict.top_predictions``."""
    from convlens.predict import top_predictions

    top = top_predictions(probabilities.unsqueeze(0), class_names, k=3)[0]
    return {"probabilities": probabilities.tolist(), "top": top}


@router.get("/runs", response_model=list[RunSummary], summary="List the loaded runs")
def list_runs(store: RunStore = Depends(get_store)) -> list[dict]:
    return store.summaries()


@router.get("/registry", summary="What can be chosen by name: attribution methods, attacks, experiments")
def registry() -> dict:
    """Every extension point's registered entries (name, label, help, parameters): the explorer's
    menus are built from this, so a newly registered method appears without editing the page."""
    from convlens.catalog import catalog

    return catalog()


@router.get("/runs/{run_id}", summary="Model card: stages table, training curves, metrics")
def model_info(run: LoadedRun = Depends(get_run)) -> dict:
    """Everything the model card shows: per-stage output shape, parameters and receptive field,
    what each stage's layer is (``layer``: filters, kernel, stride, padding, pooling window,
    features in and out; the page's explanations quote them), the training history per epoch,
    test accuracy, per-class scores and the confusion matrix."""
    return _model_card(run)


def _model_card(run: LoadedRun) -> dict:
    if "card" not in run.cache:  # the card never changes while the server runs
        run.cache["card"] = _build_card(run)
    return run.cache["card"]


def _build_card(run: LoadedRun) -> dict:
    from convlens.inspect import as_dict, layer_facts
    from convlens.models import count_parameters
    from convlens.views.tables import stage_rows

    trained = run.run
    with run.lock:
        layers = layer_facts(trained.model)
    # the card's stage list: the shared rows, with the page's short names for two keys, and what
    # each stage's layer is (filters, kernel, window, features; the page's explanations read it)
    stages = [
        {
            **row,
            "name": row["stage"],
            "shape": row["output_shape"],
            "jump": list(field.jump),
            "layer": as_dict(layer),
        }
        for row, field, layer in zip(stage_rows(run.fields()), run.fields(), layers, strict=True)
    ]
    return {
        "id": run.run_id,
        "task": trained.task,
        "model": trained.metadata["model"],
        "input_shape": list(run.input_shape),
        "class_names": run.class_names,
        "dataset": trained.dataset,
        "normalization": trained.normalization,
        "training": trained.training,
        "versions": trained.versions,
        "parameters": count_parameters(trained.model),
        "stages": stages,
        "history": trained.history,
        "metrics": trained.metrics,
        "validation": trained.validation,
        "diagnostics": trained.diagnostics,
        # the confusion table's colours run from 0 to these limits' high end (views, not the page)
        "confusion_limits": _confusion_limits(trained.metrics.get("confusion")),
    }


def _confusion_limits(confusion) -> dict | None:
    from convlens.views.maps import limits_json
    from convlens.views.plots.colours import count_limits

    return limits_json(count_limits(confusion)) if confusion else None


@router.get("/runs/{run_id}/test-images", summary="Test images of the run's data set, for picking")
def test_images(
    run: LoadedRun = Depends(get_run),
    start: int = Query(0, ge=0, le=100_000_000, description="index of the first image"),
    count: int = Query(24, ge=1, le=MAX_TEST_IMAGES, description="how many images"),
    spread: bool = Query(False, description="evenly spaced over the whole split instead of consecutive"),
) -> dict:
    """``count`` images of the test split from ``start`` (consecutive, or spread over the split,
    which shows every class of a split sorted by class) with their true classes."""
    from convlens.data import to_float

    images, labels = run.test_split()
    total = images.shape[0]
    if spread:
        step = max(1, (total - start) // count)
        indices = list(range(start, total, step))[:count]
    else:
        indices = list(range(start, min(start + count, total)))
    return {
        "total": int(images.shape[0]),
        "images": [
            {
                "index": index,
                **test_label(labels[index], run.class_names),
                "pixels": packed(to_float(images[index])),
            }
            for index in indices
        ],
    }


def test_label(label: torch.Tensor, class_names: list[str]) -> dict:
    """A test image's class, or for a segmentation set (whose label is a mask) none: its mask
    comes with the image's segmentation (``POST .../segment``)."""
    if label.ndim:
        return {"label": None, "class": None}
    return {"label": int(label), "class": class_names[int(label)]}


@router.post(
    "/runs/{run_id}/predict",
    response_model=Prediction,
    responses=UPLOAD_ERRORS,
    summary="Class probabilities of one image",
)
def predict(request: ImageRequest = Depends(image_request)) -> JSONResponse:
    from convlens.predict import predict_probabilities

    run, image = request.run, request.image
    refuse_segmentation(run, f"; POST /api/runs/{run.run_id}/segment")
    with run.lock:  # another request's hooks may sit on the shared model; never run beside them
        probabilities = predict_probabilities(run.model, image.batch)[0]  # (classes,)
    return JSONResponse({**image_json(image), **probabilities_json(probabilities, run.class_names)})


@router.post(
    "/runs/{run_id}/activations",
    response_model=ActivationsResponse,
    responses=UPLOAD_ERRORS,
    summary="Every stage's feature maps and the probabilities of one image",
)
def activations_endpoint(request: ImageRequest = Depends(image_request)) -> JSONResponse:
    """What the network overview draws: one output per stage (channels × H × W for conv stages),
    in forward order, ending with the softmax; values as base64 float32 (see PackedTensor). A
    segmentation run's answer has no softmax stage and empty ``probabilities`` and ``top``."""
    from convlens.inspect import SOFTMAX, activations
    from convlens.views.maps import stage_limits

    run, image = request.run, request.image
    per_pixel = run.run.task == "segmentation"
    with run.lock:
        result = activations(run.model, image.pixels)
    stages = [
        {
            "name": stage.name,
            "kind": stage.kind,
            "shape": list(stage.shape),
            "min": float(stage.output.min()),
            "max": float(stage.output.max()),
            "output": packed(stage.output),
            **stage_limits(stage.output),
        }
        for stage in result.stages
        if not (per_pixel and stage.name == SOFTMAX)
    ]
    body = {
        **image_json(image),
        # a segmentation model has no class for the whole image: its per-pixel answer is POST .../segment
        **(
            {"probabilities": [], "top": []}
            if per_pixel
            else probabilities_json(result.probabilities, run.class_names)
        ),
        "stages": stages,
    }
    return JSONResponse(body)
