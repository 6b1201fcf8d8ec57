"""ATen operations of a ``torch.export`` program, mapped to the layers a graph may name.

``OPS`` maps an operation's plain name (``conv2d``, ``relu`` for ``relu_`` too, ``add``) to a
builder that reads the call's arguments by their schema names and returns (layer type, layer
arguments) from ``convlens.models.graph_spec.LAYER_TYPES``; ``convlens.imports.exported`` walks the
program and names the stages. Kept apart from the walk so the table reads as one list.
"""

from __future__ import annotations

import math

import torch

from convlens.errors import ConvlensError
from convlens.models.graph_spec import LAYER_TYPES


def bound_arguments(node) -> dict:
    """The call's arguments by their schema names, defaults filled in."""
    values = {}
    for index, argument in enumerate(node.target._schema.arguments):
        if index < len(node.args):
            values[argument.name] = node.args[index]
        elif argument.name in node.kwargs:
            values[argument.name] = node.kwargs[argument.name]
        elif argument.has_default_value():
            values[argument.name] = argument.default_value
    return values


def shape_of(node) -> tuple:
    """A node's shape: ints, and names for the symbolic sizes (the batch of a dynamic export)."""
    value = node.meta.get("val") if hasattr(node, "meta") else None
    return (
        tuple(d if isinstance(d, int) else str(d) for d in value.shape)
        if isinstance(value, torch.Tensor)
        else ()
    )


def _plain_list(value):
    return [int(v) for v in value] if isinstance(value, list | tuple) else value


def _layer(kind: str, **spec):
    """A builder of ``kind`` whose arguments are the call's (by schema name) or computed from them."""
    return lambda b: (kind, {k: v(b) if callable(v) else _plain_list(b[v]) for k, v in spec.items()})


def _dim(argument: str, index: int):
    return lambda b: shape_of(b[argument])[index]


def _given(argument: str):
    return lambda b: b[argument] is not None


def _conv(b, transposed=False):
    weight, groups = shape_of(b["weight"]), b["groups"]
    if len(weight) != 4:
        return None
    args = {k: _plain_list(b[k]) for k in ("stride", "padding", "dilation", "groups")}
    args |= {"kernel_size": list(weight[2:]), "bias": b["bias"] is not None}
    if transposed or b.get("transposed"):  # weight (in, out / groups, kH, kW)
        args |= {"in_channels": weight[0], "out_channels": weight[1] * groups}
        return "ConvTranspose2d", args | {"output_padding": _plain_list(b["output_padding"])}
    return "Conv2d", args | {"in_channels": weight[1] * groups, "out_channels": weight[0]}


def _batch_norm(b):
    if b.get("training"):
        raise ConvlensError("program: its batch norm runs in training mode; export it after model.eval()")
    kind = {4: "BatchNorm2d", 3: "BatchNorm1d", 2: "BatchNorm1d"}.get(len(shape_of(b["input"])))
    args = {"num_features": _dim("input", 1)(b), "eps": b["eps"], "momentum": b["momentum"]}
    args |= {"affine": b["weight"] is not None, "track_running_stats": b["running_mean"] is not None}
    return kind and (kind, args)


def _stride(b):  # [] means the kernel's size
    return _plain_list(b["stride"]) or _plain_list(b["kernel_size"])


def _add(b):
    other = b["other"]
    if b.get("alpha", 1) != 1:
        return None
    if isinstance(other, torch.fx.Node):
        return "Add", {}
    return (
        isinstance(other, int | float) and not isinstance(other, bool) and ("Add", {"constant": float(other)})
    )


def _flatten_by_shape(b, node):
    """A view or reshape that merges neighbouring dimensions, as ``Flatten(start, end)``: decided
    from the shapes, so a static batch size (``view(2, -1)``) still keeps the batch."""
    source, result = shape_of(b["self"]), shape_of(node)
    merged = len(source) - len(result)
    if not source or merged < 0 or (merged == 0 and source != result):
        return None
    for start in [*range(1, len(result)), 0]:  # keeping the batch first
        end, part = start + merged, source[start : start + merged + 1]
        if (
            source[:start] == result[:start]
            and source[end + 1 :] == result[start + 1 :]
            and all(isinstance(d, int) for d in part)
            and math.prod(part) == result[start]
        ):
            return "Flatten", {"start_dim": start, "end_dim": end}
    return None


def _mean(b, node):
    """``x.mean((2, 3))``: a global average pool (and a flatten, where the dims are dropped)."""
    rank = len(shape_of(b["self"]))
    if rank != 4 or {d % rank for d in b["dim"] or []} != {2, 3} or b.get("dtype") is not None:
        return None
    return ("AdaptiveAvgPool2d", {"output_size": 1}) if b["keepdim"] else "mean"


def _hardtanh(b):
    if (b["min_val"], b["max_val"]) == (0.0, 6.0):
        return "ReLU6", {}
    return "Hardtanh", {"min_val": b["min_val"], "max_val": b["max_val"]}


