"""A torch.export program (.pt2) imported as a graph run: every stage checked against the model.

The test models of ``any_models`` (an in-place ReLU module called twice, ``out += identity``, a
functional ReLU, a concatenation, ``view(x.size(0), -1)``) and convlens's ResNet-18 in
torchvision's layout are exported, saved, imported and opened as runs; each stage's output must
equal the forward written out by hand under the traced route's names, in graph order. Files that
are no program, or whose weights would need unpickling, are refused with one line, writing nothing.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from any_models import MODELS, SHAPE, TinyResNet, trained
from convlens import Run
from convlens.errors import ConvlensError
from convlens.imports.exported import _tensors_only, graph_from_program, import_program, read_program
from convlens.inspect import activations, open_model, stage_inputs
from convlens.models import create_model


def _save(net: nn.Module, path, batch: int = 2, dynamic: bool = True):
    """Export ``net`` (the batch size free, or fixed at ``batch``) and save it to ``path``."""
    dims = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(net, (torch.rand(batch, *SHAPE),), dynamic_shapes=dims)
    torch.export.save(program, path)
    return program


def _nothing_written(run_dir) -> bool:
    return not (run_dir / "model.json").exists() and not (run_dir / "model.safetensors").exists()


@pytest.mark.parametrize("name", list(MODELS))
def test_every_stage_equals_the_model_under_the_traced_names(tmp_path, name):
    build, reference = MODELS[name]
    net = build()
    _save(net, tmp_path / "model.pt2")
    result = import_program(tmp_path / "model.pt2", tmp_path / "run", class_names="a,b,c")
    assert result.arch == "graph" and result.preprocessing.input_shape == SHAPE  # from the program
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["imported"]["route"] == "torch.export" and meta["imported"]["program"] == "model.pt2"
    run = Run.open(tmp_path / "run")
    images = torch.rand(3, *SHAPE)
    with torch.no_grad():
        expected = reference(net, images)
        original = net(images.clone())  # in-place ops: keep images as they were
    stages = activations(run.model, images)
    assert stages.names == ["normalize", *expected, "softmax"]  # graph order, traced names
    for stage, output in expected.items():
        torch.testing.assert_close(stages[stage], output, atol=1e-5, rtol=0, msg=stage)
    torch.testing.assert_close(run.predict(images), torch.softmax(original, dim=-1), atol=1e-5, rtol=0)


def test_in_place_ops_run_out_of_place_and_later_readers_see_the_new_value():
    program = torch.export.export(trained(TinyResNet(), 1), (torch.rand(2, *SHAPE),))
    ops = {str(node.target) for node in program.graph_module.graph.nodes}
    assert {"aten.add_.Tensor", "aten.relu_.default"} <= ops  # `out += identity`, ReLU(inplace=True)
    graph, state, facts = graph_from_program(program)
    stages = {stage["name"]: stage for stage in graph["stages"]}
    assert stages["layer1.0.add"] == {"name": "layer1.0.add", "type": "Add", "args": {}, "reads": ["layer1.0.bn2", "maxpool"]}  # fmt: skip
    assert stages["layer1.0.relu_1"]["reads"] == ["layer1.0.add"]  # the block's ReLU, second call
    assert stages["layer1.0.relu_1"]["type"] == "ReLU" and stages["view"]["type"] == "Flatten"
    assert graph["modules"]["layer2.0.downsample.1"]["type"] == "BatchNorm2d"
    assert "layer2.0.downsample.1.num_batches_tracked" in state  # the program's own key names
    assert facts == {"input_shape": SHAPE, "static_batch": 2}


def test_a_static_batch_program_imports_and_predicts_one_image(tmp_path):
    net = trained(TinyResNet(), 1)
    _save(net, tmp_path / "static.pt2", batch=2, dynamic=False)
    import_program(tmp_path / "static.pt2", tmp_path / "run", class_names="a,b,c")
    run = Run.open(tmp_path / "run")
    image = torch.rand(1, *SHAPE)
    with torch.no_grad():
        expected = torch.softmax(net(image.clone()), dim=-1)
    torch.testing.assert_close(run.predict(image), expected, atol=1e-5, rtol=0)


def test_resnet18_in_torchvision_layout_gets_the_traced_routes_stage_names(tmp_path):
    model = create_model("resnet18", (3, 32, 32), 3)
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_var.uniform_(0.5, 2)
                module.running_mean.uniform_(-0.2, 0.2)
    children = ((n, m) for n, m in model.body.named_children() if n != "normalize")
    body = nn.Sequential(OrderedDict(children)).eval()
    program = torch.export.export(body, (torch.rand(1, 3, 32, 32),))
    result = import_program(program, tmp_path / "run", class_names="a,b,c")
    assert result.sources == {"program": "in memory"} and result.loaded == len(body.state_dict())
    run = Run.open(tmp_path / "run")
    traced = open_model(body, (3, 32, 32))
    ours = {
        n: tuple("input" if r == "normalize" else r for r in reads)
        for n, reads in stage_inputs(run.model).items()
    }
    ours.pop("normalize")  # the run's own stage; the traced body has none
    assert list(ours) == list(stage_inputs(traced))  # names, in order
    assert ours == stage_inputs(traced)  # and what each reads
    images = torch.rand(2, 3, 32, 32)
    mine, theirs = activations(run.model, images), activations(traced, images)
    for name in ("layer1.0.add", "layer4.1.relu_1", "flatten"):
        torch.testing.assert_close(mine[name], theirs[name], atol=1e-5, rtol=1e-5, msg=name)
    with torch.no_grad():
        expected = torch.softmax(body(images), dim=-1)
    torch.testing.assert_close(run.predict(images), expected, atol=1e-5, rtol=0)


class _Erf(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(torch.erf(self.conv(x)).mean((2, 3)))


def test_an_op_without_a_layer_is_refused_by_name(tmp_path):
    program = torch.export.export(_Erf().eval(), (torch.rand(2, *SHAPE),))
    with pytest.raises(
        ConvlensError, match=r"no convlens layer: aten\.erf\.default at erf\b.*Conv2d"
    ) as caught:
        import_program(program, tmp_path / "run", class_names="a,b,c")
    assert "\n" not in str(caught.value) and _nothing_written(tmp_path / "run")


class _MeanHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(F.relu6(self.conv(x)).mean((2, 3)))


def test_a_mean_over_height_and_width_is_a_global_pool_then_a_flatten(tmp_path):
    net = _MeanHead().eval()
    import_program(_save(net, tmp_path / "m.pt2"), tmp_path / "run", class_names="a,b,c")
    run = Run.open(tmp_path / "run")
    images = torch.rand(2, *SHAPE)
    stages = activations(run.model, images)
    assert stages.names == ["normalize", "conv", "relu6", "mean_pooled", "mean", "fc", "softmax"]
    with torch.no_grad():
        conv = net.conv(images)
        expected = net(images)
    torch.testing.assert_close(stages["relu6"], conv.clamp(0, 6), atol=1e-6, rtol=0)
    torch.testing.assert_close(stages["mean"], conv.clamp(0, 6).mean((2, 3)), atol=1e-6, rtol=0)
    torch.testing.assert_close(stages.logits, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"just text", r"not a torch\.export program \(a \.pt2 file is a zip archive\)"),
        ("zip", r"not a torch\.export program torch can read"),
    ],
)
def test_a_file_that_is_no_program_is_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "model.pt2"
    if content == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "hello")
    else:
        path.write_bytes(content)
    with pytest.raises(ConvlensError, match=message) as caught:
        import_program(path, tmp_path / "run", class_names="a,b,c")
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    assert _nothing_written(tmp_path / "run")
    with pytest.raises(ConvlensError, match="no such file"):
        read_program(tmp_path / "missing.pt2")


class _Payload:
    """Unpickled, it would make a folder: proof that nothing was unpickled is that none exists."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_program_whose_weights_need_unpickling_is_refused_and_nothing_runs(tmp_path):
    good, bad, marker = tmp_path / "good.pt2", tmp_path / "bad.pt2", tmp_path / "unpickled"
    _save(trained(TinyResNet(), 1), good)
    with zipfile.ZipFile(good) as source:
        names = source.namelist()
        config_name = next(n for n in names if n.endswith("model_weights_config.json"))
        config = json.loads(source.read(config_name))
        entry = config["config"]["fc.bias"]
        entry["use_pickle"] = True  # torch's reader then calls torch.load(weights_only=False)
        weight_name = config_name.rsplit("/", 1)[0] + "/" + entry["path_name"]
        payload = io.BytesIO()
        torch.save(_Payload(marker), payload)
        with zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as target:
            for name in names:
                data = source.read(name)
                data = json.dumps(config).encode() if name == config_name else data
                target.writestr(name, payload.getvalue() if name == weight_name else data)
    with pytest.raises(ConvlensError, match=r"bad\.pt2: refusing to unpickle it") as caught:
        import_program(bad, tmp_path / "run", class_names="a,b,c")
    assert "\n" not in str(caught.value) and not marker.exists() and _nothing_written(tmp_path / "run")
    assert read_program(good) is not None  # the same file, untouched, reads


