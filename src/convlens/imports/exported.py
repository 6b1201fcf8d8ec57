"""A ``torch.export`` program (``.pt2``) as a run folder: its ATen graph mapped to known layers.

``torch.export`` writes a model as a graph of ATen operations plus its weights, so convlens can
open a model whose class it has never seen without running the class's code. Each operation is
mapped to a layer of ``convlens.models.graph_spec.LAYER_TYPES`` (``aten.conv2d`` → ``Conv2d``,
``aten.add_`` → ``Add``); the stages are named as a module traced in memory names them (module
path, ``_1`` for a second call, ``SCOPE.OPNAME`` for a function), read from each node's
``nn_module_stack``, so every face shows the same names whichever route brought the model. The
rebuilt graph model is checked against the program on a random image before anything is written.
"""

from __future__ import annotations

import contextlib
import operator
import os
import pickle
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from convlens.errors import ConvlensError, printable
from convlens.imports.aten_layers import (
    OPS,
    PASS_THROUGH,
    TAKES_NODE,
    TENSOR_ARGUMENTS,
    bound_arguments,
    call_of,
    op_name,
    shape_of,
)
from convlens.models.graph_spec import GRAPH_FORMAT, INPUT, LAYER_TYPES, build_layer, check_graph

_LOAD_LOCK = threading.Lock()  # the patches below are process-wide: one load at a time


class _Refused(Exception):
    """A payload that needs unpickling; not a RuntimeError, which ``torch.export.load`` swallows."""


class _NoPickle:
    """Stands in for the ``pickle`` module inside torch's pt2 reader: loads refuse, the rest is pickle's."""

    def __getattr__(self, name):
        return getattr(pickle, name)

    def loads(self, *args, **kwargs):
        raise _Refused("a Python object in it needs unpickling")

    load = loads


