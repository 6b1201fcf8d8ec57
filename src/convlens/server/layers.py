"""What each layer learned: a stage's filters, feature-visualization images per channel, and the
test images that drive a channel hardest — all from ``convlens.inspect``, cached per run
because the weights never change while the server runs.

A stage affine in the pixels (conv1) also gets each channel's unit optimum: the whole-image
optimum of such a stage is a nearly flat square (every pixel that all the kernel's taps reach
pulls the same way), while one unit's optimum inside its receptive field is the kernel's sign
pattern — what the page shows.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from convlens.errors import ConvlensError
from convlens.server.deps import ERRORS, get_run
from convlens.server.encode import packed
from convlens.server.runs import LoadedRun

router = APIRouter(prefix="/api", responses=ERRORS)
FEATURE_STEPS = 128  # enough for a recognisable pattern on 28-pixel inputs in about a second
MAX_CHANNELS = 64  # one request optimizes at most this many channels at once
TOP_K = 9
STAGE_NAME = {"minLength": 1}  # which names: the run's own, so no schema can list them (a 400 does)


def _cached(run: LoadedRun, key: tuple, compute, slow: bool = False):
    """``compute()`` once per run and key; ``slow``: under the run's slow lock (own model copy)."""
    if key not in run.cache:
        with run.slow_lock if slow else run.lock:
            if key not in run.cache:
                run.cache[key] = compute()
    return run.cache[key]


def _spatial_stage(run: LoadedRun, stage: str) -> None:
    """Feature visualization and top images need a stage with channels: not the input's
    normalization (its role, ``convlens.inspect.layer_kinds``) nor a flat stage or softmax."""
    from convlens.inspect import SOFTMAX, find_stage, stage_traits

    shape = run.stage_field(stage).output_shape  # an unknown name lists the valid ones
    module = None if stage == SOFTMAX else find_stage(run.model, stage)
    if len(shape) != 3 or stage_traits(module, shape).role == "normalize":
        raise ConvlensError(
            f"stage {stage!r} has no channels to visualize; choose a conv, relu or pool stage"
        )


@router.get("/runs/{run_id}/filters", summary="The kernels of a stage's convolution(s)")
def filters(
    run: LoadedRun = Depends(get_run),
    stage: str = Query(
        ...,
        json_schema_extra=STAGE_NAME,
        description="one of the run's stages (GET /api/runs/{run_id}): a stage that is or contains a convolution, e.g. conv1",
    ),
) -> JSONResponse:
    """Every kernel as (C_out, C_in/groups, kH, kW), with the bias and geometry."""
    from convlens.inspect import conv_filters
    from convlens.views.maps import map_limits

    found = _cached(run, ("filters", stage), lambda: conv_filters(run.model, stage))
    return JSONResponse(
        {
            "stage": stage,
            "convolutions": [
                {
                    "name": conv.stage,
                    "weight": packed(conv.weight),
                    "bias": conv.bias.tolist() if conv.bias is not None else None,
                    "stride": list(conv.stride),
                    "padding": conv.padding if isinstance(conv.padding, str) else list(conv.padding),
                    "limits": map_limits(conv.weight, signed=True),  # weights: diverging around 0
                }
                for conv in found
            ],
        }
    )


@router.get("/runs/{run_id}/features", summary="Feature visualization: an image per channel")
def features(
    run: LoadedRun = Depends(get_run),
    stage: str = Query(
        ...,
        json_schema_extra=STAGE_NAME,
        description="one of the run's stages (GET /api/runs/{run_id}): a stage with channels, e.g. conv2 or relu2",
    ),
) -> JSONResponse:
    """For each channel of ``stage`` (up to 64), an input optimized to excite it most
    (activation maximization), and the mean activation it reaches. A stage affine in the pixels
    (``closed_form``) adds ``units``: per channel, its centre unit's exact optimum cropped to the
    unit's receptive field (``window``, end-exclusive) and the value it reaches; otherwise null."""
    from convlens.inspect import feature_visualization

    _spatial_stage(run, stage)

    def compute():
        channels = list(range(min(MAX_CHANNELS, run.model_channels(stage))))
        try:  # each channel's best test image is one start: the optimum never ends below it
            images = run.test_split()[0]
        except ConvlensError:
            images = None
        return feature_visualization(run.slow_model(), stage, channels, steps=FEATURE_STEPS, images=images)

    result = _cached(run, ("features", stage), compute, slow=True)
    units = None
    if result.closed_form:  # exact and closed form: one gradient per channel, no search
        units = _cached(
            run, ("unit-optima", stage), lambda: _unit_optima(run, stage, result.channels), slow=True
        )
    return JSONResponse(
        {
            "stage": stage,
            "channels": result.channels,
            "steps": result.steps,
            "closed_form": result.closed_form,
            "images": packed(result.images),
            "activation": result.activation.tolist(),
            "units": units,
        }
    )


def _unit_optima(run: LoadedRun, stage: str, channels: list[int]) -> list[dict]:
    """Each channel's centre-unit optimum cropped to its receptive field, as the page draws it."""
    from convlens.inspect import unit_optimum

    model = run.slow_model()
    found = [unit_optimum(model, stage, channel) for channel in channels]
    return [
        {
            "channel": optimum.channel,
            "cell": list(optimum.cell),
            "window": list(optimum.window),  # (top, left, bottom, right) input pixels, end-exclusive
            "activation": optimum.activation,
            "crop": packed(optimum.crop),
        }
        for optimum in found
    ]


@router.get("/runs/{run_id}/top-images", summary="The test images that excite one channel most")
def top_images(
    run: LoadedRun = Depends(get_run),
    stage: str = Query(
        ...,
        json_schema_extra=STAGE_NAME,
        description="one of the run's stages (GET /api/runs/{run_id}): a stage with channels",
    ),
    channel: int = Query(..., ge=0, le=1_000_000, description="the channel"),
) -> JSONResponse:
    """The 9 test images with the highest mean activation of the channel, strongest first."""
    from convlens.data import to_float
    from convlens.inspect import top_activating_images
    from convlens.server.api import test_label

    _spatial_stage(run, stage)
    count = run.model_channels(stage)
    if channel >= count:
        raise ConvlensError(f"channel must be 0..{count - 1} for stage {stage!r}, got {channel}")
    images, labels = run.test_split()
    result = _cached(run, ("top", stage), lambda: top_activating_images(run.model, images, stage, k=TOP_K))
    row = result.channels.index(channel)
    indices = result.indices[row].tolist()
    dead = result.dead_label(row)  # a dead channel has no top images worth showing
    if dead:
        indices = []
    return JSONResponse(
        {
            "stage": stage,
            "channel": channel,
            "dead": dead,
            "images": [
                {
                    "index": index,
                    **test_label(labels[index], run.class_names),  # a mask: no class
                    "score": float(score),
                    "pixels": packed(to_float(images[index])),
                }
                for index, score in zip(indices, result.scores[row].tolist(), strict=False)
            ],
        }
    )
