"""A module traced in memory, written down as a graph description and weights.

``capture_graph(model, in_shape)`` traces ``model`` (``convlens.models.traced``), describes each
stage as a layer of ``convlens.models.graph_spec.LAYER_TYPES`` called on earlier stages, and
returns that description with the weights under the model's own key names. It then builds the
description again (``GraphModel``) and runs both on the same random image: a description that
does not reproduce the model to float tolerance is refused, so a saved graph is the model.

A stage the description cannot hold (a function convlens does not model, a layer class outside
the allow-list, a call with arguments that are not earlier stages) is named in the error, with
the route that still works: ``convlens.open_model`` shows such a model in Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.models.graph_spec import GRAPH_FORMAT, check_graph, layer_arguments, layer_type
from convlens.models.traced import TracedModel

TOLERANCE = 1e-5  # relative to the largest output: float32 sums in another order differ by ~1e-7


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(
        True for _ in module.buffers(recurse=False)
    )


def describe_traced(traced: TracedModel) -> tuple[dict, dict[str, torch.Tensor]]:
    """The graph description and weights of a traced model (its normalize stage is left out:
    the run keeps mean/std as every convlens model does)."""
    if not traced.traced:
        reason = traced.notes[0] if traced.notes else "tracing failed"
        raise ConvlensError(
            f"model: {reason}; a run folder needs its graph. Open it in Python with "
            "convlens.open_model(model, in_shape), which shows its stages through hooks",
            parameter="model",
        )
    modules: dict[str, dict] = {}
    state: dict[str, torch.Tensor] = {}
    stages: list[dict] = []
    refused: list[str] = []
    for stage in traced.graph_stages():
        if stage.name == "normalize" and stage.module is traced.normalize:
            continue
        kind = layer_type(stage.module)
        if kind is None:
            what = getattr(stage.module, "kind_name", type(stage.module).__name__)
            refused.append(f"{stage.name} ({what}: not a layer convlens can save)")
            continue
        if stage.reads is None:
            refused.append(f"{stage.name} (called with more than earlier stages' outputs)")
            continue
        reads = ["input" if read == "normalize" else read for read in stage.reads]
        if _has_state(stage.module):
            path = stage.operation
            modules.setdefault(path, {"type": kind, "args": layer_arguments(stage.module)})
            for key, tensor in stage.module.state_dict().items():
                state[f"{path}.{key}"] = tensor.detach().clone()
            stages.append({"name": stage.name, "module": path, "reads": reads})
        else:
            stages.append(
                {"name": stage.name, "type": kind, "args": layer_arguments(stage.module), "reads": reads}
            )
    if refused:
        more = f", and {len(refused) - 4} more" if len(refused) > 4 else ""
        raise ConvlensError(
            f"model: these stages cannot be saved as a graph: {'; '.join(refused[:4])}{more}. Open the "
            "model in Python with convlens.open_model(model, in_shape), which shows every stage's maps",
            parameter="model",
        )
    if traced.output_stage is None:
        raise ConvlensError("model: its forward must return one tensor (the class scores)", parameter="model")
    graph = {"format": GRAPH_FORMAT, "modules": modules, "stages": stages, "output": traced.output_stage}
    return check_graph(graph), state


def check_reproduces(original: nn.Module, rebuilt: nn.Module, in_shape: Sequence[int], what: str) -> float:
    """Run both on the same random images (pixels in [0, 1]); refuse a difference beyond
    ``TOLERANCE``. Returns the largest difference seen."""
    generator = torch.Generator().manual_seed(1)
    pixels = torch.rand((2, *in_shape), generator=generator)
    states = original.training, rebuilt.training
    original.eval()
    rebuilt.eval()
    try:
        with torch.no_grad():
            expected, got = original(pixels), rebuilt(pixels)
    finally:
        original.train(states[0])
        rebuilt.train(states[1])
    if expected.shape != got.shape:
        raise ConvlensError(
            f"model: the {what} gives outputs of shape {tuple(got.shape)}, the model {tuple(expected.shape)}"
        )
    difference = float((expected - got).abs().max()) if expected.numel() else 0.0
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    if not difference <= TOLERANCE * max(1.0, scale):
        raise ConvlensError(
            f"model: the {what} does not reproduce the model (outputs differ by up to {difference:.3g}); "
            "please report this model's layers",
            parameter="model",
        )
    return difference
