"""Each ONNX operator convlens maps, as the layer of ``graph_spec.LAYER_TYPES`` that computes it.

A handler reads one node (its inputs through ``Converter.tensor`` and ``Converter.constant``, its
attributes with ONNX's defaults filled in) and adds the stage with ``Converter.emit``. Every
mapping is exact: where the torch layer would compute something else (asymmetric padding of a
max pool, a hard sigmoid with other constants, an addition of a constant tensor that is not a
bias), the handler refuses by name instead of approximating, because the run would otherwise
show arithmetic the ONNX model does not do.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from convlens.errors import ConvlensError, printable
from convlens.imports.onnx_ops import BATCH, Converter, Tensor

FLOAT_MAX = 3.4028234663852886e38  # float32's largest: a clip with one bound clamps there


def _refuse(node, why: str):
    raise ConvlensError(f"{node.op_type} node {printable(node.name)[:60]!r}: {why}")


def _text(value, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def _spatial(node, x: Tensor) -> None:
    if x.shape is not None and len(x.shape) != 4:
        _refuse(node, f"convlens maps it on images (N, C, H, W), this input has {len(x.shape)} dimensions")


def _pads(c: Converter, node, a: dict, x: Tensor, kernel, strides, dilations) -> list[int]:
    """[top, left, bottom, right], with auto_pad resolved (SAME needs the input size unless stride 1)."""
    auto = _text(a.get("auto_pad"), "NOTSET")
    if auto == "NOTSET":
        pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
        if len(pads) != 4:
            _refuse(node, "only 2-D (H, W) padding is mapped")
        return [pads[0], pads[1], pads[2], pads[3]]
    if auto == "VALID":
        return [0, 0, 0, 0]
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        _refuse(node, f"auto_pad {auto!r} is not mapped")
    begin, end = [], []
    for axis in range(2):
        k, s, d = int(kernel[axis]), int(strides[axis]), int(dilations[axis])
        if s == 1:
            total = (k - 1) * d
        else:
            size = x.shape[2 + axis] if x.shape is not None else None
            if not isinstance(size, int):
                _refuse(node, "auto_pad SAME with a stride needs the image size; give input_shape")
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        first = total // 2 if auto == "SAME_UPPER" else total - total // 2
        begin.append(first)
        end.append(total - first)
    return [begin[0], begin[1], end[0], end[1]]


def conv(c: Converter, node, a: dict, index: int) -> None:
    x, weight, bias = c.tensor(node, 0), c.constant(node, 1), c.constant(node, 2, optional=True)
    if weight.ndim != 4:
        _refuse(node, "only 2-D convolutions (a 4-D weight) are mapped")
    _spatial(node, x)
    kernel = [int(k) for k in a.get("kernel_shape", weight.shape[2:])]
    strides = [int(s) for s in a.get("strides", [1, 1])]
    dilations = [int(d) for d in a.get("dilations", [1, 1])]
    groups = int(a.get("group", 1))
    top, left, bottom, right = _pads(c, node, a, x, kernel, strides, dilations)
    if (top, left) != (bottom, right):  # padding on one side only: a padding stage, then no padding
        x = c.emit(
            node, "ZeroPad2d", {"padding": [left, right, top, bottom]}, [x], base=f"{c.stage_name(node)}_pad"
        )
        top = left = 0
    args = {
        "in_channels": int(weight.shape[1]) * groups,
        "out_channels": int(weight.shape[0]),
        "kernel_size": kernel,
        "stride": strides,
        "padding": [top, left],
        "dilation": dilations,
        "groups": groups,
        "bias": bias is not None,
    }
    weights = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    c.emit(node, "Conv2d", args, [x], weights)


def batch_norm(c: Converter, node, a: dict, index: int) -> None:
    x = c.tensor(node, 0)
    scale, shift, mean, var = (c.constant(node, i) for i in range(1, 5))
    if a.get("training_mode", 0) or (len(node.output) > 1 and any(node.output[1:])):
        _refuse(node, "training-mode batch normalization (running statistics as outputs) is not mapped")
    rank = len(x.shape) if x.shape is not None else 4
    if rank not in (2, 3, 4):
        _refuse(node, f"batch normalization of a {rank}-D tensor is not mapped")
    args = {
        "num_features": int(scale.size),
        "eps": float(a.get("epsilon", 1e-5)),
        "momentum": round(
            1.0 - float(a.get("momentum", 0.9)), 12
        ),  # ONNX weighs the old value, torch the new
    }
    weights = {
        "weight": scale,
        "bias": shift,
        "running_mean": mean,
        "running_var": var,
        "num_batches_tracked": torch.tensor(0),
    }
    c.emit(node, "BatchNorm2d" if rank == 4 else "BatchNorm1d", args, [x], weights)


def _simple(kind: str, **defaults):
    """An activation whose ONNX attributes (with their defaults) are the layer's arguments."""

    def handler(c: Converter, node, a: dict, index: int) -> None:
        args = {
            torch_name: float(a.get(onnx_name, value)) for torch_name, (onnx_name, value) in defaults.items()
        }
        c.emit(node, kind, args, [c.tensor(node, 0)])

    return handler


