"""A model's computation as plain JSON: the stages of a graph, each a known layer with its arguments.

A model the user brings (a module traced in memory, a ``torch.export`` program, an ONNX file)
is saved as this description plus its weights in safetensors, so opening the run later builds
it again from data alone: no class code is imported, nothing is unpickled, and a checkpoint
cannot name anything outside ``LAYER_TYPES``, an allow-list of torch.nn layers and convlens's
merges. The format::

    {"format": "convlens-graph/1",
     "modules": {"layer1.0.conv1": {"type": "Conv2d", "args": {"in_channels": 64, ...}}, ...},
     "stages": [{"name": "layer1.0.conv1", "module": "layer1.0.conv1", "reads": ["maxpool"]},
                {"name": "layer1.0.add", "type": "Add", "args": {}, "reads": ["layer1.0.bn2", "maxpool"]},
                ...],
     "output": "fc"}

``modules`` holds the layers with weights or buffers, by the module path the user's model gave
them, so the weights keep the user's key names (``layer1.0.conv1.weight``); a stage that calls
one names it, and two stages may call the same one (a block's ``relu`` called twice). Layers
without state are written in the stage itself. ``reads`` lists the tensors a stage is called
with, in order: earlier stages, or ``input`` (the image after the model's normalization).
``check_graph`` checks every field before anything is built.
"""

from __future__ import annotations

import inspect
import re

from torch import nn

from convlens.errors import ConvlensError, printable
from convlens.models.calls import Add, Concat

GRAPH_FORMAT = "convlens-graph/1"
INPUT = "input"
RESERVED = (INPUT, "normalize")  # names of the image and the model's normalization stage
MAX_STAGES = 20_000
MAX_NAME_CHARS = 300
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*")  # one part of a module path: torch's own rule, no "_x"


def _torch_layers(*names: str) -> dict[str, type[nn.Module]]:
    return {name: getattr(nn, name) for name in names}


# every layer a graph may name: its name in the JSON → its class
LAYER_TYPES: dict[str, type[nn.Module]] = {
    **_torch_layers(
        "Conv2d",
        "ConvTranspose2d",
        "BatchNorm1d",
        "BatchNorm2d",
        "GroupNorm",
        "InstanceNorm2d",
        "LayerNorm",
        "Linear",
        "ReLU",
        "ReLU6",
        "LeakyReLU",
        "PReLU",
        "ELU",
        "GELU",
        "SiLU",
        "Mish",
        "Sigmoid",
        "Tanh",
        "Hardswish",
        "Hardsigmoid",
        "Hardtanh",
        "Softplus",
        "Softmax",
        "LogSoftmax",
        "MaxPool2d",
        "AvgPool2d",
        "AdaptiveAvgPool2d",
        "AdaptiveMaxPool2d",
        "Flatten",
        "Dropout",
        "Dropout2d",
        "Identity",
        "Upsample",
        "ZeroPad2d",
        "PixelShuffle",
    ),
    "Add": Add,
    "Concat": Concat,
}
_NAMES = {cls: name for name, cls in LAYER_TYPES.items()}
_SKIPPED_ARGUMENTS = {"device", "dtype", "self", "args", "kwargs"}


def _parameters(cls: type[nn.Module]) -> dict[str, inspect.Parameter]:
    signature = inspect.signature(cls.__init__)
    return {name: p for name, p in signature.parameters.items() if name not in _SKIPPED_ARGUMENTS}


def _to_json(value):
    if isinstance(value, tuple | list):
        return [_to_json(item) for item in value]
    return value


def _from_json(value):
    return tuple(_from_json(item) for item in value) if isinstance(value, list) else value


def layer_type(module: nn.Module) -> str | None:
    """The name ``module``'s exact class has in ``LAYER_TYPES`` (None: a graph cannot hold it)."""
    return _NAMES.get(type(module))


def layer_arguments(module: nn.Module) -> dict:
    """The constructor arguments that build ``module`` again (its weights come separately): each
    argument read from the attribute of the same name, ``bias`` as whether it has one, and
    ``inplace`` always false (a graph runs every layer out of place)."""
    arguments = {}
    for name, parameter in _parameters(type(module)).items():
        if name == "inplace":
            continue
        if name == "bias" and parameter.default is True:
            arguments[name] = getattr(module, "bias", None) is not None
        elif hasattr(module, name) and _plain(getattr(module, name)):
            arguments[name] = _to_json(getattr(module, name))
        elif parameter.default is inspect.Parameter.empty:
            raise ConvlensError(
                f"model: cannot describe {type(module).__name__}: its argument {name!r} is not kept as "
                "a plain value",
                parameter="model",
            )
    return arguments


