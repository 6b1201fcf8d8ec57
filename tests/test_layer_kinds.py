"""The layer-kind table: a kind registered at run time reaches the CLI, the report and the page
with no other edit, and every registered kind's cell arithmetic equals the layer's own output."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect import (
    LAYER_KINDS,
    Cell,
    cell_arithmetic,
    elementwise,
    layer_kind,
    receptive_fields,
    register_layer_kind,
    unregister_layer_kind,
)
from convlens.inspect.geometry import Geometry, same_cells
from convlens.models import MODELS, Normalize, StagedModel, register_model
from convlens.models.calls import Add, Concat


class HardClip(nn.Module):
    """Toy activation: values clipped to [low, high]."""

    def __init__(self, low: float = -1.0, high: float = 1.0) -> None:
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.low, self.high)


class Subsample(nn.Module):
    """Toy downsampling: every second row and column (a 1x1 window with stride 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., ::2, ::2]


@dataclass(kw_only=True)
class PickCell(Cell):
    """A cell class the views know nothing about: shown as a table of its numbers."""

    source_row: int
    source_col: int


def subsample_cell(module, x, stage, channel, row, col, real) -> PickCell:
    value = float(x[channel, 2 * row, 2 * col])
    return PickCell(
        stage=stage, kind="subsample", channel=channel, row=row, col=col, total=value, output=real,
        source_row=2 * row, source_col=2 * col,
    )  # fmt: skip


def every_second_cell(module: nn.Module, geometry: Geometry) -> None:
    geometry.apply((1, 1), (2, 2), ((0, 0), (0, 0)), (1, 1))


