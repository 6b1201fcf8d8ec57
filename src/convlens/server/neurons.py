"""The neuron panel's endpoints: one channel of one stage on the current input, from every side.

``POST /api/runs/{run_id}/neuron`` takes the same image form as the other views of the current
input (``image`` or ``test_index``, ``invert``) plus ``stage`` and ``channel``, and answers
``convlens.views.neuron_record`` of ``convlens.inspect.neurons.neuron`` (docs/explorer.md,
"Neuron panel"). The scan of the test images for a stage's top patches is kept per run and stage,
so a click on another channel of the same stage only crops and ablates.

The two pictures of what the channel responds to (its centre unit's optimum and the regularised
visualization of the whole channel) do not depend on the input and take gradient searches, so
they are computed once per run, stage and channel on the run's own model copy, and the panel asks
for them apart (``GET .../neuron-pictures``, with ``pictures=false`` on the panel's request): the
rest of the panel shows while they are searched. ``POST .../neuron-ranking`` ranks a stage's
channels by their Grad-CAM contribution (the "Where it looks" view's strongest channels).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Query
from fastapi.responses import JSONResponse

from convlens.errors import ConvlensError
from convlens.server.api import image_json
from convlens.server.deps import (
    ERRORS,
    UPLOAD_ERRORS,
    ImageRequest,
    get_run,
    image_request,
    refuse_segmentation,
)
from convlens.server.encode import packed
from convlens.server.runs import LoadedRun

router = APIRouter(prefix="/api")
MAX_INDEX = 1_000_000  # no stage has this many channels: the run's own count is checked later
VISUALIZATION_STEPS = 256  # regularised steps: a legible picture on 28-pixel inputs
STAGE = "one of the run's stages with feature maps (GET /api/runs/{run_id}), e.g. conv1, relu2, pool2"


def _classifier(run: LoadedRun) -> None:
    refuse_segmentation(run, ": the neuron panel ablates one class per image")


def _test_split(run: LoadedRun):
    """The run's test images and labels; (None, None) for a run whose data is gone (it still shows
    everything but the patches and the best test image)."""
    try:
        return run.test_split()
    except ConvlensError:
        return None, None


def _peaks(run, stage: str, images):
    """The stage's scan of the test images, once per run and stage."""
    from convlens.inspect.neuron_patches import stage_peaks

    key = ("neuron-peaks", stage)
    if key not in run.cache:
        run.cache[key] = stage_peaks(run.model, images, stage)
    return run.cache[key]


def _slow_once(run: LoadedRun, key: tuple, compute):
    """``compute(model)`` once per run and key, on the run's own model copy (``slow_model``)."""
    if key not in run.cache:
        with run.slow_lock:
            if key not in run.cache:
                run.cache[key] = compute(run.slow_model())
    return run.cache[key]


def _pictures(run: LoadedRun, stage: str, channel: int, images):
    """(unit optimum, regularised visualization) of the channel: gradient searches on deeper
    stages, so each runs once per run, stage and channel."""
    from convlens.inspect.featureviz import regularised_visualization
    from convlens.inspect.unit_optimum import unit_optimum

    optimum = _slow_once(
        run,
        ("neuron-optimum", stage, channel),
        lambda model: unit_optimum(model, stage, channel, images=images),
    )
    visualization = _slow_once(
        run,
        ("neuron-visualization", stage, channel),
        lambda model: regularised_visualization(
            model, stage, channel, images=images, steps=VISUALIZATION_STEPS
        ),
    )
    return optimum, visualization