def hard_sigmoid(c: Converter, node, a: dict, index: int) -> None:
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    if abs(alpha - 1 / 6) > 1e-6 or abs(beta - 0.5) > 1e-7:
        _refuse(node, f"alpha {alpha:g} and beta {beta:g} differ from torch's Hardsigmoid (1/6 and 0.5)")
    c.emit(node, "Hardsigmoid", {}, [c.tensor(node, 0)])


def clip(c: Converter, node, a: dict, index: int) -> None:
    x = c.tensor(node, 0)
    low, high = a.get("min"), a.get("max")
    if len(node.input) > 1:  # opset 11 and later: the bounds are inputs
        bounds = [c.constant(node, i, optional=True) for i in (1, 2)]
        low, high = (None if b is None else float(np.ravel(b)[0]) for b in bounds)
    if low == 0 and high == 6:
        c.emit(node, "ReLU6", {}, [x])
    elif low == 0 and high is None:
        c.emit(node, "ReLU", {}, [x])
    else:
        low = -FLOAT_MAX if low is None else max(float(low), -FLOAT_MAX)
        high = FLOAT_MAX if high is None else min(float(high), FLOAT_MAX)
        c.emit(node, "Hardtanh", {"min_val": low, "max_val": high}, [x])


def _softmax(kind: str):
    def handler(c: Converter, node, a: dict, index: int) -> None:
        x = c.tensor(node, 0)
        rank = len(x.shape) if x.shape is not None else None
        axis = int(a.get("axis", -1 if c.opset >= 13 else 1))
        if c.opset < 13 and rank != 2:
            _refuse(node, "before opset 13 it flattens its input first; only 2-D inputs are mapped")
        c.emit(node, kind, {"dim": axis}, [x])

    return handler


def prelu(c: Converter, node, a: dict, index: int) -> None:
    slope = c.constant(node, 1)
    if slope.size > 1 and slope.shape not in ((slope.size,), (slope.size, 1, 1)):
        _refuse(node, "its slope must be one number or one per channel")
    args = {"num_parameters": int(slope.size)}
    c.emit(node, "PReLU", args, [c.tensor(node, 0)], {"weight": np.ravel(slope)})


def max_pool(c: Converter, node, a: dict, index: int) -> None:
    _pool(c, node, a, "MaxPool2d")


def average_pool(c: Converter, node, a: dict, index: int) -> None:
    _pool(c, node, a, "AvgPool2d")


def _pool(c: Converter, node, a: dict, kind: str) -> None:
    x = c.tensor(node, 0)
    _spatial(node, x)
    if len(node.output) > 1 and node.output[1]:
        _refuse(node, "the indices output is not mapped")
    kernel = [int(k) for k in a["kernel_shape"]]
    strides = [int(s) for s in a.get("strides", [1, 1])]
    dilations = [int(d) for d in a.get("dilations", [1, 1])]
    top, left, bottom, right = _pads(c, node, a, x, kernel, strides, dilations)
    if (top, left) != (bottom, right):
        _refuse(
            node, f"padding differs between sides ({[top, left, bottom, right]}); torch pools pad both alike"
        )
    args = {
        "kernel_size": kernel,
        "stride": strides,
        "padding": [top, left],
        "ceil_mode": bool(a.get("ceil_mode", 0)),
    }
    if kind == "MaxPool2d":
        args["dilation"] = dilations
    else:
        if dilations != [1, 1]:
            _refuse(node, "a dilated average pool is not mapped")
        args["count_include_pad"] = bool(a.get("count_include_pad", 0))
    c.emit(node, kind, args, [x])


