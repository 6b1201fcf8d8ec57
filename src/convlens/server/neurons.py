"""The neuron panel's endpoint: one channel of one stage on the current input, from every side.

``POST /api/runs/{run_id}/neuron`` takes the same image form as the other views of the current
input (``image`` or ``test_index``, ``invert``) plus ``stage`` and ``channel``, and answers
``convlens.views.neuron_record`` of ``convlens.inspect.neurons.neuron`` (docs/explorer.md,
"Neuron panel"). The scan of the test images for a stage's top patches is kept per run and stage,
so a click on another channel of the same stage only crops and ablates; each channel's unit
optimum is kept too.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form
from fastapi.responses import JSONResponse

from convlens.errors import ConvlensError
from convlens.server.api import image_json
from convlens.server.deps import UPLOAD_ERRORS, ImageRequest, image_request
from convlens.server.encode import packed

router = APIRouter(prefix="/api", responses=UPLOAD_ERRORS)
MAX_INDEX = 1_000_000  # no stage has this many channels: the run's own count is checked later


def _peaks(run, stage: str, images):
    """The stage's scan of the test images, once per run and stage."""
    from convlens.inspect.neuron_patches import stage_peaks

    key = ("neuron-peaks", stage)
    if key not in run.cache:
        run.cache[key] = stage_peaks(run.model, images, stage)
    return run.cache[key]


def _optimum(run, stage: str, channel: int, images):
    """What the channel's centre unit responds to most: a gradient search on deeper stages, so it
    runs once per run, stage and channel, on the run's own model copy (``slow_model``)."""
    from convlens.inspect.unit_optimum import unit_optimum

    key = ("neuron-optimum", stage, channel)
    if key not in run.cache:
        with run.slow_lock:
            if key not in run.cache:
                run.cache[key] = unit_optimum(run.slow_model(), stage, channel, images=images)
    return run.cache[key]


@router.post("/runs/{run_id}/neuron", summary="One channel of a stage: kernel, map, patches, ablation")
def neuron_panel(
    request: ImageRequest = Depends(image_request),
    stage: str = Form(
        ...,
        description="one of the run's stages with feature maps (GET /api/runs/{run_id}), e.g. conv1, "
        "relu2, pool2",
        json_schema_extra={"minLength": 1},
    ),
    channel: int = Form(..., ge=0, le=MAX_INDEX, description="the channel of that stage"),
) -> JSONResponse:
    """The channel's kernel (with values) and feeders, its feature map on the image and the
    arithmetic of its strongest cell, its top and bottom test-image patches cropped to the
    receptive field, whether it is dead, and what zeroing it does to the prediction (on the
    image and over the test images) with its Grad-CAM share, and the optimum of its centre unit
    cropped to its receptive field. Keys: docs/explorer.md."""
    from convlens.inspect.neurons import check_neuron, neuron
    from convlens.views.neuron_record import neuron_record

    run, image = request.run, request.image
    if run.run.task == "segmentation":
        raise ConvlensError(
            f"run {run.run_id!r} is a segmentation model (a class per pixel): the neuron panel "
            "ablates one class per image"
        )
    try:
        images, labels = run.test_split()
    except ConvlensError:  # a run whose data is gone still shows everything but the patches
        images = labels = None
    with run.lock:  # hooks sit on the shared model while it runs
        check_neuron(run.model, stage, channel)
        peaks = _peaks(run, stage, images) if images is not None else None
        found = neuron(run.model, stage, channel, image.pixels, images, labels, peaks=peaks)
    found.optimum = _optimum(run, stage, channel, images)
    return JSONResponse({**neuron_record(found, run.class_names, labels, encode=packed), **image_json(image)})