@router.post(
    "/runs/{run_id}/neuron",
    summary="One channel of a stage: kernel, map, patches, ablation",
    responses=UPLOAD_ERRORS,
)
def neuron_panel(
    request: ImageRequest = Depends(image_request),
    stage: str = Form(..., description=STAGE, json_schema_extra={"minLength": 1}),
    channel: int = Form(..., ge=0, le=MAX_INDEX, description="the channel of that stage"),
    pictures: bool = Form(
        True,
        description="also the unit optimum and the regularised channel visualization (a search the "
        "first time each channel is asked; false: both null, fetch them from GET .../neuron-pictures)",
    ),
) -> JSONResponse:
    """The channel's kernel (with values) and feeders, its feature map on the image and the
    arithmetic of its strongest cell, its top and bottom test-image patches cropped to the
    receptive field, whether it is dead, and what zeroing it does to the prediction (on the
    image and over the test images) with its Grad-CAM share; with ``pictures``, the optimum of
    its centre unit cropped to its receptive field and the regularised visualization of the
    whole channel. Keys: docs/explorer.md."""
    from convlens.inspect.neurons import check_neuron, neuron
    from convlens.views.neuron_record import neuron_record

    run, image = request.run, request.image
    _classifier(run)
    images, labels = _test_split(run)
    with run.lock:  # hooks sit on the shared model while it runs
        check_neuron(run.model, stage, channel)
        peaks = _peaks(run, stage, images) if images is not None else None
        found = neuron(run.model, stage, channel, image.pixels, images, labels, peaks=peaks)
    if pictures:
        found.optimum, found.visualization = _pictures(run, stage, channel, images)
    return JSONResponse({**neuron_record(found, run.class_names, labels, encode=packed), **image_json(image)})


@router.get(
    "/runs/{run_id}/neuron-pictures",
    summary="What one channel responds to: its unit optimum and regularised visualization",
    responses=ERRORS,
)
def neuron_pictures(
    run: LoadedRun = Depends(get_run),
    stage: str = Query(..., description=STAGE, json_schema_extra={"minLength": 1}),
    channel: int = Query(..., ge=0, le=MAX_INDEX, description="the channel of that stage"),
) -> JSONResponse:
    """The input that drives the channel's centre unit hardest (cropped to its receptive field)
    and the regularised visualization of the whole channel, each with the best test image's
    activation beside its own; the same ``optimum`` and ``visualization`` keys as POST .../neuron."""
    from convlens.inspect.neurons import check_neuron
    from convlens.views.neuron_record import optimum_record, visualization_record

    _classifier(run)
    with run.lock:
        check_neuron(run.model, stage, channel)
    optimum, visualization = _pictures(run, stage, channel, _test_split(run)[0])
    return JSONResponse(
        {
            "stage": stage,
            "channel": channel,
            "optimum": optimum_record(optimum, packed),
            "visualization": visualization_record(visualization, packed),
        }
    )


@router.post(
    "/runs/{run_id}/neuron-ranking",
    summary="A stage's channels ranked by their Grad-CAM contribution",
    responses=UPLOAD_ERRORS,
)
def neuron_ranking(
    request: ImageRequest = Depends(image_request),
    stage: str = Form(..., description=STAGE, json_schema_extra={"minLength": 1}),
    target: int = Form(
        None, ge=0, le=MAX_INDEX, description="the class Grad-CAM explains [default: the predicted one]"
    ),
) -> JSONResponse:
    """Every channel of ``stage`` on the image, largest Grad-CAM contribution for the class first:
    ``{channel, weight, contribution, share}`` (weight: the mean gradient of the class's logit
    over the map; contribution: weight × the channel's mean activation; share: contribution over
    ``map_mean``, the Grad-CAM map's mean before its ReLU, null when that is <= 0)."""
    from convlens.inspect.channel_ranking import grad_cam_ranking
    from convlens.views.neuron_record import grad_cam_ranking_record

    run, image = request.run, request.image
    _classifier(run)
    target = run.check_class(target)
    with run.lock:  # hooks sit on the shared model while it runs
        ranking = grad_cam_ranking(run.model, stage, image.pixels, target)
    return JSONResponse(
        {**grad_cam_ranking_record(ranking, run.class_names), "source": image.source, "label": image.label}
    )
