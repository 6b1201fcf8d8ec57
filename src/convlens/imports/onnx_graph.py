"""An ONNX file as a convlens run: its operators mapped to graph stages, checked against onnxruntime.

ONNX is the format most tools export a trained network to, and it is data: a protobuf message
of operators and tensors, so reading it runs nothing of the file's (no pickle, no code). convlens
maps each operator to an allow-listed torch layer (``convlens.imports.onnx_layers``) and saves
the result as a graph run (``convlens.models.graph_spec``), so every face opens it like a model
trained here: its stages, maps and arithmetic are the ONNX model's own. Because the mapping is
ours, not the file's, the rebuilt model is run next to onnxruntime on a random image before
anything is written, and an import whose outputs differ is refused.

What is refused, with one line naming the file: a missing file or one that is not ONNX;
tensors kept in external data files (they would be read from paths the file names, outside
the one file the user gave); more than one input (convlens feeds one image); and an input whose
channels or size are not fixed when no ``input_shape`` says what to feed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from convlens.errors import ConvlensError, printable
from convlens.models.graph_spec import check_graph

RELATIVE_TOLERANCE = 1e-4  # of the largest output (at least 1): float32 summation order differs


def _refuse(path, why: str, parameter: str | None = None):
    raise ConvlensError(f"onnx file {printable(path)}: {why}", parameter=parameter)


def _external(model) -> bool:
    import onnx

    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors)


def image_input(model):
    """The graph's one image input (its inputs that are not initializers)."""
    weights = {init.name for init in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in weights]


