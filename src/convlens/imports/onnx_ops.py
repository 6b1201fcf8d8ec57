"""ONNX nodes as convlens graph stages: each operator mapped to a layer of ``graph_spec.LAYER_TYPES``.

An ONNX file is a list of operators on named tensors. convlens keeps a model as stages of
allow-listed torch layers (``convlens.models.graph_spec``), so each node that computes on the
image becomes such a layer with the same arithmetic (``Conv`` → ``Conv2d``, ``Clip(0, 6)`` →
``ReLU6``, ``Gemm`` → ``Linear``, ``MatMul`` + bias ``Add`` → one ``Linear``), and everything
else must fold away before the model runs: initializers and ``Constant`` nodes are numbers, and
the shape arithmetic exporters write for ``x.view(x.size(0), -1)`` (``Shape``, ``Gather``,
``Concat``...) is evaluated here on symbolic shapes whose batch size stays unknown. Where no
layer computes exactly what the operator does, the import is refused, naming the operators:
an approximation would show the user arithmetic their model does not do.

Stage names follow convlens's own rules so an ONNX export of a model reads like the model:
a layer with weights is named by its weight's key (``layer1.0.conv1.weight`` →
``layer1.0.conv1``), other stages by the module scope torch's exporter writes into node names
(``/layer1/layer1.0/relu/Relu`` → ``layer1.0.relu``, a function call inside a module
``/layer1/layer1.0/Add`` → ``layer1.0.add``), a repeated name gets ``_1``, ``_2``...
"""

from __future__ import annotations

import ast
import re

import numpy as np
import torch
from onnx import numpy_helper

from convlens.errors import ConvlensError, printable
from convlens.models.graph_spec import GRAPH_FORMAT, INPUT

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*")
_REPEAT = re.compile(r"(.+)_(\d+)")
_ALIASES = {"Concat": "cat", "Gemm": "linear", "MatMul": "linear", "Sum": "add"}
MAX_FOLDED = 1_000_000  # elements a constant computation may have (shapes, tiny tables)


class Batch:
    """The batch size in a symbolic shape: unknown until the model runs."""

    def __repr__(self) -> str:
        return "N"


BATCH = Batch()


class Tensor:
    """An ONNX tensor that a stage computes (or the image): the stage's name and the shape."""

    def __init__(self, stage: str, shape: list | None) -> None:
        self.stage, self.shape = stage, shape


def valid_path(path: str) -> bool:
    return bool(path) and all(_SEGMENT.fullmatch(part) for part in path.split("."))


def _sanitize(name: str) -> str:
    """``name`` as a dotted path of valid segments (possibly empty)."""
    parts = [re.sub(r"[^A-Za-z0-9_]", "_", part).lstrip("_") for part in name.split(".")]
    return ".".join(part for part in parts if part)


def _short(path: str) -> str:
    """A name short enough for a graph (``graph_spec.MAX_NAME_CHARS``), still a dotted path."""
    return path if len(path) <= 200 else path[:200].rstrip(".")