_ALIGN = {"align_corners": "align_corners"}
# op name (in-place twins share it) → builder of (layer type, arguments) from the bound arguments;
# a builder that takes the node too decides from shapes. None or False: not this call after all.
# fmt: off
OPS = {
    "conv2d": _conv,
    "convolution": _conv,
    "conv_transpose2d": lambda b: _conv(b, transposed=True),
    "linear": _layer("Linear", in_features=_dim("weight", 1), out_features=_dim("weight", 0), bias=_given("bias")),
    "batch_norm": _batch_norm,
    "_native_batch_norm_legit_no_training": _batch_norm,
    "group_norm": _layer("GroupNorm", num_groups="num_groups", num_channels=_dim("input", 1), eps="eps", affine=_given("weight")),
    "layer_norm": _layer("LayerNorm", normalized_shape="normalized_shape", eps="eps", elementwise_affine=_given("weight"), bias=_given("bias")),
    "prelu": _layer("PReLU", num_parameters=lambda b: math.prod(shape_of(b["weight"]))),
    "relu": _layer("ReLU"),
    "relu6": _layer("ReLU6"),
    "hardtanh": _hardtanh,
    "sigmoid": _layer("Sigmoid"),
    "tanh": _layer("Tanh"),
    "silu": _layer("SiLU"),
    "mish": _layer("Mish"),
    "hardswish": _layer("Hardswish"),
    "hardsigmoid": _layer("Hardsigmoid"),
    "gelu": _layer("GELU", approximate="approximate"),
    "leaky_relu": _layer("LeakyReLU", negative_slope="negative_slope"),
    "elu": lambda b: b["scale"] == 1 and b["input_scale"] == 1 and ("ELU", {"alpha": b["alpha"]}),
    "softplus": _layer("Softplus", beta="beta", threshold="threshold"),
    "softmax": _layer("Softmax", dim="dim"),
    "_softmax": _layer("Softmax", dim="dim"),
    "log_softmax": _layer("LogSoftmax", dim="dim"),
    "_log_softmax": _layer("LogSoftmax", dim="dim"),
    "add": _add,
    "cat": _layer("Concat", dim="dim"),
    "max_pool2d": _layer("MaxPool2d", kernel_size="kernel_size", stride=_stride, padding="padding", dilation="dilation", ceil_mode="ceil_mode"),
    "avg_pool2d": _layer("AvgPool2d", kernel_size="kernel_size", stride=_stride, padding="padding", ceil_mode="ceil_mode", count_include_pad="count_include_pad", divisor_override="divisor_override"),
    "adaptive_avg_pool2d": _layer("AdaptiveAvgPool2d", output_size="output_size"),
    "_adaptive_avg_pool2d": _layer("AdaptiveAvgPool2d", output_size="output_size"),
    "adaptive_max_pool2d": _layer("AdaptiveMaxPool2d", output_size="output_size"),
    "mean": _mean,
    "flatten": _layer("Flatten", start_dim="start_dim", end_dim="end_dim"),
    "view": _flatten_by_shape,
    "reshape": _flatten_by_shape,
    "_unsafe_view": _flatten_by_shape,
    "squeeze": _flatten_by_shape,
    "dropout": lambda b: not b["train"] and ("Dropout", {"p": b["p"]}),
    "feature_dropout": lambda b: not b["train"] and ("Dropout2d", {"p": b["p"]}),
    "upsample_nearest2d": _layer("Upsample", size="output_size", scale_factor="scale_factors", mode=lambda b: "nearest"),
    "upsample_bilinear2d": _layer("Upsample", size="output_size", scale_factor="scale_factors", mode=lambda b: "bilinear", **_ALIGN),
    "constant_pad_nd": lambda b: b["value"] == 0 and len(b["pad"]) == 4 and _layer("ZeroPad2d", padding="pad")(b),
    "pad": lambda b: b["mode"] == "constant" and not b["value"] and len(b["pad"]) == 4 and _layer("ZeroPad2d", padding="pad")(b),
    "pixel_shuffle": _layer("PixelShuffle", upscale_factor="upscale_factor"),
}
# fmt: on
OPS["max_pool2d_with_indices"] = OPS["max_pool2d"]
TAKES_NODE = {_flatten_by_shape, _mean}
# the same tensor (a copy or a view of it), or no tensor at all: no stage of their own
PASS_THROUGH = {"clone", "alias", "detach", "contiguous", "lift_fresh_copy", "_assert_tensor_metadata", "_assert_scalar", "_assert_async", "sym_constrain_range_for_size", "sym_size", "sym_stride", "sym_numel"}  # fmt: skip
TENSOR_ARGUMENTS = ("input", "self", "tensors", "other")  # what a stage reads; the rest is state


def op_name(node) -> str:
    """``aten.relu_.default`` → ``relu``: in-place ops run out of place under their plain name."""
    name = getattr(node.target, "_opname", None) or getattr(node.target, "__name__", str(node.target))
    return name[:-1] if name.endswith("_") and not name.endswith("__") else name


def call_of(node) -> tuple[str, str, bool]:
    """(call key, module path, whether that module is a layer of LAYER_TYPES) of the innermost
    module the node ran in; the key tells two calls of one module apart (``relu@1``)."""
    stack = [(key, value) for key, value in (node.meta.get("nn_module_stack") or {}).items() if "_empty_nn_module" not in key]  # fmt: skip
    if not stack:
        return "", "", False
    key, (path, type_name) = stack[-1]
    layer = type_name.startswith("torch.nn.") and type_name.rsplit(".", 1)[-1] in LAYER_TYPES and bool(path)
    return key, path, layer