def toy_clip_net(in_shape, num_classes, mean, std) -> StagedModel:
    """Toy: conv, hard clip, subsample, conv, linear."""
    stages = [
        ("normalize", Normalize(mean, std)),
        ("conv1", nn.Conv2d(in_shape[0], 4, 3, padding=1)),
        ("clip1", HardClip()),
        ("shrink", Subsample()),
        ("conv2", nn.Conv2d(4, 4, 3, padding=1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(4 * (in_shape[1] // 2) * (in_shape[2] // 2), num_classes)),
    ]
    return StagedModel(stages, in_shape, num_classes)


@pytest.fixture(scope="module")
def toy_kinds():
    """The two toy kinds, registered for this module's tests and unregistered afterwards."""
    register_layer_kind(
        HardClip,
        role="clip",
        arithmetic=elementwise(lambda m: f"min(max(x, {m.low:g}), {m.high:g})", lambda m, x: min(max(x, m.low), m.high)),
        geometry=same_cells,
        grad_cam_target=True,
    )  # fmt: skip
    register_layer_kind(
        Subsample,
        role="subsample",
        arithmetic=subsample_cell,
        geometry=every_second_cell,
        grad_cam_target=True,
    )
    try:
        yield
    finally:
        unregister_layer_kind(HardClip)
        unregister_layer_kind(Subsample)
    assert layer_kind(HardClip()) is None and layer_kind(Subsample()) is None
    assert "HardClip" not in LAYER_KINDS and "Subsample" not in LAYER_KINDS


@pytest.fixture(scope="module")
def toy_run(toy_kinds, tmp_path_factory, digits):
    """A toy model using both kinds, registered and trained one epoch on digits; unregistered afterwards."""
    from convlens.train import TrainConfig, fit

    register_model("toy-clip-net")(toy_clip_net)
    try:
        run_dir = tmp_path_factory.mktemp("toy-clip-run")
        fit(digits, TrainConfig(model="toy-clip-net", epochs=1, seed=0), run_dir, overwrite=True)
        yield run_dir
    finally:
        MODELS.unregister("toy-clip-net")


def test_the_toy_kinds_arithmetic_in_the_cli(toy_run, run_cli):
    code, out, err = run_cli("explain", toy_run, "digits:3", "--stage", "clip1", "--at", "2,3,4", "--json")
    assert code == 0, err
    cell = json.loads(out)
    assert cell["kind"] == "HardClip" and cell["formula"] == "min(max(x, -1), 1)"
    assert cell["total"] == pytest.approx(cell["output"], abs=1e-6)
    assert cell["after"] == pytest.approx(min(max(cell["before"], -1.0), 1.0))
    assert any(step.get("total") and step["equation"].startswith("min(max(") for step in cell["steps"])

    code, out, err = run_cli("explain", toy_run, "digits:3", "--stage", "shrink", "--at", "1,2,3")
    assert code == 0, err
    assert (
        "shrink (subsample)" in out and "source_row" in out and "source_col" in out
    )  # its numbers, as a table


def test_the_toy_kinds_in_the_explorer(toy_run):
    from fastapi.testclient import TestClient

    from convlens.server import create_app

    client = TestClient(create_app([toy_run], allowed_hosts=["testserver"]))
    run_id = client.get("/api/runs").json()[0]["id"]
    stages = {s["name"]: s for s in client.get(f"/api/runs/{run_id}/network").json()["stages"]}
    assert (stages["clip1"]["role"], stages["shrink"]["role"]) == ("clip", "subsample")
    for name in ("clip1", "shrink"):
        assert not stages[name]["mixes_channels"] and not stages[name]["rectifies"]
        assert stages[name]["grad_cam_target"]
    assert stages["conv1"]["grad_cam_target"] and not stages["fc"]["grad_cam_target"]
    # the subsampling's geometry: conv2 row 1 reads shrink rows 0..2, which are clip1 rows 0, 2, 4
    assert stages["conv2"]["windows"]["shrink"]["rows"][1] == [0, 2]
    assert stages["conv2"]["windows"]["clip1"]["rows"][1] == [0, 4]
    card = {s["name"]: s["layer"] for s in client.get(f"/api/runs/{run_id}").json()["stages"]}
    assert card["clip1"]["role"] == "clip" and card["clip1"]["grad_cam_target"]

    answer = client.post(
        f"/api/runs/{run_id}/arithmetic", data={"test_index": 0, "stage": "clip1", "channel": 1}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["cell"]["type"] == "ElementwiseCell"
    heat = client.post(
        f"/api/runs/{run_id}/attributions", data={"test_index": 0, "methods": "grad-cam", "stage": "shrink"}
    )
    assert heat.status_code == 200, heat.text
    assert heat.json()["attributions"]["grad-cam"]["stage"] == "shrink"


def test_the_toy_stage_in_the_report(toy_run, monkeypatch):
    from convlens.report import render_report, report_sections
    from convlens.views import plots

    drawn = []
    feature_maps = plots.feature_maps

    def spy(stages, *args, **kwargs):
        drawn.extend((name, kind) for name, kind, _ in stages)
        return feature_maps(stages, *args, **kwargs)

    monkeypatch.setattr(plots, "feature_maps", spy)
    _, sections = report_sections(toy_run)
    assert ("clip1", "HardClip") in drawn and ("shrink", "Subsample") in drawn
    html = render_report("toy", sections)
    assert "Feature maps of a sample" in html and 'alt="feature maps"' in html


def test_the_toy_geometry_matches_the_gradient(toy_run):
    from convlens.run import Run

    model = Run.open(toy_run).model.eval()
    images = torch.rand(64, 1, 8, 8, requires_grad=True)
    fields = receptive_fields(model)
    stages = model.stages()
    for index, field in enumerate(fields[:-1]):
        if len(field.output_shape) != 3 or field.whole_image:
            continue
        for row, col in {(0, 0), (1, 2), (field.output_shape[1] - 1, field.output_shape[2] - 1)}:
            images.grad = None
            x = images
            for _, module in stages[: index + 1]:
                x = module(x)
            x[:, :, row, col].sum().backward()
            seen = images.grad.abs().sum(dim=(0, 1)) > 0  # (H, W)
            rows, cols = seen.any(dim=1).nonzero().flatten(), seen.any(dim=0).nonzero().flatten()
            box = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
            assert box == field.region(row, col, (8, 8)), (field.stage, row, col)


class Unknown(nn.Module):
    """A module the table does not know."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_bad_registrations_name_the_parameter():
    with pytest.raises(ConvlensError) as caught:
        register_layer_kind("Conv2d", role="convolution")
    assert caught.value.parameter == "module_type"
    with pytest.raises(ConvlensError) as caught:
        register_layer_kind(Unknown, role="block")
    assert caught.value.parameter == "role"
    with pytest.raises(ConvlensError) as caught:
        register_layer_kind(Unknown, role="clip", arithmetic="min(max(x))")
    assert caught.value.parameter == "arithmetic"
    with pytest.raises(ConvlensError) as caught:
        register_layer_kind(Unknown, role="clip", mixes_channels="yes")
    assert caught.value.parameter == "mixes_channels"
    with pytest.raises(ConvlensError, match="already has a layer kind") as caught:
        register_layer_kind(nn.Conv2d, role="convolution")
    assert caught.value.parameter == "module_type"
    assert layer_kind(Unknown()) is None and "Unknown" not in LAYER_KINDS


def test_hyperparameters_must_be_layer_facts():
    from convlens.inspect import layer_facts

    register_layer_kind(Unknown, role="passthrough", hyperparameters=lambda module: {"window": 3})
    try:
        model = StagedModel([("odd", Unknown()), ("flatten", nn.Flatten())], (1, 2, 2), 4)
        with pytest.raises(ConvlensError, match="gave window; expected some of bias") as caught:
            layer_facts(model)
        assert caught.value.parameter == "hyperparameters"
    finally:
        unregister_layer_kind(Unknown)


def test_subclasses_take_their_base_kind_and_unknown_modules_stay_blocks():
    from convlens.inspect import stage_traits

    class MyConv(nn.Conv2d):
        pass

    assert layer_kind(MyConv(1, 1, 3)).role == "convolution"
    block = nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.ReLU())  # depthwise: channels stay apart
    traits = stage_traits(block, (2, 4, 4))
    assert (traits.role, traits.mixes_channels, traits.rectifies, traits.grad_cam_target) == (
        "block",
        False,
        True,
        True,
    )
    assert stage_traits(nn.Sequential(nn.Conv2d(2, 4, 1)), (4, 4, 4)).mixes_channels
    assert stage_traits(Unknown(), (2, 4, 4)).role == "other"  # unregistered, no weights
    assert not stage_traits(nn.AdaptiveAvgPool2d(1), (2, 1, 1)).grad_cam_target  # a 1x1 map shows no place
    assert stage_traits(None, (10,)).role == "softmax"


# One small stage per registered kind with arithmetic: (input shape (C, H, W), stages). A kind
# registered without an example here fails test_every_kind_has_an_example.
EXAMPLES = {
    nn.Conv2d: ((3, 7, 6), lambda: [("layer", nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=1))]),
    nn.ReLU: ((2, 5, 5), lambda: [("layer", nn.ReLU())]),
    nn.MaxPool2d: ((2, 7, 7), lambda: [("layer", nn.MaxPool2d(3, 2, padding=1, ceil_mode=True))]),
    nn.AvgPool2d: ((2, 7, 7), lambda: [("layer", nn.AvgPool2d(3, 2, padding=1, count_include_pad=False))]),
    nn.AdaptiveAvgPool2d: ((2, 7, 5), lambda: [("layer", nn.AdaptiveAvgPool2d((3, 2)))]),
    nn.BatchNorm2d: ((3, 4, 4), lambda: [("layer", _trained_batchnorm(nn.BatchNorm2d(3)))]),
    nn.BatchNorm1d: ((2, 3, 3), lambda: [("flatten", nn.Flatten()), ("layer", _trained_batchnorm(nn.BatchNorm1d(18)))]),
    Normalize: ((3, 4, 4), lambda: [("layer", Normalize([0.1, 0.5, 0.9], [0.2, 0.3, 0.4]))]),
    nn.Flatten: ((2, 3, 4), lambda: [("layer", nn.Flatten())]),
    nn.Linear: ((2, 3, 3), lambda: [("flatten", nn.Flatten()), ("layer", nn.Linear(18, 5))]),
    HardClip: ((2, 5, 5), lambda: [("layer", HardClip(-0.2, 0.3))]),
    Subsample: ((2, 5, 5), lambda: [("layer", Subsample())]),
    # in a chain, one input (plus a constant); with branches: tests/test_graph_stages.py
    Add: ((2, 5, 5), lambda: [("layer", Add(0.25))]),
    Concat: ((2, 5, 5), lambda: [("layer", Concat(1))]),
    # a segmentation decoder's layers: more cases in tests/test_upsampling_kinds.py
    nn.ConvTranspose2d: ((4, 4, 5), lambda: [("layer", nn.ConvTranspose2d(4, 6, (4, 3), stride=2, padding=1, output_padding=1, groups=2))]),
    nn.Upsample: ((2, 4, 5), lambda: [("layer", nn.Upsample(scale_factor=2.5, mode="bilinear"))]),
}  # fmt: skip


def _trained_batchnorm(module: nn.Module) -> nn.Module:
    """Running statistics and affine weights that are not the identity."""
    with torch.no_grad():
        module.running_mean.uniform_(-1, 1)
        module.running_var.uniform_(0.5, 2)
        module.weight.uniform_(0.5, 2)
        module.bias.uniform_(-1, 1)
    return module


def _kinds_with_arithmetic() -> list:
    return [entry for entry in LAYER_KINDS if entry.function.arithmetic is not None]


def test_every_kind_has_an_example(toy_kinds):
    missing = [e.name for e in _kinds_with_arithmetic() if e.function.module_type not in EXAMPLES]
    assert missing == []


@pytest.mark.parametrize("module_type", list(EXAMPLES), ids=lambda t: t.__name__)
def test_every_kinds_arithmetic_equals_the_layer(toy_kinds, module_type):
    torch.manual_seed(0)
    shape, build = EXAMPLES[module_type]
    stages = build()
    assert layer_kind(stages[-1][1]).arithmetic is not None
    model = StagedModel(stages, shape, 2).eval()
    image = torch.rand(shape)
    with torch.no_grad():
        output = model(image.unsqueeze(0))[0]  # the layer's output is the model's
    cells = [(c, 0, 0) for c in range(output.shape[0])] if output.ndim == 1 else [
        (c, r, q) for c in range(output.shape[0]) for r in range(output.shape[1]) for q in range(output.shape[2])
    ]  # fmt: skip
    for channel, row, col in cells:
        cell = cell_arithmetic(model, image, "layer", channel, row, col)
        expected = float(output[channel, row, col]) if output.ndim == 3 else float(output[channel])
        assert cell.output == pytest.approx(expected, abs=1e-6)
        assert cell.total == pytest.approx(expected, abs=1e-5), (channel, row, col)


# kinds without cell arithmetic still declare whether they are affine
PASS_THROUGH_EXAMPLES = {
    nn.Dropout: ((2, 4, 4), lambda: [("layer", nn.Dropout(0.5))]),
    nn.Dropout2d: ((2, 4, 4), lambda: [("layer", nn.Dropout2d(0.5))]),
    nn.Identity: ((2, 4, 4), lambda: [("layer", nn.Identity())]),
}


@pytest.mark.parametrize(
    "module_type", list(EXAMPLES) + list(PASS_THROUGH_EXAMPLES), ids=lambda t: t.__name__
)
def test_a_kind_declared_affine_is_affine(toy_kinds, module_type):
    """Feature visualization takes a closed-form optimum when every stage before the target is
    declared affine: checked here as f(a·x + (1 − a)·y) = a·f(x) + (1 − a)·f(y) in eval mode."""
    shape, build = {**EXAMPLES, **PASS_THROUGH_EXAMPLES}[module_type]
    stages = build()
    if not layer_kind(stages[-1][1]).affine:
        pytest.skip(f"{module_type.__name__} is not declared affine")
    torch.manual_seed(0)
    model = StagedModel(stages, shape, 2).eval()
    x, y = torch.rand(4, *shape) * 2 - 1, torch.rand(4, *shape) * 2 - 1  # (4, C, H, W), signed
    with torch.no_grad():
        mixed = model(0.3 * x + 0.7 * y)
        assert torch.allclose(mixed, 0.3 * model(x) + 0.7 * model(y), atol=1e-5)


def test_the_affine_check_would_catch_a_rectifier():
    model = StagedModel([("layer", nn.ReLU())], (1, 2, 2), 2).eval()
    x, y = -torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    assert not torch.allclose(model(0.3 * x + 0.7 * y), 0.3 * model(x) + 0.7 * model(y))
    assert not layer_kind(nn.ReLU()).affine


def test_the_toy_kinds_are_listed_with_their_roles(toy_run, run_cli):
    """`convlens methods` and the explorer's registry list every layer kind, a toy one included."""
    from fastapi.testclient import TestClient

    from convlens.server import create_app

    code, out, err = run_cli("methods", "--json")
    assert code == 0, err
    kinds = {kind["name"]: kind for kind in json.loads(out)["layer_kinds"]}
    assert kinds["HardClip"]["role"] == "clip" and kinds["HardClip"]["has_arithmetic"]
    assert kinds["Conv2d"]["mixes_channels"] is None  # depends on the convolution's groups
    assert kinds["ReLU"]["rectifies"] and not kinds["ReLU"]["affine"] and kinds["Linear"]["affine"]
    client = TestClient(create_app([toy_run], allowed_hosts=["testserver"]))
    listed = client.get("/api/registry").json()["layer_kinds"]
    assert {kind["name"]: kind["role"] for kind in listed}["Subsample"] == "subsample"
