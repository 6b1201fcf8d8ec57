"""Any ``nn.Module`` as named stages with their inputs: its forward traced to a graph.

``TracedModel(model, in_shape)`` traces ``model`` with ``torch.fx`` symbolic tracing (as
torchvision's ``feature_extraction`` does) and makes every tensor operation a stage, in
topological order, named by module path and call index (``layer1.0.relu``, ``layer1.0.relu_1``
for its second call, ``layer1.0.add`` for an addition in that block), each with the stages it
reads (``inputs``): branches and merges, not only a chain. Every stage is a module of its own
(a module called twice gets a twin that shares its weights; a function becomes the module in
``convlens.models.calls``), so hooks and Captum's layer methods fire once, at the call the stage
names, and ``stages()`` serves every explanation as it serves a ``StagedModel``.

In-place operations run out of place, with the later readers of the changed tensor reading
the result instead: the values are the model's own, and a recorded or differentiated stage
output is never changed afterwards. When tracing fails (control flow on tensor values), the
stages are the leaf-module calls of one forward pass, in call order, and ``notes`` says what
that does not show.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.utils._pytree import tree_leaves

from convlens.errors import ConvlensError
from convlens.models._registry import Normalize
from convlens.models.calls import (
    StageCall,
    operation_name,
    plain_call,
    run_out_of_place,
    stage_call,
    twin_module,
)

# a model seen through hooks patches its modules' forward for one pass: one pass at a time, as server
# threads share the model (one lock for all, so a deep copy of a model needs no lock of its own)
_HOOKED_FORWARD = threading.RLock()

INPUT = "input"  # what the first stage reads: the image, pixels in [0, 1]


@dataclass(frozen=True)
class Stage:
    """One stage of a traced model: its module and the stages it reads (None: not known)."""

    name: str
    module: nn.Module
    inputs: tuple[str, ...] | None
    operation: str  # what the model calls: a module path, or a function or method name
    # the tensors the stage module is called with, in order (None: not only earlier stages' outputs)
    reads: tuple[str, ...] | None = None


class _StageTracer(fx.Tracer):
    """fx's tracer, remembering the module path each function call was made in (for its name)."""

    def __init__(self, leaf_types: tuple[type, ...]) -> None:
        super().__init__()
        self.leaf_types = leaf_types
        self.module_path_now = ""
        self.scopes: dict[str, str] = {}  # node name → module path of the forward it ran in

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, self.leaf_types) or super().is_leaf_module(module, qualified_name)

    def call_module(self, module, forward, args, kwargs):
        outer, self.module_path_now = self.module_path_now, self.path_of_module(module)
        try:
            return super().call_module(module, forward, args, kwargs)
        finally:
            self.module_path_now = outer

    def create_node(self, *args, **kwargs):
        node = super().create_node(*args, **kwargs)
        self.scopes[node.name] = self.module_path_now
        return node


