"""Any nn.Module opened as a graph of stages: every number checked against the model itself.

Two models built here (nothing downloaded): a hand-written one with a functional ReLU, an in-place
ReLU module called twice, a residual addition, a concatenation and ``torch.flatten``; and a small
ResNet in torchvision's layout (its block calls one in-place ReLU twice, adds with ``+=``, and its
head flattens with ``x.view(x.size(0), -1)``). Each stage's output is compared with the forward
written out by hand, cell arithmetic with torch, Grad-CAM with Captum (or, at a reused module's
call, with autograd by hand), receptive fields with the pixels whose gradient is not zero.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from any_models import (
    MODELS,
    SHAPE,
    Handwritten,
    TinyResNet,
    handwritten_stages,
    trained,
)
from convlens.errors import ConvlensError
from convlens.inspect import (
    AddCell,
    ConcatCell,
    activations,
    cell_arithmetic,
    grad_cam,
    layer_facts,
    open_model,
    receptive_fields,
    stage_inputs,
)


@pytest.fixture(params=list(MODELS))
def case(request):
    build, reference = MODELS[request.param]
    net = build()
    return net, open_model(net, SHAPE), reference


def test_the_stages_are_the_graph_in_order_with_their_inputs():
    model = open_model(trained(Handwritten(), 0), SHAPE)
    assert model.traced and model.notes == ()
    inputs = stage_inputs(model)
    assert list(inputs) == list(handwritten_stages(Handwritten().eval(), torch.zeros(1, *SHAPE)))
    assert inputs["conv1"] == ("input",)
    assert inputs["add"] == ("relu_1", "relu")  # the functional ReLU and the module's first call
    assert inputs["relu_2"] == ("add",)  # the module's second call is a stage of its own
    assert inputs["cat"] == ("relu_2", "branch")
    assert inputs["flatten"] == ("gap",)
    resnet = stage_inputs(open_model(trained(TinyResNet(), 1), SHAPE))
    assert resnet["layer2.0.add"] == ("layer2.0.bn2", "layer2.0.downsample.1")  # the skip connection
    assert resnet["layer1.0.add"] == ("layer1.0.bn2", "maxpool")  # the identity shortcut
    assert resnet["view"] == ("avgpool",) and resnet["fc"] == ("view",)


def test_every_stage_and_the_probabilities_equal_the_model(case):
    net, model, reference = case
    images = torch.rand(2, *SHAPE)
    with torch.no_grad():
        expected = reference(net, images)
        original = net(images.clone())
    result = activations(model, images)
    assert result.names == [*expected, "softmax"]
    kinds = {stage.name: stage.kind for stage in result.stages}
    assert kinds["fc"] == "Linear" and kinds[next(n for n in expected if n.endswith("add"))] == "Add"
    for name, output in expected.items():
        torch.testing.assert_close(result[name], output, atol=1e-5, rtol=0, msg=name)
    torch.testing.assert_close(result.probabilities, torch.softmax(original, dim=-1), atol=1e-5, rtol=0)


def _cells(shape: tuple[int, ...], count: int, generator: torch.Generator) -> list[tuple[int, int, int]]:
    picks = [int(torch.randint(size, (1,), generator=generator)) for size in shape for _ in range(count)]
    if len(shape) == 1:
        return [(picks[i], 0, 0) for i in range(count)]
    return [(picks[i], picks[count + i], picks[2 * count + i]) for i in range(count)]


def test_cell_arithmetic_at_random_cells_equals_torch(case):
    net, model, reference = case
    image = torch.rand(SHAPE)
    with torch.no_grad():
        expected = reference(net, image.unsqueeze(0))
    inputs = stage_inputs(model)
    generator = torch.Generator().manual_seed(0)
    checked = set()
    for name, module in model.stages():
        if not isinstance(
            module, (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AdaptiveAvgPool2d)
        ) and not name.endswith(("add", "cat")):
            continue
        output = expected[name][0]
        for channel, row, col in _cells(tuple(output.shape), 20, generator):
            cell = cell_arithmetic(model, image, name, channel, row, col)
            value = output[channel, row, col] if output.ndim == 3 else output[channel]
            assert cell.total == pytest.approx(float(value), abs=1e-5), (name, channel, row, col)
            if isinstance(cell, AddCell):
                assert cell.input_stages == list(inputs[name])
                read = [expected[source][0][channel, row, col] for source in inputs[name]]
                assert cell.values == pytest.approx([float(v) for v in read], abs=1e-6)
            if isinstance(cell, ConcatCell):
                source = expected[inputs[name][cell.source]][0]
                assert float(source[cell.source_index]) == pytest.approx(float(value), abs=1e-6)
                assert cell.offsets == [0, expected[inputs[name][0]].shape[1]]
        checked.add(type(module).__name__)
    assert {"Conv2d", "Linear", "Add"} <= checked


def _manual_grad_cam(stage_value: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
    """Grad-CAM by hand: the channels of the stage's map weighed by their mean gradient."""
    (gradient,) = torch.autograd.grad(logit, stage_value)
    return (gradient.mean(dim=(2, 3), keepdim=True) * stage_value).sum(dim=1)[0]  # (h, w)


