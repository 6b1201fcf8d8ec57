"""Stage modules for the functions a traced graph calls: an addition, a concatenation, any call.

A traced model (``convlens.models.traced``) makes every tensor operation of a forward a stage,
and every stage a module of its own, so forward hooks, Captum's layer methods and the
layer-kind table (``convlens.inspect.layer_kinds``, keyed by module class) reach ``x + y`` or
``F.relu(x)`` exactly as they reach a ``Conv2d``. ``CALLS`` keys that table by function: it says
which module stands for which function or tensor method (``F.relu`` → ``nn.ReLU``,
``torch.flatten`` → ``nn.Flatten``, ``+`` → ``Add``, ``torch.cat`` → ``Concat``); a call it does
not know keeps its function in a ``FunctionCall`` (its maps are shown, its arithmetic is not).
"""

from __future__ import annotations

import contextlib
import copy
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.utils._pytree import tree_leaves

# a builder gets the call's argument values and returns the module that computes the same from
# the call's tensor arguments alone (in order), or None when this call is not one it models
CallBuilder = Callable[..., nn.Module | None]

# function or tensor-method name → builder (``register_call``)
CALLS: dict[Callable | str, CallBuilder] = {}

# where functions take ``inplace`` when it is passed by position (``F.relu(x, True)``)
_INPLACE_POSITION = {
    F.relu: 1,
    F.relu6: 1,
    F.silu: 1,
    F.hardswish: 1,
    F.leaky_relu: 2,
    F.elu: 2,
    F.hardtanh: 3,
    F.dropout: 3,
}
_RESHAPES = ("view", "reshape", "flatten", torch.reshape)  # a flatten when it keeps only the batch

# in-place operations and the out-of-place ones a traced model runs instead (it redirects later
# readers of the changed tensor to the result, so the values are the model's own)
OUT_OF_PLACE: dict[Callable, Callable] = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
    torch.relu_: torch.relu,
    F.relu_: F.relu,
}


class Add(nn.Module):
    """A residual addition: the sum of its input maps (``+``, ``torch.add``), plus a constant."""

    def __init__(self, constant: float = 0.0) -> None:
        super().__init__()
        self.constant = constant

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        total = inputs[0]
        for other in inputs[1:]:
            total = total + other  # broadcasts as + does
        return total + self.constant if self.constant else total

    def extra_repr(self) -> str:
        return f"constant={self.constant}" if self.constant else ""