def _global(kind: str):
    def handler(c: Converter, node, a: dict, index: int) -> None:
        x = c.tensor(node, 0)
        _spatial(node, x)
        c.emit(node, kind, {"output_size": 1}, [x])

    return handler


def _reduce(kind: str):
    """ReduceMean / ReduceMax over H and W: a global pool (then a flatten without keepdims)."""

    def handler(c: Converter, node, a: dict, index: int) -> None:
        x = c.tensor(node, 0)
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = c.constant(node, 1)
        if (
            x.shape is None
            or len(x.shape) != 4
            or axes is None
            or sorted(int(v) % 4 for v in np.ravel(axes)) != [2, 3]
        ):
            _refuse(node, "only a reduction over H and W of an image (N, C, H, W) is mapped")
        if a.get("keepdims", 1):
            c.emit(node, kind, {"output_size": 1}, [x])
        else:
            name = c.stage_name(node)
            pooled = c.emit(node, kind, {"output_size": 1}, [x], base=name)
            c.emit(node, "Flatten", {"start_dim": 1, "end_dim": -1}, [pooled], base=f"{name}_flatten")

    return handler


def add(c: Converter, node, a: dict, index: int) -> None:
    values = [c.values.get(name) for name in node.input]
    tensors = [v for v in values if isinstance(v, Tensor)]
    constants = [np.asarray(v) for v in values if not isinstance(v, Tensor)]
    args = {}
    if constants:
        if any(v.dtype == object or v.size != 1 for v in constants):
            _refuse(
                node, "it adds a constant tensor; only a single number (or a bias after MatMul) is mapped"
            )
        args["constant"] = float(sum(float(np.ravel(v)[0]) for v in constants))
    c.emit(node, "Add", args, tensors)


def concat(c: Converter, node, a: dict, index: int) -> None:
    tensors = [c.tensor(node, i) for i in range(len(node.input))]
    c.emit(node, "Concat", {"dim": int(a.get("axis", 1))}, tensors)


def flatten(c: Converter, node, a: dict, index: int) -> None:
    x = c.tensor(node, 0)
    axis = int(a.get("axis", 1))
    if axis < 0 and x.shape is not None:
        axis += len(x.shape)
    if axis != 1:
        _refuse(node, "only flattening from axis 1 (keeping the batch) is mapped")
    c.emit(node, "Flatten", {"start_dim": 1, "end_dim": -1}, [x])


def _linear(c: Converter, node, x: Tensor, weight: np.ndarray, bias, sources) -> Tensor:
    args = {
        "in_features": int(weight.shape[1]),
        "out_features": int(weight.shape[0]),
        "bias": bias is not None,
    }
    weights = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    return c.emit(node, "Linear", args, [x], weights, sources=sources)


def _bias(node, value, features: int) -> np.ndarray:
    value = np.asarray(value, dtype=np.float32)
    if value.size == 1:
        return np.full(features, float(np.ravel(value)[0]), dtype=np.float32)
    if value.shape not in ((features,), (1, features)):
        _refuse(node, f"its bias of shape {list(value.shape)} is not one number per output")
    return np.ravel(value)


def gemm(c: Converter, node, a: dict, index: int) -> None:
    x, b = c.tensor(node, 0), c.constant(node, 1)
    if a.get("transA", 0) or b.ndim != 2:
        _refuse(node, "only x @ W (x not transposed, a 2-D constant W) is mapped")
    weight = (b if a.get("transB", 0) else b.T) * float(a.get("alpha", 1.0))
    bias = c.constant(node, 2, optional=True)
    if bias is not None:
        bias = _bias(node, bias, weight.shape[0]) * float(a.get("beta", 1.0))
    _linear(c, node, x, weight, bias, node.input[1:])


def matmul(c: Converter, node, a: dict, index: int) -> None:
    x, b = c.tensor(node, 0), c.constant(node, 1)
    if b.ndim != 2:
        _refuse(node, "only x @ W with a 2-D constant W is mapped")
    weight, bias, sources = b.T, None, [node.input[1]]
    readers = c.consumers.get(node.output[0], [])
    outputs = {o.name for o in c.graph.output}
    if len(readers) == 1 and readers[0].op_type == "Add" and node.output[0] not in outputs:
        follower = readers[0]
        other = [n for n in follower.input if n != node.output[0]]
        value = c.values.get(other[0]) if len(other) == 1 else None
        if (
            isinstance(value, np.ndarray)
            and value.dtype != object
            and value.shape in ((b.shape[1],), (1, b.shape[1]))
        ):
            bias, sources = np.ravel(value), [node.input[1], other[0]]
            c.absorbed.add(list(c.graph.node).index(follower))
            c.values[follower.output[0]] = _linear(c, node, x, weight, bias, sources)
            del c.values[node.output[0]]  # the stage is the sum with the bias, not the product
            return
    _linear(c, node, x, weight, bias, sources)