def test_grad_cam_at_the_last_spatial_stage_equals_captum(case):
    from captum.attr import LayerGradCam

    net, model, _ = case
    image = torch.rand(SHAPE)
    last = "pool" if isinstance(net, Handwritten) else "layer2.0.relu_1"
    ours = grad_cam(model, image, target=1, stage=last)
    module = net.pool if isinstance(net, Handwritten) else net.layer2[0].relu  # layer2.0.relu's last call
    theirs = LayerGradCam(net, module).attribute(image.unsqueeze(0), target=1)[0, 0]
    torch.testing.assert_close(ours.raw, theirs.detach(), atol=1e-5, rtol=0)


def test_grad_cam_at_a_reused_module_looks_at_the_call_the_stage_names():
    """relu and relu_2 are two calls of one in-place ReLU module: each stage its own map."""
    net = trained(Handwritten(), 0)
    model = open_model(net, SHAPE)
    image = torch.rand(SHAPE)
    for stage in ("relu", "relu_2"):
        s = handwritten_stages(net, image.unsqueeze(0))
        value = s[stage].detach().requires_grad_()  # the stage's map, differentiated by hand from here on
        if stage == "relu":
            conv2 = net.conv2(value)
            after = torch.relu(torch.relu(conv2) + value)
        else:
            after = value
        z = torch.cat([after, net.branch(after)], dim=1)
        logit = net.fc(torch.flatten(net.gap(net.pool(z)), 1))[0, 2]
        expected = _manual_grad_cam(value, logit)
        torch.testing.assert_close(
            grad_cam(model, image, target=2, stage=stage).raw, expected, atol=1e-5, rtol=0
        )


