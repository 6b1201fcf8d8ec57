"""The Network view's wiring: which cells of the earlier stages each feature-map cell reads.

Clicking a cell highlights its window in the stage before (the kernel or pooling window), and
the wider windows further back down to the input (its receptive field). The windows come from
``ReceptiveField.windows_in`` (convlens.inspect), per output row and per output column, so
the page only looks them up; they never change while the server runs, so they are cached.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from convlens.server.deps import ERRORS, get_run
from convlens.server.runs import LoadedRun

router = APIRouter(prefix="/api", responses=ERRORS)


def _is_map(field) -> bool:
    return len(field.output_shape) == 3 and not field.whole_image


def _wiring(run: LoadedRun) -> dict:
    from convlens.inspect import SOFTMAX, find_stage, stage_inputs, stage_traits, stage_windows

    fields = run.fields()
    reads = stage_inputs(run.model) or {}  # a model traced to a graph names each stage's inputs
    through_branches = stage_windows(run.model) if reads else {}
    stages = []
    for index, field in enumerate(fields):
        module = None if field.stage == SOFTMAX else find_stage(run.model, field.stage)
        windows = {}
        if _is_map(field) and reads:  # a graph: only the maps it reads, through every branch
            for earlier, (rows, cols) in through_branches.get(field.stage, {}).items():
                windows[earlier] = {"rows": rows, "cols": cols}
        elif _is_map(field):
            for earlier in filter(_is_map, fields[:index]):
                rows, cols = field.windows_in(earlier)
                windows[earlier.stage] = {"rows": rows, "cols": cols}
        traits = stage_traits(module, field.output_shape)
        stages.append(
            {
                "name": field.stage,
                "kind": field.kind,
                "shape": list(field.output_shape),
                "role": traits.role,
                "mixes_channels": traits.mixes_channels,
                "rectifies": traits.rectifies,
                "grad_cam_target": traits.grad_cam_target,
                "whole_input": field.whole_image,
                "unit_grid": list(field.unit_grid) if field.unit_grid else None,
                "windows": windows,
                "inputs": list(reads[field.stage]) if field.stage in reads else None,
            }
        )
    return {"stages": stages}


@router.get("/runs/{run_id}/network", summary="Which earlier cells each feature-map cell reads")
def network(run: LoadedRun = Depends(get_run)) -> JSONResponse:
    """Per stage: its layer kind's ``role`` and flags (``convlens.inspect.layer_kinds``: whether a
    channel reads every input channel, ``mixes_channels``; whether it is or contains a rectifier,
    ``rectifies``; whether Grad-CAM may look at it, ``grad_cam_target``), whether each
    cell sees the whole input, how flatten's units map to the map before it (``unit_grid``: unit
    u is channel u // (h·w), cell divmod(u % (h·w), w)), and for a feature-map stage its
    ``windows`` in every earlier feature-map stage: ``rows[r]`` = [first, last] rows read by
    output row r, ``cols[c]`` the same for columns; ``inputs``: the stages it reads, for a model
    traced to a graph (branches and merges; ``input`` is the image), null for a chain."""
    if "network" not in run.cache:
        with run.lock:
            run.cache["network"] = _wiring(run)
    return JSONResponse(run.cache["network"])