def _scope(node) -> tuple[str, str] | None:
    """(module path, call name) from what torch's exporters record of a node; None: nothing.

    The TorchScript exporter names nodes by scope (``/layer1/layer1.0/conv1/Conv``: a child's
    segment repeats its parent's path, ``layer1`` then ``layer1.0``), the call by the operator;
    the ``torch.export`` one keeps ``pkg.torch.onnx.name_scopes`` (``['', 'layer1', 'layer1.0',
    'add']``: full module paths, then the call as torch named it, ``add``, ``relu_2``)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes" and len(prop.value) < 10_000:
            try:
                scopes = ast.literal_eval(prop.value)  # literals only: a list of names
            except (ValueError, SyntaxError):
                break
            if isinstance(scopes, list) and len(scopes) >= 2 and all(isinstance(x, str) for x in scopes):
                call = _REPEAT.fullmatch(scopes[-1])
                return _sanitize(scopes[-2]), _sanitize(call.group(1) if call else scopes[-1])
            break
    if not node.name.startswith("/"):
        return None
    path: list[str] = []
    for segment in node.name.strip("/").split("/")[:-1]:
        if path and segment.startswith(path[-1] + "."):
            path[-1] = segment
        elif path and segment.startswith(".".join(path) + "."):
            path = [segment]
        else:
            path.append(segment)
    return _sanitize(".".join(path)), _ALIASES.get(node.op_type, node.op_type.lower())


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class Converter:
    """One pass over an ONNX graph (topologically sorted, as ONNX requires) building the stages."""

    def __init__(self, graph, constants: dict, shapes: dict, input_name: str, opset: int) -> None:
        self.graph, self.shapes, self.opset = graph, shapes, opset
        self.values: dict = dict(constants)  # ONNX tensor name → np.ndarray | Tensor
        self.values[input_name] = Tensor(INPUT, shapes.get(input_name))
        self.modules: dict[str, dict] = {}
        self.stages: list[dict] = []
        self.state: dict[str, torch.Tensor] = {}
        self.names: set[str] = {INPUT, "normalize"}
        self.shared: dict[tuple, str] = {}  # (weights, layer) → module path: a layer called twice
        self.absorbed: set[int] = set()  # nodes another node's stage already computes
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        # a scope holding other scopes is a module's inside: its own nodes are function calls
        paths = {scope[0] for scope in map(_scope, graph.node) if scope is not None}
        self.inner = {""} | {".".join(p.split(".")[:n]) for p in paths for n in range(1, p.count(".") + 1)}

    # ------------------------------------------------------------------------------ naming

    def stage_name(self, node) -> str:
        """A name for a stage without weights, from the node's name (module docstring)."""
        scope = _scope(node)
        if scope is None:
            return _sanitize(node.name) or _ALIASES.get(node.op_type, node.op_type.lower())
        path, call = scope
        if path in self.inner:  # a function called inside a module (or the model itself)
            return f"{path}.{call}" if path else call
        return path  # a module's own call

    def unique(self, base: str) -> str:
        repeat = _REPEAT.fullmatch(base)
        if repeat and repeat.group(1) in self.names:  # torch numbers a module's second call itself
            base = repeat.group(1)
        base = _short(base)
        name, number = base, 0
        while name in self.names:
            number += 1
            name = f"{base}_{number}"
        self.names.add(name)
        return name

    def module_path(self, node, weight_name: str) -> str:
        """Where a layer's weights go: its weight's key when that is a module path, else the node's name."""
        stem = weight_name.removesuffix(".weight")
        base = stem if weight_name.endswith(".weight") and valid_path(stem) else None
        scope = _scope(node)
        base = base or (scope and scope[0]) or _sanitize(node.name) or node.op_type.lower()
        base = _short(base)
        path, number = base, 0
        while not self._free(path):
            number += 1
            path = f"{base}_{number}"
        return path

    def _free(self, path: str) -> bool:
        return not any(
            p == path or p.startswith(path + ".") or path.startswith(p + ".") for p in self.modules
        )

    # ------------------------------------------------------------------------------ values

    def tensor(self, node, position: int) -> Tensor:
        value = self.values.get(node.input[position]) if position < len(node.input) else None
        if not isinstance(value, Tensor):
            raise ConvlensError(
                f"{node.op_type} node {printable(node.name)[:60]!r}: input {position} is not an image "
                "tensor; convlens maps this operator only on the model's own tensors"
            )
        return value

    def constant(self, node, position: int, optional: bool = False):
        name = node.input[position] if position < len(node.input) else ""
        if not name:
            if optional:
                return None
            raise ConvlensError(
                f"{node.op_type} node {printable(node.name)[:60]!r}: input {position} is missing"
            )
        value = self.values.get(name)
        if not isinstance(value, np.ndarray) or value.dtype == object:
            raise ConvlensError(
                f"{node.op_type} node {printable(node.name)[:60]!r}: input {printable(name)[:60]!r} must be "
                "a constant (an initializer) for convlens to map it to a layer"
            )
        return value

    def emit(self, node, kind: str, args: dict, reads: list[Tensor], weights=None, base=None, sources=None):
        """Add a stage computing ``node``'s output: a layer of type ``kind``, with ``weights``
        ({suffix: array}) held by a module (called again when the same weights come back:
        ``sources`` names the initializers they came from, the node's other inputs by default)."""
        if weights:
            sources = [n for n in (sources or node.input[1:]) if n]
            first = sources[0] if sources else node.name
            key = (tuple(sources), kind, repr(sorted(args.items())))
            path = self.shared.get(key)
            if path is None:
                path = self.shared[key] = self.module_path(node, first)
                self.modules[path] = {"type": kind, "args": args}
                for suffix, array in weights.items():
                    if not isinstance(array, torch.Tensor):
                        array = torch.from_numpy(np.array(array, dtype=np.float32))
                    self.state[f"{path}.{suffix}"] = array
            name = self.unique(path)
            stage = {"name": name, "module": path, "reads": [t.stage for t in reads]}
        else:
            name = self.unique(base or self.stage_name(node))
            stage = {"name": name, "type": kind, "args": args, "reads": [t.stage for t in reads]}
        self.stages.append(stage)
        result = Tensor(name, self.shapes.get(node.output[0]))
        self.values[node.output[0]] = result
        return result

    def fold(self, node) -> bool:
        """Compute a node whose inputs are all known numbers or symbolic shapes; False: it reads the image."""
        inputs = [self.values.get(name) if name else None for name in node.input]
        if any(isinstance(v, Tensor) for v in inputs):
            return False
        for name, value in zip(node.output, fold_node(node, inputs, self), strict=False):
            self.values[name] = value
        return True

    # ------------------------------------------------------------------------------ the pass

    def run(self, output_name: str, layers: dict) -> dict:
        """Build the stages; ``layers`` maps an operator type to its builder (``onnx_layers.LAYERS``,
        passed in: the builders use this class, so this module cannot import them)."""
        for index, node in enumerate(self.graph.node):
            if index in self.absorbed:
                continue
            if node.op_type == "Shape" and isinstance(self.values.get(node.input[0]), Tensor):
                self.values[node.output[0]] = shape_of(self.values[node.input[0]], _attributes(node))
            elif not self.fold(node):
                layers[node.op_type](self, node, _attributes(node), index)
        result = self.values.get(output_name)
        if not isinstance(result, Tensor) or result.stage == INPUT:
            raise ConvlensError(
                f"output {printable(output_name)[:60]!r}: it is not computed from the image by any layer"
            )
        return {
            "format": GRAPH_FORMAT,
            "modules": self.modules,
            "stages": self.stages,
            "output": result.stage,
        }

    def tensors(self) -> dict[str, str]:
        """Each stage's ONNX tensor (the first name its value has; a padding stage inserted
        before a convolution has none)."""
        found: dict[str, str] = {}
        for name, value in self.values.items():
            if isinstance(value, Tensor) and value.stage != INPUT:
                found.setdefault(value.stage, name)
        return found


