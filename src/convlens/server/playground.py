"""The convolution playground's endpoints: presets, sample pictures and a convolution with
every cell's arithmetic, all from ``convlens.inspect`` (the page only animates the result)."""

from __future__ import annotations

import math

import torch
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from convlens.errors import ConvlensError
from convlens.server.deps import ERRORS, POST_ERRORS, Number, WholeNumber

router = APIRouter(prefix="/api/playground", responses=ERRORS)
MAX_GRID = 64  # the page draws every cell; larger grids are a photo editor's job
MAX_KERNEL = 7


def _grid(most: int) -> dict:
    """A matrix of 1..most rows of 1..most numbers, in JSON Schema's words. For the schema only:
    ``convolve_endpoint`` checks it (and what no schema can say: equal rows) with a one-line 400."""
    row = {"type": "array", "minItems": 1, "maxItems": most, "items": {"type": "number"}}
    return {"minItems": 1, "maxItems": most, "items": row}


def _kernel_schema(schema: dict) -> None:
    """The kernel is a matrix or a preset's name (the server also reads matrix text such as
    '1,0,-1; 2,0,-2', as the CLI does; the schema names the presets only)."""
    from convlens.inspect import KERNELS

    schema["anyOf"] = [{"type": "array", **_grid(MAX_KERNEL)}, {"type": "string", "enum": list(KERNELS)}]


class ConvolveRequest(BaseModel):
    image: list[list[Number]] = Field(
        description=f"grayscale grid (H, W) of at most {MAX_GRID}x{MAX_GRID} finite numbers, rows of equal "
        "length, e.g. 0 = white paper, 1 = ink",
        json_schema_extra=_grid(MAX_GRID),
    )
    kernel: list[list[Number]] | str = Field(
        "edge",
        description=f"a (kH, kW) matrix of at most {MAX_KERNEL}x{MAX_KERNEL} numbers, or a preset name "
        "(GET /api/playground); no larger than the padded image",
        json_schema_extra=_kernel_schema,
    )
    stride: WholeNumber = Field(1, ge=1, le=MAX_GRID, description="cells the kernel moves per step")
    padding: WholeNumber = Field(0, ge=0, le=MAX_KERNEL, description="rings of zeros added around the image")


class ConvolveCellJSON(BaseModel):
    """``as_dict(Convolution.cell(row, col))``; the kernel is sent once, next to the cells."""

    row: int
    col: int
    rows: list[int] = Field(description="image rows under the kernel (outside 0..H-1: padding)")
    cols: list[int]
    patch: list[list[float]] = Field(description="the pixels under the kernel (padding: 0)")
    padding: list[list[bool]] = Field(description="true where the kernel lies over the zero padding")
    products: list[list[float]] = Field(description="patch × kernel, cell by cell")
    sum: float


class ConvolveResponse(BaseModel):
    kernel: list[list[float]]
    stride: int
    padding: int
    output: list[list[float]] = Field(description="the feature map (H_out, W_out)")
    limits: dict = Field(description="its colour limits (signed, centred on 0; views.maps)")
    cells: list[ConvolveCellJSON] = Field(description="every output cell's arithmetic, row by row")


@router.get("", summary="Kernel presets and sample pictures for the playground")
def presets() -> dict:
    from convlens.inspect import KERNELS
    from convlens.inspect.pictures import PHOTOS, XRAY

    return {"kernels": KERNELS, "pictures": ["smiley", "digits:0", "digits:3", *PHOTOS, XRAY]}


def _picture_names() -> dict:
    """The names ``picture`` reads, for the schema: the fixed ones, and digits:N for each of the
    1,797 scikit-learn digits (checked again by ``load_picture``: 400 naming the range)."""
    from convlens.inspect.pictures import PHOTOS, XRAY

    number = "([0-9]|[1-9][0-9]|[1-9][0-9][0-9]|1[0-6][0-9][0-9]|17[0-8][0-9]|179[0-6])"
    return {"anyOf": [{"enum": ["smiley", "digits", *PHOTOS, XRAY]}, {"pattern": f"^digits:{number}$"}]}


@router.get("/picture", summary="A sample picture as a grayscale grid")
def picture(
    name: str = Query(
        "smiley",
        description="smiley, digits, digits:N (N in 0..1796), a scikit-image photo name, or xray",
        json_schema_extra=_picture_names(),
    ),
    size: int | None = Query(None, ge=3, le=MAX_GRID, description="resize to size × size [default: as is]"),
) -> dict:
    """A built-in picture (never a file path: the server reads no files on request) in [0, 1]."""
    from convlens.data.transforms import resize_images
    from convlens.inspect.pictures import PHOTOS, XRAY, load_picture

    if not (name in ("smiley", *PHOTOS, XRAY) or name == "digits" or name.startswith("digits:")):
        raise ConvlensError(f"picture {name!r}: expected smiley, digits:N, {', '.join(PHOTOS)} or {XRAY}")
    grid = load_picture(name)  # (H, W) in [0, 1]
    if size is None and max(grid.shape) > MAX_GRID:
        size = 16  # a photo: 16 × 16 cells are still clickable
    if size is not None and tuple(grid.shape) != (size, size):
        grid = resize_images(grid[None, None], (size, size))[0, 0]  # (size, size)
    return {"name": name, "image": grid.round(decimals=3).tolist()}


@router.post(
    "/convolve",
    response_model=ConvolveResponse,
    responses=POST_ERRORS,
    summary="Slide a kernel over a grid",
)
def convolve_endpoint(request: ConvolveRequest) -> dict:
    """``convlens.inspect.convolve``: the feature map plus each cell's products and sum, which
    the page replays one cell at a time."""
    from convlens.inspect import as_dict, convolve
    from convlens.views.maps import map_limits

    height = len(request.image)
    width = len(request.image[0]) if height else 0
    if not (1 <= height <= MAX_GRID and 1 <= width <= MAX_GRID) or any(
        len(r) != width for r in request.image
    ):
        raise ConvlensError(f"image: expected a rectangular grid of at most {MAX_GRID}x{MAX_GRID} numbers")
    if not all(math.isfinite(v) for r in request.image for v in r):
        raise ConvlensError("image: values must be finite numbers")
    if isinstance(request.kernel, list) and (
        len(request.kernel) > MAX_KERNEL or any(len(r) > MAX_KERNEL for r in request.kernel)
    ):
        raise ConvlensError(f"kernel: at most {MAX_KERNEL}x{MAX_KERNEL} values")
    if not 0 <= request.padding <= MAX_KERNEL:
        raise ConvlensError(f"padding: expected 0..{MAX_KERNEL}, got {request.padding}")
    result = convolve(
        torch.tensor(request.image, dtype=torch.float64), request.kernel, request.stride, request.padding
    )
    out_h, out_w = result.output.shape
    cells = [as_dict(result.cell(row, col)) for row in range(out_h) for col in range(out_w)]
    return {
        "kernel": result.kernel.tolist(),
        "stride": result.stride,
        "padding": result.padding,
        "output": result.output.tolist(),
        "limits": map_limits(result.output, signed=True),  # a feature map is signed: centred on 0
        "cells": cells,
    }