def reshape(c: Converter, node, a: dict, index: int) -> None:
    x = c.tensor(node, 0)
    target = list(np.ravel(c.values.get(node.input[1])))
    shape = x.shape
    features = (
        math.prod(shape[1:]) if shape is not None and all(isinstance(d, int) for d in shape[1:]) else None
    )
    batch = shape[0] if shape is not None else None
    if len(target) == 2:
        first, second = target
        keeps_batch = first is BATCH or (
            isinstance(first, int | np.integer) and (first == 0 or (batch is not None and first == batch))
        )
        if (
            first is not BATCH
            and isinstance(first, int | np.integer)
            and first == -1
            and features is not None
        ):
            keeps_batch, first = second == features, None
        if keeps_batch and (second is BATCH or second == -1 or (features is not None and second == features)):
            c.emit(node, "Flatten", {"start_dim": 1, "end_dim": -1}, [x])
            return
    _refuse(
        node,
        f"reshaping to {[str(t) for t in target]} is not mapped; only flattening to (batch, features) is",
    )


def pass_through(c: Converter, node, a: dict, index: int) -> None:
    if (
        len(node.output) > 1
        and any(node.output[1:])
        and any(c.consumers.get(o) for o in node.output[1:] if o)
    ):
        _refuse(node, "its second output (a dropout mask) is not mapped")
    training = node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]
    if training and bool(np.ravel(c.constant(node, 2))[0]):  # random, not a pass-through
        _refuse(node, "dropout in training mode is random; export the model in eval mode")
    c.values[node.output[0]] = c.tensor(node, 0)


def pad(c: Converter, node, a: dict, index: int) -> None:
    x = c.tensor(node, 0)
    pads = a.get("pads") if "pads" in a else c.constant(node, 1)
    value = (
        float(a.get("value", 0.0))
        if len(node.input) < 3 or not node.input[2]
        else float(np.ravel(c.constant(node, 2))[0])
    )
    pads = [int(p) for p in np.ravel(pads)]
    if (
        _text(a.get("mode"), "constant") != "constant"
        or value != 0
        or len(pads) != 8
        or any(pads[i] for i in (0, 1, 4, 5))
        or min(pads) < 0
    ):
        _refuse(node, "only zero padding of H and W is mapped")
    c.emit(node, "ZeroPad2d", {"padding": [pads[3], pads[7], pads[2], pads[6]]}, [x])


# ONNX operator → handler: the operators convlens maps (module docstring)
LAYERS = {
    "Conv": conv,
    "BatchNormalization": batch_norm,
    "Relu": _simple("ReLU"),
    "LeakyRelu": _simple("LeakyReLU", negative_slope=("alpha", 0.01)),
    "Elu": _simple("ELU", alpha=("alpha", 1.0)),
    "Sigmoid": _simple("Sigmoid"),
    "Tanh": _simple("Tanh"),
    "Softplus": _simple("Softplus"),
    "Mish": _simple("Mish"),
    "HardSigmoid": hard_sigmoid,
    "HardSwish": _simple("Hardswish"),
    "PRelu": prelu,
    "Clip": clip,
    "Softmax": _softmax("Softmax"),
    "LogSoftmax": _softmax("LogSoftmax"),
    "MaxPool": max_pool,
    "AveragePool": average_pool,
    "GlobalAveragePool": _global("AdaptiveAvgPool2d"),
    "GlobalMaxPool": _global("AdaptiveMaxPool2d"),
    "ReduceMean": _reduce("AdaptiveAvgPool2d"),
    "ReduceMax": _reduce("AdaptiveMaxPool2d"),
    "Add": add,
    "Sum": add,
    "Concat": concat,
    "Flatten": flatten,
    "Gemm": gemm,
    "MatMul": matmul,
    "Reshape": reshape,
    "Identity": pass_through,
    "Dropout": pass_through,
    "Pad": pad,
}
