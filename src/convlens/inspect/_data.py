"""Explanations are data: turn any of them into plain JSON-ready values (lists, numbers, strings)."""

from __future__ import annotations

import dataclasses
import math

import torch


def as_dict(value):
    """Dataclasses → dicts, tensors → nested lists, tuples → lists; NaN/inf → None (JSON has neither)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if not value.is_floating_point() or bool(value.isfinite().all()):
            return value.tolist()  # nothing to replace: skip walking every number
        return as_dict(value.tolist())
    if isinstance(value, dict):
        return {str(k): as_dict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_dict(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