def _positive_copy(net: nn.Module, average_pools: bool = False) -> nn.Module:
    """Random positive weights: every unit's gradient reaches every pixel it reads (no ReLU is
    off, nothing cancels), so the pixels with a nonzero gradient are exactly its receptive field.
    With ``average_pools`` a max pool becomes an average pool of the same window: next to a map's
    zero padding, positive cells are smaller and would never win a max."""
    positive = copy.deepcopy(net)
    for parent in list(positive.modules()):
        for child_name, child in list(parent.named_children()):
            if average_pools and isinstance(child, nn.MaxPool2d):
                setattr(parent, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in positive.parameters():
            parameter.uniform_(0.1, 1.0)
        for module in positive.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
    return positive.eval()


def test_receptive_fields_are_the_pixels_with_a_nonzero_gradient(case):
    net, _, reference = case
    positive = _positive_copy(net)
    fields = {field.stage: field for field in receptive_fields(open_model(positive, SHAPE))}
    images = torch.rand(32, *SHAPE, requires_grad=True)
    stages = reference(positive, images)
    spatial = [name for name, value in stages.items() if value.ndim == 4 and value.shape[-1] > 1]
    assert len(spatial) >= 8
    for name in spatial:
        rows, cols = stages[name].shape[-2:]
        for row, col in {(0, 0), (rows - 1, cols - 1), (rows // 2, cols // 2), (0, cols - 1)}:
            (gradient,) = torch.autograd.grad(stages[name][:, 0, row, col].sum(), images, retain_graph=True)
            seen = gradient.abs().sum(dim=(0, 1)) > 0  # (H, W)
            top, bottom, left, right = fields[name].region(row, col, SHAPE[1:])
            expected = torch.zeros_like(seen)
            expected[top : bottom + 1, left : right + 1] = True
            assert torch.equal(seen, expected), (name, row, col, fields[name].region(row, col, SHAPE[1:]))


def test_layer_facts_read_each_stages_own_input():
    facts = {f.stage: f for f in layer_facts(open_model(trained(TinyResNet(), 1), SHAPE))}
    assert facts["layer2.0.downsample.0"].input_shape == (4, 6, 6)  # the block's input, not bn2's output
    assert facts["layer2.0.add"].role == "add" and facts["layer2.0.add"].grad_cam_target
    assert facts["view"].role == "flatten" and facts["view"].output_shape == (8,)


def test_a_normalize_stage_goes_first():
    net = trained(Handwritten(), 0)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    model = open_model(net, SHAPE, mean=mean, std=std)
    assert model.stages()[0][0] == "normalize" and stage_inputs(model)["conv1"] == ("normalize",)
    images = torch.rand(2, *SHAPE)
    normalized = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(images), net(normalized), atol=1e-5, rtol=0)
    with pytest.raises(ConvlensError, match="one value per channel"):
        open_model(net, SHAPE, mean=[0.5], std=[0.5])


class DataDependent(nn.Module):
    """Control flow on a tensor's value: symbolic tracing cannot follow it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4 * 10 * 10, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(x))
        if x.mean() > 100:  # never true for these weights
            x = x * 2
        return self.fc(torch.flatten(self.relu(x - 0.1), 1))


def test_a_model_that_cannot_be_traced_opens_through_hooks_and_says_what_is_not_shown():
    torch.manual_seed(0)
    net = DataDependent().eval()
    model = open_model(net, SHAPE)
    assert not model.traced and stage_inputs(model) is None
    assert "could not be traced" in model.notes[0] and "not shown" in model.notes[1]
    assert [name for name, _ in model.stages()] == ["conv", "relu", "relu_1", "fc"]
    images = torch.rand(2, *SHAPE)
    result = activations(model, images)
    with torch.no_grad():
        conv = net.conv(images)
        torch.testing.assert_close(result["conv"], conv, atol=1e-5, rtol=0)  # before the in-place ReLU
        torch.testing.assert_close(result["relu"], torch.relu(conv), atol=1e-5, rtol=0)
        torch.testing.assert_close(result["relu_1"], torch.relu(torch.relu(conv) - 0.1), atol=1e-5, rtol=0)
        torch.testing.assert_close(result.logits, net(images), atol=1e-5, rtol=0)
    assert all(not module._forward_hooks for module in net.modules())  # every hook removed
    image = torch.rand(SHAPE)
    for stage in ("relu", "relu_1"):  # two calls of one in-place ReLU module, each its own map
        value = torch.relu(net.conv(image.unsqueeze(0))).detach().requires_grad_()
        later = torch.relu(value - 0.1)
        if stage == "relu_1":
            value = later = later.detach().requires_grad_()
        expected = _manual_grad_cam(value, net.fc(torch.flatten(later, 1))[0, 1])
        torch.testing.assert_close(
            grad_cam(model, image, target=1, stage=stage).raw, expected, atol=1e-5, rtol=0
        )
    with pytest.raises(
        ConvlensError, match="receptive fields need the model's graph, and the model could not be traced"
    ):
        receptive_fields(model)


def test_a_deep_copy_is_a_model_of_its_own():
    """Faithfulness checks randomize a deep copy: its stages must be the copy's, not the original's."""
    net = trained(TinyResNet(), 1)
    model = open_model(net, SHAPE)
    twin = copy.deepcopy(model)
    images = torch.rand(2, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(twin(images), model(images), atol=0, rtol=0)
        for parameter in twin.parameters():
            parameter.mul_(-1)
        torch.testing.assert_close(model(images), net(images), atol=0, rtol=0)
        assert not torch.allclose(twin(images), model(images))
    assert all(
        ours is not theirs for (_, ours), (_, theirs) in zip(model.stages(), twin.stages(), strict=True)
    )


class InPlaceEverywhere(nn.Module):
    """In-place calls whose changed tensor is read again afterwards: the traced model must read
    the changed values, as the model does, and still record each stage's own output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 12 * 12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x)
        F.relu(features, True)  # by position; `features` now holds the rectified map
        shifted = features - 0.2
        shifted.relu_()
        shifted += features  # operator.iadd
        return self.fc(shifted.flatten(1))


def test_in_place_calls_keep_the_models_values_and_each_stages_own_output():
    torch.manual_seed(0)
    net = InPlaceEverywhere().eval()
    model = open_model(net, SHAPE)
    assert model.traced
    images = torch.rand(2, *SHAPE)
    result = activations(model, images)
    with torch.no_grad():
        conv = net.conv(images)
        rectified = torch.relu(conv)
        torch.testing.assert_close(result["conv"], conv, atol=1e-6, rtol=0)  # not the rectified map
        torch.testing.assert_close(result["relu"], rectified, atol=1e-6, rtol=0)
        torch.testing.assert_close(result["add"], torch.relu(rectified - 0.2) + rectified, atol=1e-6, rtol=0)
        torch.testing.assert_close(result.logits, net(images.clone()), atol=1e-5, rtol=0)
    assert stage_inputs(model)["sub"] == ("relu",)  # reads the changed tensor, not the convolution


class Erf(nn.Module):
    """A toy kind for a function: what ``torch.erf`` runs as in a traced model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(x)


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.fc = nn.Linear(2 * 10 * 10, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.erf(self.conv(x)), 1))


def test_a_kind_keyed_by_function_reaches_a_traced_models_stage():
    from convlens.inspect import elementwise, register_layer_kind, unregister_layer_kind

    torch.manual_seed(0)
    net = Gated().eval()
    image = torch.rand(SHAPE)
    plain = open_model(net, SHAPE)
    assert type(dict(plain.stages())["erf"]).__name__ == "FunctionCall"
    with pytest.raises(ConvlensError, match=r"'erf' \(erf\) has no cell arithmetic"):
        cell_arithmetic(plain, image, "erf", 0, 0, 0)
    shown = activations(plain, image)  # its map is shown all the same
    assert {s.name: s.kind for s in shown.stages}["erf"] == "erf"
    with torch.no_grad():
        torch.testing.assert_close(shown["erf"], torch.erf(net.conv(image.unsqueeze(0)))[0])
    register_layer_kind(
        Erf,
        role="erf",
        arithmetic=elementwise("erf(x)", lambda module, x: math.erf(x)),
        calls={torch.erf: lambda input: Erf()},
    )
    try:
        with pytest.raises(ConvlensError, match="calls: erf already run as a module"):
            register_layer_kind(nn.Tanh, role="tanh", calls={torch.erf: lambda input: Erf()})
        model = open_model(net, SHAPE)
        assert isinstance(dict(model.stages())["erf"], Erf)
        assert {f.stage: f.role for f in layer_facts(model)}["erf"] == "erf"
        with torch.no_grad():
            expected = torch.erf(net.conv(image.unsqueeze(0)))[0]
        for channel, row, col in [(0, 0, 0), (1, 4, 7), (1, 9, 9)]:
            cell = cell_arithmetic(model, image, "erf", channel, row, col)
            assert cell.total == pytest.approx(float(expected[channel, row, col]), abs=1e-6)
    finally:
        unregister_layer_kind(Erf)
    assert type(dict(open_model(net, SHAPE).stages())["erf"]).__name__ == "FunctionCall"


def test_the_network_endpoints_stages_carry_their_inputs():
    """The explorer's network JSON: each stage of a traced model lists the stages it reads, and its
    windows in the maps it reads through any branch."""
    from types import SimpleNamespace

    from convlens.server.network import _wiring

    model = open_model(trained(TinyResNet(), 1), SHAPE)
    run = SimpleNamespace(model=model, fields=lambda: receptive_fields(model))
    stages = {stage["name"]: stage for stage in _wiring(run)["stages"]}
    assert stages["layer2.0.add"]["inputs"] == ["layer2.0.bn2", "layer2.0.downsample.1"]
    assert stages["layer2.0.add"]["role"] == "add"
    assert stages["conv1"]["inputs"] == ["input"] and stages["softmax"]["inputs"] is None
    # windows through every branch: the block's first convolution reads maxpool through 3x3 windows,
    # its addition reads the shortcut's map, and the shortcut never reads the main path
    assert tuple(stages["layer1.0.conv1"]["windows"]["maxpool"]["rows"][1]) == (0, 2)
    assert "layer2.0.downsample.1" in stages["layer2.0.add"]["windows"]
    assert "layer2.0.conv1" not in stages["layer2.0.downsample.1"]["windows"]


def test_a_model_seen_through_hooks_answers_threads_one_pass_at_a_time():
    """The explorer's threads share a model; each pass patches the modules' forward and undoes it,
    so two passes at once would undo each other's patch (an AttributeError) without the lock."""
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(0)
    net = DataDependent().eval()
    model = open_model(net, SHAPE)
    images = torch.rand(64, 1, *SHAPE)
    with torch.no_grad(), ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(model, images))
        for image, output in zip(images, outputs, strict=True):
            torch.testing.assert_close(output, net(image), atol=1e-5, rtol=0)
    assert all("forward" not in vars(module) for module in net.modules())  # every patch undone


class TwoBranches(nn.Module):
    """After the last convolution, a stage on the other branch comes first in topological order."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 12 * 12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x)
        shifted = F.relu(x - 0.5)  # reads the image, not the convolution
        return self.fc(torch.flatten(F.relu(features + shifted), 1))


def test_grad_cams_default_stage_follows_the_last_convolutions_branch():
    from convlens.inspect import grad_cam_stage

    model = open_model(TwoBranches().eval(), SHAPE)
    assert list(stage_inputs(model))[:4] == ["conv", "sub", "relu", "add"]
    assert grad_cam_stage(model) == "relu_1"  # through the addition to its ReLU, past the other branch


def test_windows_through_branches_are_the_cells_with_a_nonzero_gradient(case):
    """For every pair of feature maps one reads from the other, the rows and columns of the
    earlier map that an output position reads (any channel: a concatenation's channels read
    different inputs): exactly where the position's gradient is not zero."""
    from convlens.inspect import stage_windows

    net, _, reference = case
    positive = _positive_copy(net, average_pools=True)
    windows = stage_windows(open_model(positive, SHAPE))
    images = torch.rand(32, *SHAPE)
    stages = reference(positive, images)
    checked = 0
    for name, earlier_windows in windows.items():
        rows, cols = stages[name].shape[-2:]
        for earlier, (row_windows, col_windows) in earlier_windows.items():
            for row, col in {(0, 0), (rows - 1, cols - 1), (rows // 2, cols // 2)}:
                (gradient,) = torch.autograd.grad(
                    stages[name][:, :, row, col].sum(), stages[earlier], retain_graph=True
                )
                seen = gradient.abs().sum(dim=(0, 1)) > 0  # (h, w) of the earlier map
                expected = torch.zeros_like(seen)
                (top, bottom), (left, right) = row_windows[row], col_windows[col]
                expected[top : bottom + 1, left : right + 1] = True
                assert torch.equal(seen, expected), (name, earlier, row, col)
                checked += 1
    assert checked > 100
    if isinstance(net, TinyResNet):  # the shortcut and the block's main path read each other nowhere
        assert "layer2.0.conv1" not in windows["layer2.0.downsample.1"]
        assert "layer2.0.downsample.1" in windows["layer2.0.relu_1"] and "maxpool" in windows["layer2.0.add"]
