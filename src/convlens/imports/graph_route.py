"""Any traceable module as a graph model: the route every imported model but convlens's own takes.

A module the user brings is traced (``convlens.models.graph_capture``) to a description of its
stages and its weights under its own key names; ``build_graph`` makes the ``graph`` model of
that description with the run's preprocessing in front, loads the weights key for key and
checks that it gives the module's outputs. The run then opens from data alone.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.imports.preprocessing import Preprocessing
from convlens.models import Normalize, create_model
from convlens.models.graph_capture import check_reproduces, describe_traced
from convlens.models.graph_spec import LAYER_TYPES
from convlens.models.traced import TracedModel


def build_graph(
    graph: dict, state: Mapping[str, torch.Tensor], prep: Preprocessing, class_names, source: str
):
    """The ``graph`` model of ``graph`` holding ``state``: (model, tensors loaded). ``source``
    names the model in messages (a file, a class)."""
    model = create_model(
        "graph", prep.input_shape, len(class_names), *prep.model_normalization(), graph=graph
    )
    expected = model.body.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        keys = (missing or unexpected or wrong)[:3]
        what = "missing" if missing else "unexpected" if unexpected else "of another shape"
        raise ConvlensError(f"{source}: its weights do not fit its graph ({what}: {', '.join(keys)})")
    with torch.no_grad():
        for key, tensor in expected.items():
            tensor.copy_(state[key].to(dtype=tensor.dtype))
    _check_outputs(model, prep, class_names)
    return model, len(expected)


def _check_outputs(model: nn.Module, prep: Preprocessing, class_names) -> None:
    model.eval()
    with torch.no_grad():
        try:
            scores = model(torch.zeros(1, *prep.input_shape))
        except RuntimeError as exc:
            raise ConvlensError(
                f"input_shape {list(prep.input_shape)}: the model cannot take it ({str(exc).splitlines()[0][:120]})",
                parameter="input_shape",
            ) from None
    if scores.ndim != 2:
        raise ConvlensError(
            f"model: it gives an output of shape {tuple(scores.shape[1:])} per image; convlens opens "
            "classifiers, which give one score per class",
            parameter="model",
        )
    if scores.shape[1] != len(class_names):
        raise ConvlensError(
            f"class_names: {len(class_names)} given, but the model gives {scores.shape[1]} scores per "
            "image (one per class)",
            parameter="class_names",
        )


def graph_of_module(model: nn.Module, prep: Preprocessing, class_names, source: str):
    """``model`` traced and rebuilt as a graph model, checked to give its outputs: (model, loaded, graph)."""
    if any(t.device.type != "cpu" for t in (*model.parameters(), *model.buffers())):
        model = copy.deepcopy(model).to("cpu")
    traced = TracedModel(model, prep.input_shape, leaf_types=tuple(LAYER_TYPES.values()))
    graph, state = describe_traced(traced)
    built, loaded = build_graph(graph, state, prep, class_names, source)
    mean, std = prep.model_normalization()
    original = nn.Sequential(Normalize(mean, std), model).train(model.training)  # left as it came
    check_reproduces(original, built, prep.input_shape, "saved graph")
    return built, loaded, graph
