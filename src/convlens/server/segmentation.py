"""Segmentation endpoints: a class per pixel of one image, why one pixel got its class, portrait mode.

A segmentation model answers with a map, not a single class, so the classification endpoints'
softmax bars, attacks and Grad-CAM do not apply to it; these endpoints are what the Segment view
asks instead. Each calls the library (``convlens.inspect.pixels``, ``convlens.inspect.portrait``,
``convlens.views.segmentation_colours``) and only shapes its answer as JSON: maps travel as
packed float32 (exact, as feature maps do), pictures meant to be looked at (the overlay, the
masks in their class colours) as PNG data URLs the library drew.
"""

from __future__ import annotations

import base64

import torch
from fastapi import APIRouter, Depends, Form
from fastapi.responses import JSONResponse

from convlens.errors import ConvlensError
from convlens.server.api import image_json
from convlens.server.deps import UPLOAD_ERRORS, ImageRequest, image_request
from convlens.server.encode import packed
from convlens.server.runs import LoadedRun

router = APIRouter(prefix="/api", responses=UPLOAD_ERRORS)

MAX_INDEX = 1_000_000  # a sanity bound; the image's own height, width and class count are checked later
MAX_RADIUS = 200.0  # convlens.inspect.portrait.MAX_RADIUS: beyond it the background is one flat colour
EFFECTS = ["blur", "grey"]  # convlens.inspect.portrait.EFFECTS


def _png_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _unit_limits() -> dict:
    """Colour limits of a map that is in [0, 1] by definition (a probability, the confidence,
    the scaled entropy): fixed, so two images' maps read alike and 0.5 is always mid-scale."""
    from convlens.views.maps import limits_json
    from convlens.views.plots.colours import MAGNITUDE, Limits

    return limits_json(Limits(0.0, 1.0, MAGNITUDE))


def _segmentation_run(run: LoadedRun) -> None:
    """Refuse a classifier with the one-line reason (the library says it too, later and longer)."""
    if run.run.task != "segmentation":
        raise ConvlensError(
            f"run {run.run_id!r} is a {run.run.task} model (a class per image); these endpoints need a "
            "segmentation run (a class per pixel)"
        )


def _segment(run: LoadedRun, pixels: torch.Tensor):
    from convlens.inspect.pixels import segment

    with run.lock:  # hooks of another request may sit on the shared model
        return segment(run.model, pixels, run.class_names)


def _true_mask(request: ImageRequest) -> torch.Tensor | None:
    """The test image's own mask (255: no class), or None for an upload."""
    if request.test_index is None:
        return None
    _, masks = request.run.test_split()
    mask = masks[request.test_index]
    return mask if mask.ndim == 2 else None


@router.post("/runs/{run_id}/segment", summary="Segmentation: a class per pixel of one image")
def segment_endpoint(request: ImageRequest = Depends(image_request)) -> JSONResponse:
    """Every pixel's class probabilities (``probabilities``, K × H × W), the mask (argmax),
    ``confidence`` (the winning probability) and ``uncertainty`` (entropy / log K), all in [0, 1]
    with their colour ``limits``; each class's share of the pixels; the image with the mask laid
    over it and the mask itself in the class colours (``palette``, class 0 black) as PNG; and for
    a test image its true mask (``truth``; 255 = no class, drawn white)."""
    from convlens.views.segmentation_colours import class_palette, mask_png, overlay, rgb_png

    run, image = request.run, request.image
    _segmentation_run(run)
    maps = _segment(run, image.pixels)
    classes = len(run.class_names)
    truth = _true_mask(request)
    body = {
        **image_json(image),
        "classes": run.class_names,
        "palette": class_palette(classes).tolist(),
        "mask": packed(maps.mask),
        "mask_png": _png_url(mask_png(maps.mask, classes)),
        "overlay_png": _png_url(rgb_png(overlay(image.pixels, maps.mask, k=classes))),
        "probabilities": packed(maps.probabilities),
        "confidence": packed(maps.confidence),
        "uncertainty": packed(maps.uncertainty),
        "limits": _unit_limits(),
        "shares": maps.shares,
        "truth": None
        if truth is None
        else {
            "mask": packed(truth),
            "mask_png": _png_url(mask_png(truth, classes)),
            "overlay_png": _png_url(rgb_png(overlay(image.pixels, truth.long(), k=classes))),
        },
    }
    return JSONResponse(body)


@router.post("/runs/{run_id}/pixel", summary="Segmentation: why one pixel got its class")
def pixel_endpoint(
    request: ImageRequest = Depends(image_request),
    row: int = Form(..., ge=0, le=MAX_INDEX, description="the pixel's row (below the image's height)"),
    col: int = Form(..., ge=0, le=MAX_INDEX, description="the pixel's column (below the image's width)"),
    target: int = Form(
        None, ge=0, le=MAX_INDEX, description="class Grad-CAM explains [default: the pixel's predicted class]"
    ),
) -> JSONResponse:
    """The class probabilities at (``row``, ``col``), the window of every earlier stage's map that
    can change that pixel (``receptive_fields``: through the skip connections and the upsampling),
    and a Grad-CAM of that pixel's ``target`` logit over the input (``grad_cam``, H × W in [0, 1],
    at ``stage``: the last rectified stage before the output)."""
    from convlens.inspect.pixels import explain_pixel, output_stage

    run, image = request.run, request.image
    _segmentation_run(run)
    target = run.check_class(target)
    with run.lock:
        found = explain_pixel(run.model, image.pixels, row, col, target=target)
    body = {
        **image_json(image),
        "row": found.row,
        "col": found.col,
        "probabilities": found.probabilities.tolist(),
        "classes": run.class_names,
        "predicted": found.predicted,
        "target": found.target,
        "receptive_fields": found.receptive_fields,
        "grad_cam": packed(found.grad_cam),
        "grad_cam_limits": _unit_limits(),
        "stage": found.stage,
        "output_stage": output_stage(run.model),  # the stage whose cell (target, row, col) this pixel is
    }
    return JSONResponse(body)


@router.post("/runs/{run_id}/portrait", summary="Segmentation: portrait mode on one image")
def portrait_endpoint(
    request: ImageRequest = Depends(image_request),
    effect: str = Form(
        "blur",
        description="blur: a Gaussian blur of the background; grey: the background grey and darker",
        json_schema_extra={"enum": EFFECTS},
    ),
    radius: float = Form(
        6.0,
        gt=0,
        le=MAX_RADIUS,
        allow_inf_nan=False,
        description="blur only: the Gaussian's standard deviation in pixels of the model's input",
    ),
) -> JSONResponse:
    """The image with every pixel the model calls background (class 0) blurred or greyed, and every
    other pixel exactly as it was (``portrait``, C × H × W in [0, 1]); ``background_share``: the
    share of pixels changed (the library's ``shares`` of class 0)."""
    from convlens.inspect.portrait import portrait_effect

    run, image = request.run, request.image
    _segmentation_run(run)
    maps = _segment(run, image.pixels)
    foreground = maps.mask != 0
    result = portrait_effect(image.pixels, foreground, effect=effect, radius=radius)
    background = next((s for s in maps.shares if s.get("index", 0) == 0), None)
    body = {
        **image_json(image),
        "effect": effect,
        "radius": radius,
        "portrait": packed(result),
        "background_share": background["share"] if background else None,
    }
    return JSONResponse(body)