class TracedModel(nn.Module):
    """A user's model as a graph of named stages (see the module's docstring); with ``mean`` and
    ``std`` a ``Normalize`` stage goes first, so inputs stay pixels in [0, 1]."""

    def __init__(
        self,
        model: nn.Module,
        in_shape: Sequence[int],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        leaf_types: Sequence[type] = (),
    ) -> None:
        super().__init__()
        in_shape = tuple(int(s) for s in in_shape)
        if len(in_shape) != 3 or min(in_shape) < 1:
            raise ConvlensError(
                f"in_shape must be C x H x W with positive sides, got {in_shape}", parameter="in_shape"
            )
        if (mean is None) != (std is None) or (mean is not None and not len(mean) == len(std) == in_shape[0]):
            raise ConvlensError(
                f"mean and std: give both, one value per channel ({in_shape[0]}), or neither",
                parameter="mean",
            )
        self.model = model
        self.in_shape = in_shape
        self.normalize = Normalize(mean, std) if mean is not None else None
        self.leaf_types = (Normalize, *leaf_types)
        self.notes: tuple[str, ...] = ()
        self.output_stage: str | None = None  # the stage whose output the model returns (traced only)
        self._graph: fx.Graph | None = None
        self._calls: dict[str, StageCall] = {}  # by node name: a deep copy keeps the keys
        self._stages: list[Stage] = []
        if self.normalize is not None:
            self._stages.append(Stage("normalize", self.normalize, (INPUT,), "normalize"))
        self._twins: list[tuple[nn.Module, list[nn.Module]]] = []
        was_training = model.training
        model.eval()
        try:
            self._trace()
        except Exception as error:  # any failure of symbolic tracing: open through hooks
            self._calls.clear()
            self._graph = None
            self._discover_calls(error)
        finally:
            model.train(was_training)
        self.num_classes = self._probe_output().shape[-1]
        self.train(was_training)

    @property
    def traced(self) -> bool:
        """Whether the stages come from the traced graph (else from hooks, with ``notes``)."""
        return self._graph is not None

    def stages(self) -> list[tuple[str, nn.Module]]:
        return [(stage.name, stage.module) for stage in self._stages]

    def graph_stages(self) -> list[Stage]:
        return list(self._stages)

    def stage_inputs(self) -> dict[str, tuple[str, ...]] | None:
        """Each stage's inputs by name (``input`` is the image); None when tracing failed."""
        if not self.traced:
            return None
        return {stage.name: stage.inputs for stage in self._stages}

    def train(self, mode: bool = True) -> TracedModel:
        super().train(mode)
        for stage in getattr(self, "_stages", ()):  # twins and call modules are not children
            stage.module.training = mode
        return self

    def _probe(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        pixels = torch.rand((1, *self.in_shape), generator=generator).to(device)
        return self.normalize(pixels) if self.normalize is not None else pixels

    def _probe_output(self) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                x = self._probe()
                return self._run_graph(x) if self.traced else self._run_hooked(x)
        finally:
            self.train(was_training)

    # --- the traced graph -------------------------------------------------------------------

    def _trace(self) -> None:
        tracer = _StageTracer(self.leaf_types)
        graph = tracer.trace(self.model)
        modules = dict(self.model.named_modules())
        out_of_place = run_out_of_place(graph, modules)
        self._graph = graph
        seen: set[int] = set()
        for node in graph.nodes:  # a module's calls: the module itself, then twins
            if node.op == "call_module":
                module = modules[node.target]
                seen_before = id(module) in seen
                seen.add(id(module))
                if node in out_of_place or seen_before:
                    module = twin_module(module, inplace=False if node in out_of_place else None)
                self._calls[node.name] = StageCall(module, tensors_only=False)
        values = self._probe_values(graph)
        names = self._name_stages(graph, values, tracer.scopes)
        source = "normalize" if self.normalize is not None else INPUT
        for node in graph.nodes:
            if node not in names:
                continue
            inputs = []
            for read in node.all_input_nodes:
                name = source if read.op == "placeholder" else names.get(read)
                if name is not None and name not in inputs:
                    inputs.append(name)
            operation = node.target if node.op == "call_module" else operation_name(node)
            reads = self._reads(node, names, source, values)
            self._stages.append(
                Stage(names[node], self._calls[node.name].module, tuple(inputs), operation, reads)
            )
        returned = next(node for node in graph.nodes if node.op == "output").args[0]
        self.output_stage = names.get(returned) if isinstance(returned, fx.Node) else None

    def _reads(
        self, node: fx.Node, names: dict[fx.Node, str], source: str, values: dict
    ) -> tuple[str, ...] | None:
        """The stages whose outputs a stage module is called with, in order; None when it is also
        called with anything else (a keyword, a function's own arguments). A module from ``CALLS``
        takes the call's tensors only, so a size read from the graph (``x.size(0)``) is no input."""
        call = self._calls[node.name]
        if call.tensors_only:
            leaves = tree_leaves((node.args, node.kwargs))
            arguments = [
                v for v in leaves if isinstance(v, fx.Node) and isinstance(values.get(v), torch.Tensor)
            ]
        elif node.op == "call_module" and not node.kwargs and all(isinstance(a, fx.Node) for a in node.args):
            arguments = list(node.args)
        else:
            return None
        reads = [source if read.op == "placeholder" else names.get(read) for read in arguments]
        return None if None in reads or not reads else tuple(reads)

    def _probe_values(self, graph: fx.Graph) -> dict[fx.Node, object]:
        """Run the graph once on a random image, choosing each function call's stage module on the way."""
        values: dict[fx.Node, object] = {}
        x = self._probe()
        with torch.no_grad():
            for node in graph.nodes:
                if node.op in ("call_function", "call_method"):
                    args, kwargs = fx.node.map_arg((node.args, node.kwargs), values.__getitem__)
                    output = plain_call(node, args, kwargs)
                    if isinstance(output, torch.Tensor):
                        from_graph = [values[read] for read in node.all_input_nodes]
                        self._calls[node.name] = stage_call(node, args, kwargs, output, from_graph)
                    values[node] = output
                else:
                    values[node] = self._step(node, values, x)
        return values

    def _name_stages(self, graph: fx.Graph, values: dict, scopes: dict[str, str]) -> dict[fx.Node, str]:
        """Module path + call index for a module; for a function, the module it ran in + its name."""
        names: dict[fx.Node, str] = {}
        used = {"normalize", INPUT}
        for node in graph.nodes:
            if node.name not in self._calls or not isinstance(values[node], torch.Tensor):
                continue
            if node.op == "call_module":
                base = node.target
            else:
                scope = scopes.get(node.name, "")
                base = f"{scope}.{operation_name(node)}" if scope else operation_name(node)
            name, count = base, 0
            while name in used:
                count += 1
                name = f"{base}_{count}"
            used.add(name)
            names[node] = name
        return names

    def _step(self, node: fx.Node, values: dict, x: torch.Tensor):
        if node.op == "placeholder":  # the image; a further argument keeps its default
            first = not any(read.op == "placeholder" for read in values)
            return x if first else (node.args[0] if node.args else None)
        if node.op == "get_attr":
            return _attribute(self.model, node.target)
        if node.op == "output":
            return fx.node.map_arg(node.args[0], values.__getitem__)
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), values.__getitem__)
        call = self._calls.get(node.name)
        if call is None:
            return plain_call(node, args, kwargs)
        if call.tensors_only:
            return call.module(*[v for v in tree_leaves((args, kwargs)) if isinstance(v, torch.Tensor)])
        return call.module(*args, **kwargs)

    def _run_graph(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[fx.Node, object] = {}
        for node in self._graph.nodes:
            values[node] = self._step(node, values, x)
            if node.op == "output":
                return values[node]
        raise ConvlensError("model: its traced graph has no output")

    # --- the fallback: leaf-module calls seen by hooks ----------------------------------------

    def _is_leaf(self, module: nn.Module) -> bool:
        return isinstance(module, self.leaf_types) or not any(True for _ in module.children())

    def _discover_calls(self, error: Exception) -> None:
        calls: list[tuple[str, nn.Module]] = []
        handles = []
        try:
            for path, module in self.model.named_modules():
                if path and self._is_leaf(module):
                    handles.append(
                        module.register_forward_hook(lambda m, i, o, path=path: calls.append((path, m)))
                    )
            with torch.no_grad():
                self.model(self._probe())
        finally:
            for handle in handles:
                handle.remove()
        twins: dict[int, tuple[nn.Module, list[nn.Module]]] = {}
        for path, module in calls:
            module_twins = twins.setdefault(id(module), (module, []))[1]
            name = path if not module_twins else f"{path}_{len(module_twins)}"
            module_twins.append(twin_module(module))
            self._stages.append(Stage(name, module_twins[-1], None, path))
        self._twins = list(twins.values())
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        self.notes = (
            f"the model could not be traced ({type(error).__name__}: {reason}); its stages are the "
            "calls of its leaf modules in one forward pass, in call order",
            "not shown: which stages each stage reads (branches and merges), operations between "
            "modules (additions, concatenations, functional activations, reshapes), receptive "
            "fields, and calls on another path through the model's control flow",
        )

    def _run_hooked(self, x: torch.Tensor) -> torch.Tensor:
        """The model's own forward, each leaf module's k-th call sent to the stage module of that call."""
        counts: dict[int, int] = {}
        patched = []
        with _HOOKED_FORWARD:
            try:
                for module, module_twins in self._twins:
                    module.forward = _dispatcher(module, module_twins, counts)
                    patched.append(module)
                return self.model(x)
            finally:
                for module in patched:
                    del module.forward

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.normalize(pixels) if self.normalize is not None else pixels
        return self._run_graph(x) if self.traced else self._run_hooked(x)


def _dispatcher(module: nn.Module, twins: list[nn.Module], counts: dict[int, int]) -> Callable:
    def forward(*args, **kwargs):
        call = counts.get(id(module), 0)
        counts[id(module)] = call + 1
        if call < len(twins):
            return twins[call](*args, **kwargs)
        return type(module).forward(module, *args, **kwargs)  # a call the first pass did not make

    return forward


def _attribute(model: nn.Module, target: str):
    value = model
    for part in target.split("."):
        value = getattr(value, part)
    return value