def _plain(value, depth: int = 0) -> bool:
    """A JSON scalar, or a short list of them (a kernel size, a padding, an output size)."""
    if value is None or isinstance(value, bool | int | float):
        return not isinstance(value, float) or (value == value and abs(value) != float("inf"))
    if isinstance(value, str):
        return len(value) <= 40 and value.isprintable()
    if isinstance(value, tuple | list) and depth == 0:
        return len(value) <= 8 and all(_plain(item, 1) for item in value)
    return False


def build_layer(kind: str, arguments: dict, where: str) -> nn.Module:
    """A layer of ``LAYER_TYPES`` built from checked JSON arguments; ``where`` names the field."""
    cls = LAYER_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ConvlensError(f"{where}.type: {printable(repr(kind))} is not a layer a graph may name")
    if not isinstance(arguments, dict):
        raise ConvlensError(f"{where}.args: expected an object of arguments, got {type(arguments).__name__}")
    allowed = _parameters(cls)
    for key, value in arguments.items():
        if key not in allowed or key == "inplace":
            raise ConvlensError(f"{where}.args: {kind} takes no argument {printable(repr(key))}")
        if not _plain(value):
            raise ConvlensError(
                f"{where}.args.{key}: expected a number, a short text or a short list of them"
            )
    try:
        return cls(**{key: _from_json(value) for key, value in arguments.items()})
    except Exception as exc:  # torch's own check of the values: one line, named by field
        reason = printable(str(exc)).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ConvlensError(f"{where}.args: {kind} refuses these arguments ({reason})") from None


def _check_path(path, where: str) -> str:
    if (
        not isinstance(path, str)
        or len(path) > MAX_NAME_CHARS
        or not all(_SEGMENT.fullmatch(part) for part in path.split("."))
    ):
        raise ConvlensError(
            f"{where}: expected a module path (dotted names of letters, digits and _), got {printable(repr(path))[:80]}"
        )
    return path


def check_graph(graph) -> dict:
    """Check every field of a graph description (see the module docstring); returns it unchanged.
    Errors name the field: ``graph.stages[3].reads[0]: 'conv9' is not an earlier stage``."""
    if not isinstance(graph, dict) or graph.get("format") != GRAPH_FORMAT:
        raise ConvlensError(f"graph: expected an object with format {GRAPH_FORMAT!r}")
    modules, stages, output = graph.get("modules"), graph.get("stages"), graph.get("output")
    if not isinstance(modules, dict):
        raise ConvlensError("graph.modules: expected an object of module path → layer")
    paths = sorted(modules)
    for path in paths:
        _check_path(path, f"graph.modules[{printable(repr(path))[:80]}]")
        entry = modules[path]
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise ConvlensError(f"graph.modules[{path!r}]: expected an object with type and args")
    for path in paths:
        parts = path.split(".")
        holder = next(
            (".".join(parts[:n]) for n in range(1, len(parts)) if ".".join(parts[:n]) in modules), None
        )
        if holder is not None:
            raise ConvlensError(f"graph.modules: {holder!r} is a layer and also holds {path!r}")
    if not isinstance(stages, list) or not 1 <= len(stages) <= MAX_STAGES:
        raise ConvlensError(f"graph.stages: expected a list of 1 to {MAX_STAGES:,} stages")
    seen = set(RESERVED[:1])
    for index, stage in enumerate(stages):
        where = f"graph.stages[{index}]"
        if not isinstance(stage, dict):
            raise ConvlensError(f"{where}: expected an object with name, reads and module or type")
        name = stage.get("name")
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise ConvlensError(
                f"{where}.name: expected a printable name of at most {MAX_NAME_CHARS} characters"
            )
        if name in seen or name in RESERVED:
            raise ConvlensError(f"{where}.name: {printable(repr(name))} is used twice or reserved")
        if ("module" in stage) == ("type" in stage):
            raise ConvlensError(f"{where}: give either module (a path in graph.modules) or type, not both")
        if "module" in stage and stage["module"] not in modules:
            raise ConvlensError(
                f"{where}.module: {printable(repr(stage['module']))[:80]} is not in graph.modules"
            )
        reads = stage.get("reads")
        if not isinstance(reads, list) or not 1 <= len(reads) <= 64:
            raise ConvlensError(f"{where}.reads: expected a list of 1 to 64 stage names")
        for position, read in enumerate(reads):
            if read not in seen:
                raise ConvlensError(
                    f"{where}.reads[{position}]: {printable(repr(read))[:80]} is not the input or an earlier stage"
                )
        seen.add(name)
    if output not in seen or output == INPUT:
        raise ConvlensError(f"graph.output: expected the name of a stage, got {printable(repr(output))[:80]}")
    return graph