class Concat(nn.Module):
    """A concatenation (``torch.cat``): the input maps stacked along ``dim`` (1: channels)."""

    def __init__(self, dim: int = 0) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat(inputs, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class FunctionCall(nn.Module):
    """A call the table does not model (``torch.sigmoid``, ``x * 0.5``, ``x.mean((2, 3))``): run as
    the model wrote it, with every argument, so its output is exact and its map can be shown."""

    def __init__(self, function: Callable, name: str) -> None:
        super().__init__()
        self.function = function
        self.name = name

    @property
    def kind_name(self) -> str:
        return self.name

    def forward(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    def extra_repr(self) -> str:
        return self.name


def twin_module(module: nn.Module, inplace: bool | None = None) -> nn.Module:
    """A second module object for another call of ``module``: the same class, weights and
    buffers (shared, not copied), with hooks of its own."""
    twin = copy.copy(module)
    for attribute, value in vars(module).items():
        if "hooks" in attribute and isinstance(value, dict):
            setattr(twin, attribute, type(value)())
    if inplace is not None:
        twin.inplace = inplace
    return twin


@dataclass(frozen=True)
class StageCall:
    """The module that runs one call of a traced graph, and how it is called."""

    module: nn.Module
    tensors_only: bool  # called with the call's tensor arguments only (a module from CALLS)


def operation_name(node: fx.Node) -> str:
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", type(target).__name__)


def _in_place(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return bool(getattr(modules[node.target], "inplace", False))
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.endswith("__")
    position = _INPLACE_POSITION.get(node.target)
    positional = position is not None and len(node.args) > position and node.args[position] is True
    return node.target in OUT_OF_PLACE or node.kwargs.get("inplace") is True or positional


def run_out_of_place(graph: fx.Graph, modules: dict[str, nn.Module]) -> set[fx.Node]:
    """Rewrite every in-place call as its out-of-place twin, and let later readers of the tensor it
    changed read its result; returns the call_module nodes whose module must run out of place."""
    order = {node: index for index, node in enumerate(graph.nodes)}
    module_calls = set()
    for node in list(graph.nodes):
        if node.op not in ("call_module", "call_function", "call_method") or not _in_place(node, modules):
            continue
        if node.op == "call_module":
            module_calls.add(node)
        elif node.op == "call_method":
            node.target = node.target[:-1]
        elif node.target in OUT_OF_PLACE:
            node.target = OUT_OF_PLACE[node.target]
        elif node.kwargs.get("inplace") is True:
            node.kwargs = {**node.kwargs, "inplace": False}
        else:
            position = _INPLACE_POSITION[node.target]
            node.args = (*node.args[:position], False, *node.args[position + 1 :])
        changed = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if changed is None:
            continue
        for user in list(changed.users):
            if order[user] > order[node]:
                user.replace_input_with(changed, node)
    return module_calls


def _flattens(node: fx.Node, values: list, output: torch.Tensor) -> bool:
    """A reshape that keeps the batch and lays the rest out as one vector (``x.view(x.size(0), -1)``)."""
    source = values[0] if values else None
    return (
        node.target in _RESHAPES
        and isinstance(source, torch.Tensor)
        and source.ndim >= 3
        and tuple(output.shape) == (source.shape[0], math.prod(source.shape[1:]))
    )


def plain_call(node: fx.Node, args, kwargs):
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    return node.target(*args, **kwargs)


def stage_call(node: fx.Node, args, kwargs, output: torch.Tensor, from_graph: list) -> StageCall:
    """The module of a function call's stage: the module ``CALLS`` builds for it when it gives the
    same output from the call's tensors alone, else the call itself (``FunctionCall``)."""
    tensors = [v for v in tree_leaves((args, kwargs)) if isinstance(v, torch.Tensor)]
    # a builder sees argument values fixed once; one that came from the graph (x.size(0)) may change
    only_tensors_from_graph = all(isinstance(value, torch.Tensor) for value in from_graph)
    candidates = []
    if _flattens(node, list(args), output):
        candidates.append((nn.Flatten(), [args[0]]))
    build = CALLS.get(node.target)
    if build is not None and only_tensors_from_graph:
        with contextlib.suppress(TypeError):  # a signature the builder does not take
            candidates.append((build(*args, **kwargs), tensors))
    for module, inputs in candidates:
        if module is None:
            continue
        try:
            same = torch.equal(module.eval()(*inputs), output)
        except Exception:  # not this call after all
            same = False
        if same:
            return StageCall(module, tensors_only=True)
    function = getattr(torch.Tensor, node.target) if node.op == "call_method" else node.target
    return StageCall(FunctionCall(function, operation_name(node)), tensors_only=False)


def register_call(target: Callable | str, build: CallBuilder) -> None:
    """Let a traced graph's calls of ``target`` (a function, or a tensor method's name) become
    the module ``build(*args, **kwargs)`` returns; the layer-kind table then knows them by its class."""
    CALLS[target] = build


def unregister_call(target: Callable | str) -> None:
    CALLS.pop(target, None)


def _relu(input, inplace=False):
    return nn.ReLU()  # in-place or not, the same values: the traced model runs it out of place


def _flatten(input, start_dim=0, end_dim=-1):
    return nn.Flatten(start_dim, end_dim)


def _add(input, other, *, alpha=1, out=None):
    if alpha != 1 or out is not None:
        return None
    constants = [value for value in (input, other) if not isinstance(value, torch.Tensor)]
    if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in constants):
        return None
    return Add(float(sum(constants)))


def _cat(tensors, dim=0, *, out=None):
    if out is not None or not all(isinstance(t, torch.Tensor) for t in tensors):
        return None
    return Concat(dim)


def _max_pool(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    return (
        None if return_indices else nn.MaxPool2d(kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)
    )


def _avg_pool(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):  # fmt: skip
    return nn.AvgPool2d(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def _adaptive_avg_pool(input, output_size):
    return nn.AdaptiveAvgPool2d(output_size)


def _dropout(input, p=0.5, training=True, inplace=False):
    return nn.Dropout(p)  # follows the traced model's train/eval mode, as a module does


def _activation(module_type: type[nn.Module]) -> CallBuilder:
    """A builder for an activation function whose module takes no arguments but ``inplace``."""

    def build(input, inplace=False):
        return module_type()

    return build


def _leaky_relu(input, negative_slope=0.01, inplace=False):
    return nn.LeakyReLU(negative_slope)


def _hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    return nn.ReLU6() if (min_val, max_val) == (0.0, 6.0) else nn.Hardtanh(min_val, max_val)


def _gelu(input, approximate="none"):
    return nn.GELU(approximate)


def _softmax(input, dim=None, _stacklevel=3, dtype=None):
    return nn.Softmax(dim) if dtype is None and dim is not None else None


for _targets, _build in (
    ((torch.sigmoid, F.sigmoid, "sigmoid"), _activation(nn.Sigmoid)),
    ((torch.tanh, F.tanh, "tanh"), _activation(nn.Tanh)),
    ((F.relu6,), _activation(nn.ReLU6)),
    ((F.silu,), _activation(nn.SiLU)),
    ((F.hardswish,), _activation(nn.Hardswish)),
    ((F.hardsigmoid,), _activation(nn.Hardsigmoid)),
    ((F.mish,), _activation(nn.Mish)),
    ((F.leaky_relu,), _leaky_relu),
    ((F.hardtanh,), _hardtanh),
    ((F.gelu,), _gelu),
    ((torch.softmax, F.softmax, "softmax"), _softmax),
    ((F.relu, torch.relu, "relu", F.relu_, torch.relu_, "relu_"), _relu),
    ((torch.flatten, "flatten"), _flatten),
    ((operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__radd__"), _add),
    ((torch.cat, torch.concat), _cat),
    ((F.max_pool2d, torch.max_pool2d), _max_pool),
    ((F.avg_pool2d,), _avg_pool),
    ((F.adaptive_avg_pool2d,), _adaptive_avg_pool),
    ((F.dropout,), _dropout),
):
    for _target in _targets:
        register_call(_target, _build)