def input_dims(model) -> list[int | None]:
    """The image input's dimensions: a fixed size, or None where it is named or unknown."""
    dims = image_input(model)[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


def read_onnx(path: str | Path):
    """The ONNX model in ``path``, checked with ``onnx.checker``; a ``ConvlensError`` naming the
    file otherwise. Parsed as protobuf, so nothing in the file runs. Refused: a missing file or
    bytes that are not an ONNX model; external-data tensors (onnx would open the files the model
    names, beside or outside the one the user gave); more than one input besides the
    initializers, or more than one output (convlens feeds one image and reads one row of scores);
    an input that is not float32 or not (N, C, H, W). Channels and sizes left open are refused
    by ``import_onnx`` only when no ``input_shape`` fixes them."""
    import onnx

    if not Path(path).is_file():
        _refuse(path, "no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's parse error: the bytes are not a model
        _refuse(
            path,
            f"not an ONNX model ({printable(str(exc)).splitlines()[0][:100] if str(exc) else type(exc).__name__})",
        )
    if _external(model):
        _refuse(
            path,
            "its tensors are kept in external data files; convlens reads one self-contained file "
            "(save it with onnx.save(model, path, save_as_external_data=False))",
        )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        reason = printable(str(exc)).strip().splitlines()
        _refuse(path, f"not a valid ONNX model ({(reason[0] if reason else type(exc).__name__)[:120]})")
    inputs, outputs = image_input(model), model.graph.output
    if len(inputs) != 1:
        names = ", ".join(printable(i.name)[:40] for i in inputs[:4])
        _refuse(path, f"it has {len(inputs)} inputs ({names}); convlens feeds a model one image")
    if len(outputs) != 1:
        _refuse(path, f"it has {len(outputs)} outputs; convlens opens classifiers, with one output of scores")
    kind = inputs[0].type.tensor_type
    if kind.elem_type != onnx.TensorProto.FLOAT:
        _refuse(
            path,
            f"its input is of type {onnx.TensorProto.DataType.Name(kind.elem_type)}; convlens feeds float32 images",
        )
    if kind.HasField("shape") and len(kind.shape.dim) != 4:
        _refuse(path, f"its input has {len(kind.shape.dim)} dimensions; convlens feeds images (N, C, H, W)")
    return model


def _unsupported(model) -> list[str]:
    """The operator types that compute on the image and have no layer (constant arithmetic folds)."""
    from convlens.imports.onnx_layers import LAYERS

    graph = model.graph
    on_image = {image_input(model)[0].name}
    missing: list[str] = []
    for node in graph.node:
        if not any(name in on_image for name in node.input):
            continue
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"
        if op == "Shape":
            continue
        if op not in LAYERS and op not in missing:
            missing.append(op)
        on_image.update(name for name in node.output if name)
    return missing


def _shapes(model, input_shape) -> dict[str, list | None]:
    """Every tensor's dimensions from ONNX shape inference (the input fixed to ``input_shape``)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    if input_shape is not None:
        dims = image_input(copy)[0].type.tensor_type.shape.dim
        for dim, size in zip(list(dims)[1:], input_shape, strict=False):
            dim.Clear()
            dim.dim_value = int(size)
    try:
        inferred = onnx.shape_inference.infer_shapes(copy).graph
    except Exception:  # shapes are a help for padding and flattening, not a need
        inferred = copy.graph
    shapes = {}
    for info in (*inferred.input, *inferred.value_info, *inferred.output):
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            shapes[info.name] = [
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim
            ]
    return shapes


def graph_from_onnx(model, input_shape: Sequence[int] | None = None) -> tuple[dict, dict, dict]:
    """(graph description, weights by key, facts) of a model from ``read_onnx``. ``input_shape``
    (C, H, W) fixes the sizes where the file leaves them open (SAME padding with a stride needs them)."""
    from convlens.imports.onnx_layers import LAYERS
    from convlens.imports.onnx_ops import Converter, initializer_arrays

    missing = _unsupported(model)
    if missing:
        raise ConvlensError(
            f"operators convlens has no layer for: {', '.join(printable(m) for m in missing[:6])}"
            f"{' ...' if len(missing) > 6 else ''} (it maps {', '.join(sorted(LAYERS))})"
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    image, output = image_input(model)[0].name, model.graph.output[0].name
    shapes = _shapes(model, input_shape)
    converter = Converter(model.graph, initializer_arrays(model.graph), shapes, image, opset)
    graph = check_graph(converter.run(output, LAYERS))
    facts = {
        "opset": int(opset),
        "nodes": len(model.graph.node),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "input": image,
        "output": output,
        "output_dims": shapes.get(output),  # (batch, scores) for a classifier; None: unknown
        "tensors": converter.tensors(),  # stage name → the ONNX tensor it computes
    }
    return graph, converter.state, facts


def check_against_onnxruntime(path, model: torch.nn.Module, prep, batch: int | None) -> str | None:
    """Run the rebuilt ``model`` and onnxruntime on one random batch; refuse when they differ.
    onnxruntime gets the normalized pixels (the graph model normalizes inside). None: onnxruntime
    is not installed, nothing was checked."""
    try:
        import onnxruntime
    except ImportError:
        return None
    mean, std = (torch.tensor(v, dtype=torch.float32)[:, None, None] for v in prep.model_normalization())
    pixels = torch.rand(batch or 2, *prep.input_shape, generator=torch.Generator().manual_seed(0))
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not the user's to read
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: ((pixels - mean) / std).numpy().astype(np.float32)}
        expected = np.asarray(session.run(None, feed)[0], dtype=np.float64)
    except Exception as exc:
        reason = printable(str(exc)).strip().splitlines()
        _refuse(path, f"onnxruntime cannot run it ({(reason[0] if reason else type(exc).__name__)[:120]})")
    model.eval()
    with torch.no_grad():
        got = model(pixels).double().numpy()
    if got.shape != expected.shape:
        _refuse(
            path,
            f"the rebuilt model gives outputs of shape {list(got.shape)}, onnxruntime {list(expected.shape)}",
        )
    difference = float(np.abs(got - expected).max()) if got.size else 0.0
    scale = max(1.0, float(np.abs(expected).max()) if expected.size else 0.0)
    if not difference <= RELATIVE_TOLERANCE * scale:
        _refuse(
            path,
            f"the rebuilt model's outputs differ from onnxruntime's by {difference:.3g}; nothing was imported",
        )
    return "onnxruntime"


def import_onnx(
    path: str | Path,
    run_dir: str | Path,
    class_names: Sequence[str] | str | None = None,
    input_shape: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    data: str | Path | None = None,
    overwrite: bool = False,
):
    """An ONNX file as a run folder (the module docstring): an ``ImportResult``. ``input_shape``
    defaults to the file's fixed C, H, W; nothing is written when any check fails."""
    from convlens.imports.core import ImportResult, write_run
    from convlens.imports.graph_route import build_graph
    from convlens.imports.preprocessing import resolve_preprocessing

    model = read_onnx(path)
    dims = input_dims(model) or [None] * 4
    if input_shape is None and data is None:
        unknown = [axis for axis, size in zip("CHW", dims[1:], strict=True) if size is None]
        if unknown:
            _refuse(
                path,
                f"its input's {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not fixed; give input_shape (C,H,W)",
                "input_shape",
            )
        input_shape = dims[1:]
    prep, names, facts = resolve_preprocessing(class_names, input_shape, mean, std, data)
    for axis, fixed, given in zip("CHW", dims[1:], prep.input_shape, strict=True):
        if fixed is not None and fixed != given:
            _refuse(
                path, f"input_shape {list(prep.input_shape)}: the file fixes {axis} at {fixed}", "input_shape"
            )
    try:
        graph, state, onnx_facts = graph_from_onnx(model, prep.input_shape)
    except ConvlensError as exc:
        _refuse(path, str(exc))
    scores = (onnx_facts["output_dims"] or [None])[-1]
    if scores is not None and scores != len(names):
        raise ConvlensError(
            f"class_names: {len(names)} given, but the model gives {scores} scores per image (one per class)",
            parameter="class_names",
        )
    built, loaded = build_graph(graph, state, prep, names, f"onnx file {printable(path)}")
    checked = check_against_onnxruntime(path, built, prep, dims[0])
    imported = {
        "route": "onnx",
        "arch": "graph",
        "file": Path(path).name,
        "opset": onnx_facts["opset"],
        "loaded_tensors": loaded,
        "checked_against": checked,
    }
    json_path = write_run(run_dir, built, prep, names, facts, imported, overwrite)
    return ImportResult(json_path, "graph", prep, names, loaded, {"onnx": str(path)})
