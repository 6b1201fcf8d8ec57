"""Importing ONNX files: exports of the any-model test models and of ResNet-18 open as runs whose
predictions and stage outputs are onnxruntime's, and files convlens cannot map are refused
with one line, writing nothing.

The models are exported with torch's TorchScript exporter (``dynamo=False``: fast, offline, its
node names carry the module scopes), once keeping BatchNorm nodes and once with BatchNorm folded
into the convolutions, and with the ``torch.export`` exporter (onnxscript), whose node metadata
carries the scopes instead.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from any_models import MODELS, SHAPE
from convlens import Run
from convlens.errors import ConvlensError
from convlens.imports.onnx_graph import graph_from_onnx, import_onnx, read_onnx
from convlens.inspect import activations
from convlens.models import create_model

NAMES = ["a", "b", "c"]
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def _export(net: nn.Module, path, shape=SHAPE, exporter="legacy", **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            torch.onnx.export(
                net,
                (torch.rand(2, *shape),),
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=["image"],
                output_names=["scores"],
                dynamic_axes={"image": {0: "batch"}},
                **options,
            )
        else:
            torch.onnx.export(
                net,
                (torch.rand(2, *shape),),
                str(path),
                dynamo=True,
                external_data=False,
                opset_version=18,
                input_names=["image"],
                output_names=["scores"],
                verbose=False,
            )
    return path


def _onnxruntime(path, normalized: torch.Tensor, tensors: list[str] = ()) -> dict[str, np.ndarray]:
    """The final output and the named intermediate tensors, made extra graph outputs of a copy."""
    model = onnx.load(str(path))
    present = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in present:
            model.graph.output.append(helper.make_empty_tensor_value_info(name))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: normalized.numpy()})
    return dict(zip(names, values, strict=True))


def _close(got: torch.Tensor, expected, what: str) -> None:
    expected = torch.as_tensor(np.asarray(expected, dtype=np.float32))
    assert got.shape == expected.shape, what
    scale = max(1.0, float(expected.abs().max()))
    assert float((got - expected).abs().max()) <= 1e-4 * scale, what


def _check_run(path, run_dir, mean=None, std=None, shape=SHAPE) -> tuple[Run, dict]:
    """Import, open, and compare the predictions and every stage's output with onnxruntime's."""
    result = import_onnx(path, run_dir, class_names=NAMES, mean=mean, std=std)
    run = Run.open(run_dir)
    assert run.model_name == "graph" and run.class_names == NAMES and run.input_shape == shape
    imported = run.metadata["imported"]
    assert imported["route"] == "onnx" and imported["checked_against"] == "onnxruntime"
    assert imported["file"] == path.name and imported["loaded_tensors"] == result.loaded > 0
    pixels = torch.rand(2, *shape, generator=torch.Generator().manual_seed(1))  # the dynamo export fixes 2
    normalized = (
        pixels
        if mean is None
        else (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    )
    _, _, facts = graph_from_onnx(read_onnx(path))
    tensors = facts["tensors"]  # stage → the ONNX tensor it computes
    expected = _onnxruntime(path, normalized, list(tensors.values()))
    _close(run.predict(pixels), torch.softmax(torch.as_tensor(expected["scores"]), 1), "probabilities")
    acts = activations(run.model, pixels)
    for stage, tensor in tensors.items():
        _close(acts[stage], expected[tensor], stage)
    return run, acts


@pytest.mark.parametrize(
    ("model", "exporter", "folding"),
    [
        ("handwritten", "legacy", False),
        ("resnet", "legacy", False),
        ("resnet", "legacy", True),
        ("resnet", "dynamo", None),
    ],
)
def test_exports_of_the_test_models_open_as_onnxruntime_runs_them(tmp_path, model, exporter, folding):
    build, reference = MODELS[model]
    net = build()
    options = {} if folding is None else {"do_constant_folding": folding}
    path = _export(net, tmp_path / f"{model}.onnx", exporter=exporter, **options)
    run, acts = _check_run(path, tmp_path / "run")
    stages = reference(net, torch.rand(2, *SHAPE))
    shared = [name for name in stages if name in acts.names]
    must = (
        {"conv1", "layer1.0.conv1", "layer1.0.add", "layer2.0.downsample.0"}
        if model == "resnet"
        else {"conv1", "branch", "cat", "relu_2"}
    )
    assert must <= set(shared)
    if folding is False:  # BatchNorm kept: every stage has the torch model's name and value
        assert set(stages) - set(shared) <= {"view"}
        pixels = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(2))
        acts = activations(run.model, pixels)
        for name, value in reference(net, pixels).items():
            if name in shared:
                _close(acts[name], value.detach(), name)


def test_resnet18_in_torchvision_layout_with_imagenet_normalization(tmp_path):
    model = create_model("resnet18", (3, 32, 32), 3)
    body = nn.Sequential(
        OrderedDict((n, c) for n, c in model.body.named_children() if n != "normalize")
    ).eval()
    path = _export(body, tmp_path / "resnet18.onnx", shape=(3, 32, 32))
    run, acts = _check_run(path, tmp_path / "run", *IMAGENET, shape=(3, 32, 32))
    assert {"conv1", "maxpool", "layer1.0.conv1", "layer1.0.add", "layer4.1.relu_1", "avgpool", "fc"} <= set(
        acts.names
    )
    assert run.metadata["normalization"]["mean"] == pytest.approx(IMAGENET[0])


def _node_model(nodes, initializers, shape=(1, 3, 8, 8), out=(1, 3), outputs=("y",), inputs=("x",)):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name in inputs],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, out) for name in outputs],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_many_operators_map_exactly(tmp_path):
    rng = np.random.default_rng(0)
    w = {
        "c1.weight": rng.normal(size=(4, 3, 3, 3)),
        "c2.weight": rng.normal(size=(4, 4, 3, 3)),
        "c2.bias": rng.normal(size=4),
        "c3_w": rng.normal(size=(4, 4, 2, 2)),
        "zero": 0.0,
        "six": 6.0,
        "half": 0.5,
        "w": rng.normal(size=(4, 5)),
        "b": rng.normal(size=5),
        "g": rng.normal(size=(5, 3)),
        "gb": rng.normal(size=3),
    }
    nodes = [
        helper.make_node("Conv", ["x", "c1.weight"], ["a"], name="stem", pads=[0, 0, 1, 1]),  # one side
        helper.make_node("Clip", ["a", "zero", "six"], ["b_"], name="clip"),
        helper.make_node(
            "Conv", ["b_", "c2.weight", "c2.bias"], ["c"], auto_pad="SAME_UPPER", strides=[2, 2]
        ),
        helper.make_node("LeakyRelu", ["c"], ["d"], alpha=0.2),
        helper.make_node(
            "AveragePool", ["d"], ["e"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1
        ),
        helper.make_node("HardSwish", ["e"], ["f"]),
        helper.make_node("Conv", ["f", "c3_w"], ["f2"], pads=[0, 0, 1, 1]),
        helper.make_node("Add", ["f2", "half"], ["g_"]),
        helper.make_node("Sigmoid", ["g_"], ["h"]),
        helper.make_node("Dropout", ["h"], ["i"]),
        helper.make_node("GlobalAveragePool", ["i"], ["j"]),
        helper.make_node("Flatten", ["j"], ["k"]),
        helper.make_node("MatMul", ["k", "w"], ["l"]),
        helper.make_node("Add", ["l", "b"], ["m"]),
        helper.make_node("Tanh", ["m"], ["n"]),
        helper.make_node("Identity", ["n"], ["o"]),
        helper.make_node("Gemm", ["o", "g", "gb"], ["y"], alpha=0.5),
    ]
    path = tmp_path / "ops.onnx"
    onnx.save(_node_model(nodes, w), str(path))
    result = import_onnx(path, tmp_path / "run", class_names=NAMES)  # checked against onnxruntime inside
    assert result.preprocessing.input_shape == (3, 8, 8)
    graph = Run.open(tmp_path / "run").model
    kinds = {stage.name: stage.operation for stage in graph.graph_stages()}
    assert kinds["c1"] == "c1" and kinds["stem_pad"] == "ZeroPad2d" and kinds["clip"] == "ReLU6"
    assert {"Hardswish", "LeakyReLU", "AvgPool2d", "Add", "Flatten", "AdaptiveAvgPool2d"} <= set(
        kinds.values()
    )
    assert sum(1 for k in kinds.values() if k == "ZeroPad2d") == 2  # the two one-sided paddings


def test_an_operator_without_a_layer_is_refused_by_name(tmp_path):
    nodes = [helper.make_node("Sin", ["x"], ["s"]), helper.make_node("GlobalAveragePool", ["s"], ["y"])]
    path = tmp_path / "sin.onnx"
    onnx.save(_node_model(nodes, {}), str(path))
    with pytest.raises(
        ConvlensError, match=r"operators convlens has no layer for: Sin \(it maps .*Conv"
    ) as caught:
        import_onnx(path, tmp_path / "run", class_names=NAMES)
    assert "\n" not in str(caught.value) and not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", ["missing", "text", "external", "two inputs"])
def test_files_convlens_cannot_read_are_refused_in_one_line(tmp_path, case):
    path = tmp_path / "model.onnx"
    if case == "text":
        path.write_text("this is not a model\n" * 10)
    elif case == "external":
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"])]
        model = _node_model(nodes, {"w": np.ones((3, 3, 1, 1))})
        onnx.save(model, str(path), save_as_external_data=True, size_threshold=0, location="model.data")
    elif case == "two inputs":
        nodes = [helper.make_node("Add", ["x", "x2"], ["y"])]
        onnx.save(_node_model(nodes, {}, inputs=("x", "x2")), str(path))
    expected = {
        "missing": "no such file",
        "text": "not a.* ONNX model",
        "external": "external data",
        "two inputs": "2 inputs",
    }
    with pytest.raises(ConvlensError, match=f"onnx file .*model.onnx: .*{expected[case]}") as caught:
        import_onnx(path, tmp_path / "run", class_names=NAMES)
    assert "\n" not in str(caught.value) and not (tmp_path / "run").exists()


def test_open_sizes_need_input_shape_and_class_count_must_fit(tmp_path):
    build, _ = MODELS["resnet"]
    path = tmp_path / "open.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            build(),
            (torch.rand(1, *SHAPE),),
            str(path),
            dynamo=False,
            input_names=["image"],
            dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}},
        )
    with pytest.raises(ConvlensError, match="H, W are not fixed; give input_shape"):
        import_onnx(path, tmp_path / "run", class_names=NAMES)
    with pytest.raises(ConvlensError, match="class_names: 2 given, but the model gives 3 scores"):
        import_onnx(path, tmp_path / "run", class_names=["a", "b"], input_shape=(3, 16, 16))
    assert not (tmp_path / "run").exists()
    result = import_onnx(path, tmp_path / "run", class_names=NAMES, input_shape=(3, 16, 16))
    assert result.preprocessing.input_shape == (3, 16, 16)


def test_outputs_that_differ_from_onnxruntime_are_refused(tmp_path, monkeypatch):
    from convlens.imports import onnx_layers

    monkeypatch.setitem(onnx_layers.LAYERS, "Relu", onnx_layers._simple("Sigmoid"))  # a wrong mapping
    path = _export(MODELS["handwritten"][0](), tmp_path / "hw.onnx")
    with pytest.raises(ConvlensError, match="differ from onnxruntime's by"):
        import_onnx(path, tmp_path / "run", class_names=NAMES)
    assert not (tmp_path / "run").exists()


def test_without_onnxruntime_the_check_is_skipped_and_recorded(tmp_path, monkeypatch):
    import sys

    path = _export(MODELS["handwritten"][0](), tmp_path / "hw.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    import_onnx(path, tmp_path / "run", class_names=NAMES)
    assert Run.open(tmp_path / "run").metadata["imported"]["checked_against"] is None


def test_more_operators_and_a_shared_convolution(tmp_path):
    rng = np.random.default_rng(1)
    w = {
        "k.weight": rng.normal(size=(3, 3, 3, 3)),
        "k.bias": rng.normal(size=3),
        "slope": np.full((3, 1, 1), 0.25),
        "pads": np.array([0, 0, 1, 0, 0, 0, 0, 1]),
        "axes": np.array([2, 3]),
        "scale": rng.uniform(0.5, 1.5, size=6),
        "shift": rng.normal(size=6),
        "mean": rng.normal(size=6),
        "var": rng.uniform(0.5, 2, size=6),
        "fc.weight": rng.normal(size=(3, 6)),
    }
    w["pads"], w["axes"] = w["pads"].astype(np.int64), w["axes"].astype(np.int64)
    nodes = [
        helper.make_node("Conv", ["x", "k.weight", "k.bias"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["a", "slope"], ["b"]),
        helper.make_node(
            "Conv", ["b", "k.weight", "k.bias"], ["c"], pads=[1, 1, 1, 1]
        ),  # the same layer again
        helper.make_node("HardSigmoid", ["c"], ["d"], alpha=1 / 6),
        helper.make_node("Pad", ["d", "pads"], ["e"]),
        helper.make_node("MaxPool", ["e"], ["f"], kernel_shape=[2, 2], strides=[2, 2], auto_pad="VALID"),
        helper.make_node("Concat", ["f", "f"], ["g"], axis=1),
        helper.make_node("ReduceMean", ["g", "axes"], ["h"], keepdims=0),
        helper.make_node("BatchNormalization", ["h", "scale", "shift", "mean", "var"], ["i"], epsilon=1e-3),
        helper.make_node("Gemm", ["i", "fc.weight"], ["j"], transB=1),
        helper.make_node("Softmax", ["j"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [
            numpy_helper.from_array(np.asarray(v, dtype=v.dtype if v.dtype == np.int64 else np.float32), k)
            for k, v in w.items()
        ],
    )
    path = tmp_path / "more.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    import_onnx(path, tmp_path / "run", class_names=NAMES)
    model = Run.open(tmp_path / "run").model
    operations = [stage.operation for stage in model.graph_stages()]
    assert operations.count("k") == 2  # one layer, called twice: its weights are stored once
    assert {"Hardsigmoid", "ZeroPad2d", "MaxPool2d", "Concat", "Flatten", "Softmax"} <= set(operations)
    layers = {type(m).__name__ for m in model.body.modules()}
    assert {"Conv2d", "PReLU", "BatchNorm1d", "Linear"} <= layers
    pixels = torch.rand(2, 3, 9, 9)
    (expected,) = _onnxruntime(path, pixels).values()
    with torch.no_grad():
        _close(model(pixels), expected, "softmax output")


def test_a_hard_sigmoid_torch_has_no_layer_for_is_refused(tmp_path):
    nodes = [
        helper.make_node("HardSigmoid", ["x"], ["h"]),
        helper.make_node("GlobalAveragePool", ["h"], ["y"]),
    ]
    path = tmp_path / "hs.onnx"
    onnx.save(_node_model(nodes, {}), str(path))
    with pytest.raises(ConvlensError, match=r"HardSigmoid node .*alpha 0.2 and beta 0.5 differ from torch's"):
        import_onnx(path, tmp_path / "run", class_names=NAMES)
    assert not (tmp_path / "run").exists()