def initializer_arrays(graph) -> dict[str, np.ndarray]:
    """Every initializer as a numpy array (protobuf data: nothing unpickled)."""
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


# ------------------------------------------------------------------- constants and shapes


def shape_of(tensor: Tensor, attributes: dict) -> np.ndarray:
    """``Shape`` of an image tensor, symbolically: the batch as ``BATCH``, a size shape
    inference could not fix as None."""
    if tensor.shape is None:
        raise ConvlensError("Shape: the shape of a tensor is not known; export the model with fixed sizes")
    dims = np.array([BATCH, *tensor.shape[1:]], dtype=object)
    return dims[slice(attributes.get("start", 0), attributes.get("end"))]


def _constant_attribute(node) -> np.ndarray:
    attributes = _attributes(node)
    if "value" in attributes:
        return numpy_helper.to_array(attributes["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32)):
        if key in attributes:
            return np.array(attributes[key], dtype=dtype)
    for key in ("value_int", "value_ints"):
        if key in attributes:
            return np.array(attributes[key], dtype=np.int64)
    raise ConvlensError(f"Constant node {printable(node.name)[:60]!r}: only numeric constants are read")


def _axes(node, inputs: list, rank: int) -> list[int]:
    axes = _attributes(node).get("axes")
    if axes is None and len(inputs) > 1 and inputs[1] is not None:
        axes = inputs[1]
    return sorted(int(a) % rank for a in np.ravel(axes if axes is not None else []))


def _symbolic(node, inputs: list) -> list:
    """The shape operators on arrays that may hold ``BATCH`` (object arrays)."""
    op, attributes, data = node.op_type, _attributes(node), inputs[0]
    if op in ("Identity", "Cast"):
        return [data]
    if op == "Gather":
        return [np.take(data, np.asarray(inputs[1], dtype=np.int64), axis=attributes.get("axis", 0))]
    if op == "Unsqueeze":
        count = len(np.ravel(attributes.get("axes", inputs[1] if len(inputs) > 1 else [])))
        for axis in _axes(node, inputs, data.ndim + count):
            data = np.expand_dims(data, axis)
        return [data]
    if op == "Squeeze":
        return [np.squeeze(data, axis=tuple(_axes(node, inputs, data.ndim)) or None)]
    if op == "Concat":
        parts = [np.asarray(v, dtype=object) for v in inputs]
        return [np.concatenate(parts, axis=attributes.get("axis", 0))]
    if op == "Slice" and data.ndim == 1:
        starts, ends = (
            (attributes.get("starts"), attributes.get("ends")) if "starts" in attributes else inputs[1:3]
        )
        steps = inputs[4] if len(inputs) > 4 and inputs[4] is not None else [1]
        return [data[int(np.ravel(starts)[0]) : int(np.ravel(ends)[0]) : int(np.ravel(steps)[0])]]
    raise ConvlensError(
        f"{op} node {printable(node.name)[:60]!r}: it computes on a tensor's shape in a way convlens "
        "cannot follow; export the model with fixed sizes"
    )


def _settled(dims: np.ndarray) -> np.ndarray:
    """A symbolic shape whose sizes are all known becomes plain numbers again (they may fold further)."""
    if all(isinstance(d, int | np.integer) for d in dims.ravel()):
        return dims.astype(np.int64)
    return dims


def fold_node(node, inputs: list, converter) -> list:
    """The outputs of a node whose inputs are all numbers or symbolic shapes (module docstring)."""
    if node.op_type == "Constant":
        return [_constant_attribute(node)]
    if any(isinstance(v, np.ndarray) and v.dtype == object for v in inputs):
        return [_settled(np.asarray(v, dtype=object)) for v in _symbolic(node, inputs)]
    if any(v is None for name, v in zip(node.input, inputs, strict=True) if name):
        missing = next(name for name, v in zip(node.input, inputs, strict=True) if name and v is None)
        raise ConvlensError(
            f"{node.op_type} node {printable(node.name)[:60]!r}: input {printable(missing)[:60]!r} is never computed"
        )
    if sum(v.size for v in inputs if v is not None) > MAX_FOLDED:
        raise ConvlensError(
            f"{node.op_type} node {printable(node.name)[:60]!r}: a constant computation too large to fold"
        )
    from onnx.reference import ReferenceEvaluator

    try:
        feeds = {name: value for name, value in zip(node.input, inputs, strict=True) if name}
        return list(ReferenceEvaluator(node).run(None, feeds))
    except Exception as exc:  # the operator's own complaint, as one line
        reason = printable(str(exc)).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ConvlensError(
            f"{node.op_type} node {printable(node.name)[:60]!r}: cannot compute its constant ({reason})"
        ) from None