def test_while_reading_torch_load_takes_tensors_only_and_is_restored_after(tmp_path):
    marker = tmp_path / "unpickled"
    payload = io.BytesIO()
    torch.save(_Payload(marker), payload)
    real = torch.load
    with (
        _tensors_only(),
        pytest.raises(Exception, match=r"^Trying to load unsupported GLOBAL posix\.mkdir") as caught,
    ):
        payload.seek(0)
        torch.load(payload, weights_only=False)
    assert not isinstance(caught.value, RuntimeError)  # torch.export.load would swallow that
    from torch.export.pt2_archive import _package

    assert torch.load is real and _package.pickle is pickle and not marker.exists()


def test_a_program_argument_of_another_type_is_refused():
    with pytest.raises(ConvlensError, match="program must be a torch.export ExportedProgram"):
        import_program(nn.Linear(2, 2), "unused")


class _Zoo(nn.Module):
    """One of each other layer the table maps, each checked by the import's own reproduction check."""

    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((1, 0, 1, 0))
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.prelu = nn.PReLU(8)
        self.dw = nn.Conv2d(8, 8, 3, padding="same", groups=8, bias=False)
        self.act = nn.Sequential(nn.ELU(), nn.Softplus(), nn.LeakyReLU(0.2), nn.GELU("tanh"), nn.SiLU(), nn.Hardswish(), nn.Hardsigmoid(), nn.Mish(), nn.Sigmoid(), nn.Tanh())  # fmt: skip
        self.up = nn.Upsample(scale_factor=2)
        self.deconv = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.shuffle = nn.PixelShuffle(2)
        self.avg = nn.AvgPool2d(2, ceil_mode=True)
        self.ln = nn.LayerNorm([1, 14, 14])
        self.drop = nn.Dropout2d(0.2)
        self.fc = nn.Linear(196, 3)

    def forward(self, x):
        x = self.act(self.dw(self.prelu(self.gn(self.conv(self.pad(x))))))
        x = F.max_pool2d(self.deconv(self.up(x)), 2, return_indices=True)[0]
        x = F.hardtanh(self.drop(self.ln(self.avg(self.shuffle(x)))), -2.0, 2.0)
        return F.log_softmax(self.fc(x.reshape(x.shape[0], -1)) + 1.5, dim=1)


def test_the_other_layers_map_and_reproduce_the_program(tmp_path):
    program = torch.export.export(
        _Zoo().eval(), (torch.rand(2, *SHAPE),), dynamic_shapes=({0: torch.export.Dim("n")},)
    )
    result = import_program(program, tmp_path / "run", class_names="a,b,c")  # refused unless it reproduces
    graph = json.loads(result.checkpoint.read_text())["model"]["options"]["graph"]
    kinds = {s["name"]: s.get("type") or graph["modules"][s["module"]]["type"] for s in graph["stages"]}
    assert kinds["pad"] == "ZeroPad2d" and kinds["deconv"] == "ConvTranspose2d" and kinds["act.3"] == "GELU"
    assert kinds["max_pool2d_with_indices"] == "MaxPool2d" and kinds["reshape"] == "Flatten"
    assert kinds["hardtanh"] == "Hardtanh" and kinds["add"] == "Add" and kinds["log_softmax"] == "LogSoftmax"
