"""Open any PyTorch CNN for the inside view: ``open_model(model, in_shape)``.

The model is traced to a graph of stages (``convlens.models.traced.TracedModel``) whose leaf
modules are the classes the layer-kind table knows plus torch.nn's layers, so every stage is a
kind the explanations can read; additions and concatenations get their kinds from
``convlens.inspect.merges``. A model that cannot be traced opens through hooks, and its
``notes`` say what that does not show.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from convlens.inspect import merges  # noqa: F401 — registers the kinds of Add and Concat
from convlens.inspect.layer_kinds import LAYER_KINDS
from convlens.models.traced import TracedModel


def open_model(
    model: nn.Module,
    in_shape: Sequence[int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> TracedModel:
    """``model`` (taking images of ``in_shape``, C x H x W) as named stages with their inputs; with
    ``mean`` and ``std`` (one per channel) a Normalize stage goes first and inputs stay pixels in
    [0, 1], as for every convlens model."""
    leaf_types = tuple(entry.function.module_type for entry in LAYER_KINDS)
    return TracedModel(model, in_shape, mean, std, leaf_types=leaf_types)
