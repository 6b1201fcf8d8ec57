"""A model built from a graph description: how a model the user brought opens again from its run.

``GraphModel`` builds the layers of a checked graph (``convlens.models.graph_spec``) under
``body`` at their original module paths, so the weights load under the user's own key names
(``body.layer1.0.conv1.weight``, as the torchvision-layout families keep them), and runs the
stages in order, each on the tensors it reads. Every stage is a module of its own: a layer two
stages call gets a twin for the second call that shares its weights, so a forward hook or
Captum's layer methods see exactly the call the stage names. A ``Normalize`` stage goes first,
so inputs are pixels in [0, 1] as for every convlens model.

It is registered as the model ``graph``; its one option is the graph itself, written into the
checkpoint's JSON by ``convlens import`` and ``Run.from_model``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.models._registry import Normalize, register_model
from convlens.models.calls import twin_module
from convlens.models.graph_spec import INPUT, build_layer, check_graph


@dataclass(frozen=True)
class GraphStage:
    """One stage of a graph model: its module, the stages it reads (deduplicated), and the
    tensors it is called with (in order, repeats kept)."""

    name: str
    module: nn.Module
    inputs: tuple[str, ...]
    reads: tuple[str, ...]
    operation: str  # the module path it calls, or the layer type of a stage without weights


class GraphModel(nn.Module):
    """A checked graph description as a model (see the module docstring)."""

    def __init__(
        self,
        graph: dict,
        in_shape: Sequence[int],
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        check_graph(graph)
        self.in_shape = tuple(int(s) for s in in_shape)
        self.num_classes = num_classes
        self.notes: tuple[str, ...] = ()
        self.normalize = Normalize(mean, std)
        self.body = nn.Module()
        layers = {path: self._attach(path, entry) for path, entry in sorted(graph["modules"].items())}
        called: set[str] = set()
        self._stages: list[GraphStage] = []
        for index, stage in enumerate(graph["stages"]):
            path = stage.get("module")
            if path is not None:
                module = layers[path] if path not in called else twin_module(layers[path])
                called.add(path)
                operation = path
            else:
                module = build_layer(stage["type"], stage.get("args", {}), f"graph.stages[{index}]")
                operation = stage["type"]
            reads = tuple("normalize" if read == INPUT else read for read in stage["reads"])
            inputs = tuple(dict.fromkeys(reads))
            self._stages.append(GraphStage(stage["name"], module, inputs, reads, operation))
        self.output = graph["output"]
        self._last_reader = {}  # stage name → index of the last stage that reads it (frees memory)
        for index, stage in enumerate(self._stages):
            for read in stage.reads:
                self._last_reader[read] = index

    def _attach(self, path: str, entry: dict) -> nn.Module:
        layer = build_layer(entry["type"], entry.get("args", {}), f"graph.modules[{path!r}]")
        parent = self.body
        *parents, leaf = path.split(".")
        for part in parents:
            child = parent._modules.get(part)
            if child is None:
                child = nn.Module()
                parent.add_module(part, child)
            parent = child
        try:
            parent.add_module(leaf, layer)
        except KeyError as exc:
            raise ConvlensError(
                f"graph.modules[{path!r}]: the name clashes with a module attribute ({exc})"
            ) from None
        return layer

    def stages(self) -> list[tuple[str, nn.Module]]:
        return [("normalize", self.normalize)] + [(stage.name, stage.module) for stage in self._stages]

    def graph_stages(self) -> list[GraphStage]:
        first = GraphStage("normalize", self.normalize, (INPUT,), (INPUT,), "normalize")
        return [first, *self._stages]

    def stage_inputs(self) -> dict[str, tuple[str, ...]]:
        """Each stage's inputs by name (``input`` is the image, in pixels)."""
        return {stage.name: stage.inputs for stage in self.graph_stages()}

    def train(self, mode: bool = True) -> GraphModel:
        super().train(mode)
        for stage in getattr(self, "_stages", ()):  # twins and layers without weights are not children
            stage.module.train(mode)
        return self

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        values = {"normalize": self.normalize(pixels)}
        for index, stage in enumerate(self._stages):
            values[stage.name] = stage.module(*(values[read] for read in stage.reads))
            for read in set(stage.reads):  # a map no later stage reads is not kept
                if self._last_reader.get(read) == index and read != self.output:
                    del values[read]
        return values[self.output]


def with_classes(graph: dict, num_classes: int) -> dict:
    """``graph`` with its classifier giving ``num_classes`` scores: the output stage's Linear layer
    (through a last Flatten or Dropout) gets that many outputs. Fine-tuning on other classes
    then starts from every other layer's weights; a graph whose head is not a Linear is unchanged."""
    check_graph(graph)
    stages = {stage["name"]: stage for stage in graph["stages"]}
    stage = stages[graph["output"]]
    while stage.get("type") in ("Dropout", "Identity") and stage["reads"][0] in stages:
        stage = stages[stage["reads"][0]]
    path = stage.get("module")
    layer = graph["modules"].get(path) if path is not None else None
    if layer is None or layer["type"] != "Linear" or layer["args"].get("out_features") == num_classes:
        return graph
    modules = {**graph["modules"], path: {**layer, "args": {**layer["args"], "out_features": num_classes}}}
    return {**graph, "modules": modules}


@register_model("graph", by_name=False)
def graph(in_shape, num_classes, mean, std, graph=None) -> GraphModel:
    """A model imported from its graph (convlens import, Run.from_model): any CNN of known layers."""
    if graph is None:
        raise ConvlensError(
            "model_options: the graph model is made by convlens import or Run.from_model from a model "
            "you bring, not by name",
            parameter="model_options",
        )
    try:
        return GraphModel(with_classes(graph, num_classes), in_shape, num_classes, mean, std)
    except ConvlensError as exc:
        raise ConvlensError(f"model_options: {exc}", parameter="model_options") from None
