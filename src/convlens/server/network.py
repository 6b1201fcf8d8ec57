"""The Network view's wiring: which cells of the earlier stages each feature-map cell reads.

Clicking a cell highlights its window in the stage before (the kernel or pooling window), and
the wider windows further back down to the input (its receptive field). The windows come from
``ReceptiveField.windows_in`` (convlens.inspect), per output row and per output column, so
the page only looks them up; they never change while the server runs, so they are cached.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from torch import nn

from convlens.server.deps import ERRORS, get_run
from convlens.server.runs import LoadedRun

router = APIRouter(prefix="/api", responses=ERRORS)


def _mixes_channels(module: nn.Module | None) -> bool:
    """Whether each output channel reads every input channel (a convolution, a block of them, a
    linear layer) rather than only its own (ReLU, pooling, BatchNorm, a depthwise convolution
    whose groups equal its channels)."""
    if module is None:  # the softmax reads every logit
        return True
    return any(
        isinstance(part, nn.Linear)
        or (isinstance(part, nn.Conv2d) and (part.groups == 1 or part.groups < part.in_channels))
        for part in module.modules()
    )


def _is_map(field) -> bool:
    return len(field.output_shape) == 3 and not field.whole_image


def _wiring(run: LoadedRun) -> dict:
    from convlens.inspect import SOFTMAX, find_stage

    fields = run.fields()
    stages = []
    for index, field in enumerate(fields):
        module = None if field.stage == SOFTMAX else find_stage(run.model, field.stage)
        windows = {}
        if _is_map(field):
            for earlier in filter(_is_map, fields[:index]):
                rows, cols = field.windows_in(earlier)
                windows[earlier.stage] = {"rows": rows, "cols": cols}
        stages.append(
            {
                "name": field.stage,
                "kind": field.kind,
                "shape": list(field.output_shape),
                "mixes_channels": _mixes_channels(module),
                "whole_input": field.whole_image,
                "unit_grid": list(field.unit_grid) if field.unit_grid else None,
                "windows": windows,
            }
        )
    return {"stages": stages}


@router.get("/runs/{run_id}/network", summary="Which earlier cells each feature-map cell reads")
def network(run: LoadedRun = Depends(get_run)) -> JSONResponse:
    """Per stage: whether a channel reads every input channel (``mixes_channels``), whether each
    cell sees the whole input, how flatten's units map to the map before it (``unit_grid``: unit
    u is channel u // (h·w), cell divmod(u % (h·w), w)), and for a feature-map stage its
    ``windows`` in every earlier feature-map stage: ``rows[r]`` = [first, last] rows read by
    output row r, ``cols[c]`` the same for columns."""
    if "network" not in run.cache:
        with run.lock:
            run.cache["network"] = _wiring(run)
    return JSONResponse(run.cache["network"])
