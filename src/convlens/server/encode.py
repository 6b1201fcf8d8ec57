"""Tensors → JSON. Feature maps travel as base64 float32 (exact and ~5x smaller and faster
than a JSON list of numbers); small vectors travel as plain lists so they read well in the API docs.
"""

from __future__ import annotations

import base64

import torch
from pydantic import BaseModel, Field


class PackedTensor(BaseModel):
    """A float32 tensor: ``shape`` and the little-endian bytes of its values in ``b64`` (C order)."""

    shape: list[int] = Field(description="tensor shape, e.g. [C, H, W]")
    b64: str = Field(description="base64 of the float32 little-endian values, row-major")


def packed(tensor: torch.Tensor) -> dict:
    """A tensor as ``{"shape", "b64"}`` (see PackedTensor)."""
    array = tensor.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False)
    return {"shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode("ascii")}


def floats(tensor: torch.Tensor) -> list:
    """A small tensor as (nested) lists of Python floats."""
    return tensor.detach().to("cpu", torch.float64).tolist()