def _reason(exc: Exception) -> str:
    """The line of torch's refusal that names what it would have unpickled (``GLOBAL posix.system``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    return printable(next((line for line in lines if "GLOBAL" in line), lines[0]))[:160]


@contextlib.contextmanager
def _tensors_only():
    """While held, torch's readers load tensors only: ``torch.load`` runs with ``weights_only=True``
    (the pt2 reader asks for ``False``, and its legacy path falls back to it), and torchbind or
    plain pickles refuse."""
    from torch.export.pt2_archive import _package

    real_load = torch.load

    def load_weights_only(f, *args, **kwargs):
        kwargs["weights_only"] = True
        try:
            return real_load(f, *args, **kwargs)
        except Exception as exc:  # weights_only refuses any object but tensors and containers
            raise _Refused(_reason(exc)) from None

    def refuse(*args, **kwargs):
        raise _Refused("a TorchScript object in it needs unpickling")

    patches = (
        (torch, "load", load_weights_only),
        (torch._C, "_pickle_load_obj", refuse),
        (_package, "pickle", _NoPickle()),
    )
    with _LOAD_LOCK:
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
        try:
            for owner, name, value in patches:
                setattr(owner, name, value)
            yield
        finally:
            for owner, name, value in saved:
                setattr(owner, name, value)


def read_program(path: str | os.PathLike) -> torch.export.ExportedProgram:
    """The program ``torch.export.save`` wrote to ``path``, read without unpickling anything.

    Why: torch's own reader unpickles weights it stored as pickles (``weights_only=False``) and
    custom objects, and unpickling can run any code the file's author chose. Under
    ``_tensors_only`` such a file is refused by name instead; a plain program (tensors and JSON)
    reads as usual."""
    shown = printable(path)
    path = Path(path)
    if not path.is_file():
        raise ConvlensError(f"program {shown}: no such file", parameter="program")
    if not zipfile.is_zipfile(path):
        raise ConvlensError(
            f"program {shown}: not a torch.export program (a .pt2 file is a zip archive)", parameter="program"
        )
    with open(path, "rb") as file, _tensors_only():
        try:
            return torch.export.load(file)
        except _Refused as exc:
            raise ConvlensError(
                f"program {shown}: refusing to unpickle it ({exc}): unpickling can run arbitrary code; "
                "save the program with plain tensors (torch.export.save)",
                parameter="program",
            ) from None
        except KeyError:
            raise ConvlensError(
                f"program {shown}: the .pt2 holds no program named 'model'", parameter="program"
            ) from None
        except Exception as exc:  # torch's reader: a zip that is no pt2, a version it does not read
            reason = printable(str(exc)).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise ConvlensError(
                f"program {shown}: not a torch.export program torch can read ({reason})", parameter="program"
            ) from None


def graph_from_program(program: torch.export.ExportedProgram) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """The graph description, weights (under the program's own key names) and facts
    (``input_shape`` C,H,W or None where symbolic, ``static_batch`` or None) of ``program``."""
    from torch.export.graph_signature import InputKind, OutputKind

    signature = program.graph_signature
    users = [spec.arg.name for spec in signature.input_specs if spec.kind == InputKind.USER_INPUT]
    nodes = list(program.graph_module.graph.nodes)
    image = next((node for node in nodes if node.op == "placeholder" and node.name in users), None)
    if len(users) != 1 or len(shape_of(image)) != 4:
        raise ConvlensError(
            "program: it must take one batch of images (N, C, H, W) as its input", parameter="program"
        )
    batch, *chw = shape_of(image)
    facts = {"input_shape": tuple(chw) if all(isinstance(d, int) for d in chw) else None}
    facts["static_batch"] = batch if isinstance(batch, int) else None
    keys = {spec.arg.name: spec.target for spec in signature.input_specs if spec.kind != InputKind.USER_INPUT}
    walk = _Walk(keys, {**program.constants, **program.state_dict}, image)
    for node in nodes:
        if node.op == "call_function":
            walk.add(node)
    if walk.refused:
        more = f", and {len(walk.refused) - 4} more" if len(walk.refused) > 4 else ""
        raise ConvlensError(
            f"program: these operations have no convlens layer: {'; '.join(walk.refused[:4])}{more}. A graph "
            f"can hold these layers: {', '.join(LAYER_TYPES)}",
            parameter="program",
        )
    outputs = [spec.arg.name for spec in signature.output_specs if spec.kind == OutputKind.USER_OUTPUT]
    results = {getattr(node, "name", None): node for node in nodes[-1].args[0]}  # the output node's
    output = walk.value_of.get(results.get(outputs[0])) if len(outputs) == 1 else None
    if output in (None, INPUT):
        raise ConvlensError("program: it must return one tensor (the class scores)", parameter="program")
    graph = {"format": GRAPH_FORMAT, "modules": walk.modules, "stages": walk.stages, "output": output}
    return check_graph(graph), walk.state, facts


class _Walk:
    """The program's nodes, in order, turned into stages: names, layers, weights, refusals."""

    def __init__(self, keys: dict[str, str], tensors: dict[str, torch.Tensor], image) -> None:
        self.keys, self.tensors = keys, tensors  # placeholder → weight key; weight key → tensor
        self.value_of = {image: INPUT}  # node → the stage that holds its value now (in-place ops move it)
        self.modules, self.state, self.stages, self.refused = {}, {}, [], []
        self.used, self.called = {INPUT, "normalize"}, set()  # stage names; module calls named
        self.broken = set()  # nodes that are or read a refused op

    def refuse(self, node, what: str) -> None:
        self.refused.append(what)
        self.broken.add(node)

    def unique(self, base: str) -> str:
        """``base``, or ``base_1``, ``base_2``, ... as the traced route names a name's next use."""
        name, count = base, 0
        while name in self.used:
            count += 1
            name = f"{base}_{count}"
        self.used.add(name)
        return name

    def add(self, node) -> None:
        value_of = self.value_of
        if any(read in self.broken for read in node.all_input_nodes):  # after a refused op: not listed
            self.broken.add(node)
            return
        if node.target is operator.getitem:  # of a tuple-returning op: its first item is the map
            if node.args[1] == 0 and node.args[0] in value_of:
                value_of[node] = value_of[node.args[0]]
            elif node.users:
                self.refuse(node, f"item {node.args[1]} of {node.args[0].name}")
            return
        op = op_name(node)
        if op in PASS_THROUGH or not isinstance(node.meta.get("val"), torch.Tensor | tuple | list):
            if node.args and node.args[0] in value_of:
                value_of[node] = value_of[node.args[0]]
            return
        bound, layer = _layer_of(node, op)
        reads = [
            v for name in TENSOR_ARGUMENTS for v in _listed(bound.get(name)) if isinstance(v, torch.fx.Node)
        ]
        if not layer or not all(read in value_of for read in reads):
            self.refuse(node, f"{node.target} at {node.name}")
            return
        key, path, is_layer = call_of(node)
        base = path if is_layer and key not in self.called else f"{path}.{op}" if path else op
        self.called.add(key)
        reads = [value_of[read] for read in reads]
        if layer == "mean":  # x.mean((2, 3)): the average pool, then the flatten that drops H, W
            pooled = self.unique(f"{base}_pooled")
            self.stages.append({"name": pooled, "type": "AdaptiveAvgPool2d", "args": {"output_size": 1}, "reads": reads})  # fmt: skip
            layer, reads = ("Flatten", {"start_dim": 1}), [pooled]
        (kind, args), name = layer, self.unique(base)
        weights = {n: self.keys[v.name] for n, v in bound.items() if getattr(v, "name", None) in self.keys}
        if weights:
            self.stages.append({"name": name, "module": self.stateful(kind, args, weights), "reads": reads})
        else:
            self.stages.append({"name": name, "type": kind, "args": args, "reads": reads})
        value_of[node] = name
        if node.target._schema.is_mutable and node.args[0] in value_of:  # later readers see the change
            value_of[node.args[0]] = name

    def stateful(self, kind: str, args: dict, weights: dict[str, str]) -> str:
        """The module path of a layer with weights (its weight's key less ``.weight``), entered in
        ``modules`` and its tensors in ``state`` under the program's key names."""
        first = weights.get("weight") or weights.get("running_mean") or next(iter(weights.values()))
        path = first.rpartition(".")[0]
        with torch.device("meta"):  # the key names only: allocates nothing
            own = {
                f"{path}.{key}": key for key in build_layer(kind, args, f"program layer {path}").state_dict()
            }
        if not path or not set(weights.values()) <= set(own):
            raise ConvlensError(
                f"program: {kind} reads {', '.join(sorted(weights.values()))}, which are not one layer's weights",
                parameter="program",
            )
        entry = {"type": kind, "args": args}
        if self.modules.setdefault(path, entry) != entry:
            raise ConvlensError(
                f"program: the layer {path} is called with different arguments", parameter="program"
            )
        for key, short in own.items():
            if key in self.tensors:
                self.state[key] = self.tensors[key].detach().clone()
            elif short == "num_batches_tracked":  # a program may leave out a buffer no op reads
                self.state[key] = torch.zeros((), dtype=torch.long)
            else:
                raise ConvlensError(f"program: its weights have no {key}", parameter="program")
        return path


def _listed(value) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def _layer_of(node, op: str):
    """(bound arguments, (layer type, arguments) or "mean" or None) of a call."""
    build = OPS.get(op)
    if build is None or not hasattr(node.target, "_schema"):
        return {}, None
    bound = bound_arguments(node)
    try:
        return bound, build(bound, node) if build in TAKES_NODE else build(bound)
    except (KeyError, IndexError, TypeError, ZeroDivisionError):  # an overload with other arguments
        return bound, None


# ------------------------------------------------------------------------------ the import


class _ProgramOnPixels(nn.Module):
    """The program's module, run in chunks of its static batch size (the last padded), and kept
    out of ``children`` because an exported module refuses ``train()``/``eval()``."""

    def __init__(self, program: torch.export.ExportedProgram, batch: int | None) -> None:
        super().__init__()
        object.__setattr__(self, "program_module", program.module())
        self.batch = batch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.batch is None:
            return self.program_module(images)
        outputs = []
        for start in range(0, len(images), self.batch):
            chunk = images[start : start + self.batch]  # (≤ batch, C, H, W)
            padding = chunk.new_zeros(self.batch - len(chunk), *chunk.shape[1:])
            outputs.append(self.program_module(torch.cat([chunk, padding]))[: len(chunk)])
        return torch.cat(outputs)


def import_program(
    program: torch.export.ExportedProgram | str | os.PathLike,
    run_dir: str | Path,
    class_names: Sequence[str] | str | None = None,
    input_shape: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    data: str | Path | None = None,
    overwrite: bool = False,
):
    """``convlens import`` of a ``torch.export`` program (in memory or a ``.pt2`` file) as a run
    folder of the ``graph`` model, checked to reproduce the program; returns an ``ImportResult``."""
    from convlens.imports.core import ImportResult, write_run
    from convlens.imports.graph_route import build_graph
    from convlens.imports.preprocessing import resolve_preprocessing
    from convlens.models import Normalize
    from convlens.models.graph_capture import check_reproduces

    if isinstance(program, str | os.PathLike):
        source, label, program = Path(program).name, printable(program), read_program(program)
    elif isinstance(program, torch.export.ExportedProgram):
        source = label = "in memory"
    else:
        raise ConvlensError(
            f"program must be a torch.export ExportedProgram or a .pt2 file, got {type(program).__name__}",
            parameter="program",
        )
    graph, state, facts = graph_from_program(program)
    own_shape = facts["input_shape"]
    shape = own_shape if input_shape is None and data is None else input_shape
    if shape is None and data is None:
        raise ConvlensError(
            "input_shape is needed (C,H,W): the program's sizes are not fixed", parameter="input_shape"
        )
    prep, names, data_facts = resolve_preprocessing(class_names, shape, mean, std, data)
    model, loaded = build_graph(graph, state, prep, names, f"program {label}")
    original = nn.Sequential(
        Normalize(*prep.model_normalization()), _ProgramOnPixels(program, facts["static_batch"])
    )
    try:
        check_reproduces(original, model, prep.input_shape, "saved graph")
    except ConvlensError:
        raise
    except Exception as exc:  # the program's own guards: a size it was not exported for
        reason = printable(str(exc)).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ConvlensError(
            f"input_shape {list(prep.input_shape)}: the program does not take it ({reason}); it was exported "
            f"for {list(own_shape) if own_shape else 'other sizes'}",
            parameter="input_shape",
        ) from None
    imported = {"route": "torch.export", "arch": "graph", "program": source, "loaded_tensors": loaded}
    json_path = write_run(run_dir, model, prep, names, data_facts, imported, overwrite)
    return ImportResult(json_path, "graph", prep, names, loaded, {"program": label})
