"""Saved graph runs: a module written as a run folder and opened again gives every number the
module itself gives.

Each model of ``any_models.MODELS`` goes through ``Run.from_model``, and a ResNet-18 state_dict
with torchvision's key names through ``import_weights``; then the run opened from its folder
(a ``GraphModel``) is checked against the original module: the probabilities, every stage's
output (against the hand-written reference, or forward hooks on the original module: the k-th
call of a module for a stage of a reused module), cell arithmetic at random cells with torch,
Grad-CAM with Captum (and, at a reused module's earlier call, with autograd by hand), receptive
fields with the pixels whose gradient is not zero (on a positive-weight copy saved as a run too).
"""

from __future__ import annotations

import copy
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pytest
import torch
from torch import nn

from any_models import MODELS, SHAPE, trained
from convlens.imports import import_file, import_weights
from convlens.inspect import (
    activations,
    cell_arithmetic,
    grad_cam,
    grad_cam_stage,
    receptive_fields,
    stage_inputs,
)
from convlens.inspect.analyses import explanation_attribution
from convlens.models import create_model
from convlens.run import Run

RESNET18_SHAPE = (3, 32, 32)
RESNET18 = "resnet18-import"


@dataclass
class Saved:
    """An original module, its run opened from the folder, and how to read the module's stages."""

    net: nn.Module  # the original, in eval mode, taking pixels as they are
    run: Run
    stages: Callable[[torch.Tensor], dict[str, torch.Tensor]]  # the original's stage outputs
    last_spatial: str  # the last spatial stage, and the original module Captum looks at there
    last_module: nn.Module
    default: str  # Grad-CAM's default stage: the last convolution's, up to its ReLU
    calls: dict[str, tuple[str, int]]  # stages of a reused module → (its path, which call)


# ------------------------------------------------------------------------- the original's stages


def _module_call(name: str, modules: dict[str, nn.Module]) -> tuple[str, int] | None:
    """The module call a stage name stands for: ``path`` is its first call, ``path_k`` its k-th."""
    if name in modules and name:
        return name, 0
    match = re.fullmatch(r"(.+)_(\d+)", name)
    if match and match[1] in modules:
        return match[1], int(match[2])
    return None


def hooked_stages(net: nn.Module, images: torch.Tensor, reads: dict[str, tuple[str, ...]]):
    """Each stage's output as forward hooks on ``net`` see it, each call kept apart and cloned
    at once (an in-place ReLU or ``+=`` changes the tensor later). A stage with no module of its
    own (an addition) is the input of the module call that reads it. Differentiable."""
    modules = dict(net.named_modules())
    counts: dict[str, int] = {}
    inputs: dict[tuple[str, int], torch.Tensor] = {}
    outputs: dict[tuple[str, int], torch.Tensor] = {}

    def before(path, module, args):
        inputs[path, counts.get(path, 0)] = args[0].clone()

    def after(path, module, args, output):
        outputs[path, counts.get(path, 0)] = output.clone()
        counts[path] = counts.get(path, 0) + 1

    handles = []
    for path, module in modules.items():
        if path and not module._modules:  # a leaf: what a stage calls
            handles.append(module.register_forward_pre_hook(partial(before, path)))
            handles.append(module.register_forward_hook(partial(after, path)))
    try:
        net(images)
    finally:
        for handle in handles:
            handle.remove()
    stages = {}
    for name in reads:
        if name == "normalize":
            continue
        call = _module_call(name, modules)
        if call is not None:
            stages[name] = outputs[call]
            continue
        reader = next(r for r, read in reads.items() if read == (name,) and _module_call(r, modules))
        stages[name] = inputs[_module_call(reader, modules)]
    return stages


def _resnet18_reference(seed: int, positive: bool = False) -> nn.Sequential:
    """convlens' ResNet-18 with BatchNorm statistics that are not the identity, as torchvision's
    modules in order without the normalize stage: what the state_dict's key names describe."""
    model = trained(create_model("resnet18", RESNET18_SHAPE, 3), seed)
    body = nn.Sequential(OrderedDict((n, m) for n, m in model.body.named_children() if n != "normalize"))
    return _positive(body, average_pools=True) if positive else body.eval()


def _import(body: nn.Sequential, folder) -> Run:
    torch.save(body.state_dict(), folder / "resnet18.pth")
    import_weights(
        folder / "resnet18.pth", "resnet18", folder / "run", class_names="a,b,c", input_shape=RESNET18_SHAPE
    )
    return Run.open(folder / "run")


def save(case: str, folder, positive: bool = False) -> Saved:
    """The case's original module and its run, saved into ``folder`` and opened again."""
    if case == RESNET18:
        net = _resnet18_reference(seed=5, positive=positive)
        run = _import(net, folder)
        reads = stage_inputs(run.model)
        calls = {"layer4.1.relu": ("layer4.1.relu", 0), "layer4.1.relu_1": ("layer4.1.relu", 1)}
        return Saved(
            net,
            run,
            lambda x: hooked_stages(net, x, reads),
            "layer4.1.relu_1",
            net.layer4[1].relu,
            "layer4.1.relu_1",
            calls,
        )
    model, _, route = case.partition(" via ")
    build, reference = MODELS[model]
    net = build()
    if positive:
        net = _positive(net)
    if route == ".pt2":  # the same network as a torch.export program
        torch.export.save(torch.export.export(net, (torch.rand(2, *SHAPE),)), folder / "net.pt2")
        import_file(folder / "net.pt2", folder / "run", class_names="a,b,c")
    elif route == "onnx":  # ... and as an ONNX file (BatchNorm kept, not folded into the convolutions)
        torch.onnx.export(
            net, (torch.rand(2, *SHAPE),), folder / "net.onnx", dynamo=False, do_constant_folding=False,
            input_names=["image"], dynamic_axes={"image": {0: "batch"}},
        )  # fmt: skip
        import_file(folder / "net.onnx", folder / "run", class_names="a,b,c")
    else:
        Run.from_model(net, folder / "run", class_names="a,b,c", input_shape=SHAPE)
    run = Run.open(folder / "run")
    handwritten = model == "handwritten"
    last = "pool" if handwritten else "layer2.0.relu_1"
    module = net.pool if handwritten else net.layer2[0].relu  # the relu's last call
    calls = {"relu": ("relu", 0), "relu_2": ("relu", 1)} if handwritten else {}
    default = "branch" if handwritten else last  # no ReLU after the branch's convolution
    stages = partial(reference, net)
    if route == "onnx":  # an ONNX Reshape does not say whether the model wrote view() or reshape()
        stages = partial(_renamed, stages, {"view": "reshape"})
    return Saved(net, run, stages, last, module, default, calls)


def _renamed(stages: Callable, names: dict[str, str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {names.get(name, name): value for name, value in stages(x).items()}


# every model saved with Run.from_model, and the same models through the .pt2 and ONNX routes
CASES = [*MODELS, RESNET18, *(f"{model} via {route}" for model in MODELS for route in (".pt2", "onnx"))]


@pytest.fixture(scope="module", params=CASES)
def saved(request, tmp_path_factory) -> Saved:
    return save(request.param, tmp_path_factory.mktemp(request.param.replace(" ", "-")))


def _positive(net: nn.Module, average_pools: bool = False) -> nn.Module:
    """Random positive weights and BatchNorm statistics of the identity: no ReLU is off and
    nothing cancels, so a unit's gradient reaches exactly the pixels of its receptive field.
    With ``average_pools`` max pools become average pools (one image then suffices: a max pool
    passes the gradient to one cell of its window only)."""
    positive = copy.deepcopy(net)
    for parent in list(positive.modules()):
        for child_name, child in list(parent.named_children()):
            if average_pools and isinstance(child, nn.MaxPool2d):
                setattr(parent, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in positive.parameters():
            parameter.uniform_(0.1, 1.0)
            if parameter.ndim > 1:  # over the fan-in: deep stacks stay finite
                parameter.div_(parameter[0].numel())
        for module in positive.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
    return positive.eval()


# ---------------------------------------------------------------------------------- the checks


def test_the_run_is_a_graph_whose_stages_are_the_modules(saved):
    names = [name for name, _ in saved.run.model.stages()]
    assert saved.run.model_name == "graph" and type(saved.run.model).__name__ == "GraphModel"
    assert names[0] == "normalize"
    with torch.no_grad():
        expected = saved.stages(torch.rand(1, *saved.run.input_shape))
    assert names[1:] == list(expected)
    if saved.net.__class__.__name__ == "Sequential":  # the imported ResNet-18
        assert {
            "conv1",
            "layer1.0.conv1",
            "layer1.0.add",
            "layer1.0.relu_1",
            "avgpool",
            "flatten",
            "fc",
        } <= set(names)
        assert stage_inputs(saved.run.model)["layer2.0.add"] == ("layer2.0.bn2", "layer2.0.downsample.1")


def test_every_stage_and_the_probabilities_equal_the_original(saved):
    images = torch.rand(2, *saved.run.input_shape)
    with torch.no_grad():
        expected = saved.stages(images)
        original = saved.net(images.clone())
    result = activations(saved.run.model, images)
    assert result.names == ["normalize", *expected, "softmax"]
    torch.testing.assert_close(result["normalize"], images, atol=0, rtol=0)  # no mean/std: identity
    for name, output in expected.items():
        torch.testing.assert_close(result[name], output, atol=1e-5, rtol=0, msg=name)
    torch.testing.assert_close(result.probabilities, torch.softmax(original, dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(saved.run.predict(images), torch.softmax(original, dim=-1), atol=1e-5, rtol=0)


def _cells(shape: tuple[int, ...], count: int, generator: torch.Generator) -> list[tuple[int, int, int]]:
    """``count`` random (channel, row, col) of a (C, H, W) map, or (index, 0, 0) of a vector."""
    picks = [[int(torch.randint(size, (1,), generator=generator)) for _ in range(count)] for size in shape]
    return list(zip(*picks, *[[0] * count] * (3 - len(shape)), strict=True))


ARITHMETIC = (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def test_cell_arithmetic_at_random_cells_equals_torch(saved):
    image = torch.rand(saved.run.input_shape)
    with torch.no_grad():
        expected = saved.stages(image.unsqueeze(0))
    reads = stage_inputs(saved.run.model)
    generator = torch.Generator().manual_seed(0)
    checked = set()
    for name, module in saved.run.model.stages():
        if not isinstance(module, ARITHMETIC) and not name.endswith(("add", "cat")):
            continue
        output = expected[name][0]
        for channel, row, col in _cells(tuple(output.shape), 20, generator):
            cell = cell_arithmetic(saved.run.model, image, name, channel, row, col)
            value = output[channel, row, col] if output.ndim == 3 else output[channel]
            assert cell.total == pytest.approx(float(value), abs=1e-5), (name, channel, row, col)
            if name.endswith("add"):
                assert cell.input_stages == list(reads[name])
                summed = sum(float(expected[read][0][channel, row, col]) for read in reads[name])
                assert cell.total == pytest.approx(summed, abs=1e-5)
        checked.add("Add" if name.endswith("add") else type(module).__name__)
    assert {"Conv2d", "Linear", "Add"} <= checked


def grad_cam_by_hand(net: nn.Module, image: torch.Tensor, target: int, path: str, call: int) -> torch.Tensor:
    """Grad-CAM at the ``call``-th call of ``net``'s module ``path``: its output replaced by a leaf
    tensor, the channels weighed by the mean gradient of the target's logit there. (h, w)."""
    module = dict(net.named_modules())[path]
    seen = []

    def hook(module, args, output):
        seen.append(output)
        if len(seen) == call + 1:
            leaf = output.detach().clone().requires_grad_()
            seen[-1] = leaf
            return leaf
        return None

    handle = module.register_forward_hook(hook)
    try:
        logit = net(image.unsqueeze(0))[0, target]
    finally:
        handle.remove()
    value = seen[call]
    (gradient,) = torch.autograd.grad(logit, value)
    return (gradient.mean(dim=(2, 3), keepdim=True) * value).sum(dim=1)[0].detach()


def test_grad_cam_at_the_last_spatial_stage_equals_captum(saved):
    from captum.attr import LayerGradCam

    image = torch.rand(saved.run.input_shape)
    ours = grad_cam(saved.run.model, image, target=1, stage=saved.last_spatial)
    theirs = LayerGradCam(saved.net, saved.last_module).attribute(image.unsqueeze(0), target=1)[0, 0]
    torch.testing.assert_close(ours.raw, theirs.detach(), atol=1e-5, rtol=0)
    assert grad_cam_stage(saved.run.model) == saved.default
    for stage, (path, call) in saved.calls.items():  # each call of a reused module: its own map
        expected = grad_cam_by_hand(saved.net, image, 2, path, call)
        torch.testing.assert_close(
            grad_cam(saved.run.model, image, target=2, stage=stage).raw,
            expected,
            atol=1e-5,
            rtol=0,
            msg=stage,
        )


@pytest.mark.parametrize("case", CASES)
def test_receptive_fields_are_the_pixels_with_a_nonzero_gradient(case, tmp_path):
    positive = save(case, tmp_path, positive=True)
    fields = {field.stage: field for field in receptive_fields(positive.run.model)}
    shape = positive.run.input_shape
    images = torch.rand(32 if case != RESNET18 else 1, *shape, requires_grad=True)  # see _positive
    stages = positive.stages(images)
    spatial = [name for name, value in stages.items() if value.ndim == 4 and value.shape[-1] > 1]
    assert len(spatial) >= 8
    for name in spatial:
        rows, cols = stages[name].shape[-2:]
        for row, col in {(0, 0), (rows - 1, cols - 1), (rows // 2, cols // 2), (0, cols - 1)}:
            (gradient,) = torch.autograd.grad(stages[name][:, 0, row, col].sum(), images, retain_graph=True)
            seen = gradient.abs().sum(dim=(0, 1)) > 0  # (H, W)
            top, bottom, left, right = fields[name].region(row, col, shape[1:])
            expected = torch.zeros_like(seen)
            expected[top : bottom + 1, left : right + 1] = True
            assert torch.equal(seen, expected), (name, row, col, (top, bottom, left, right))


def test_explain_looks_at_the_stage_it_is_given(saved):
    """A graph's ReLU, addition or pooling holds no convolution but has a map: Grad-CAM looks
    there when asked (``convlens explain --stage``), as at the model's default stage; a flat
    stage gets the default."""
    image = torch.rand(saved.run.input_shape)
    names = [name for name, _ in saved.run.model.stages()]
    merges = [n for n in names if n.endswith(("add", "relu_1"))]
    for stage in [*merges[:2], *merges[-2:], saved.last_spatial]:
        explained = explanation_attribution(saved.run.model, image, target=0, stage=stage)
        assert explained.stage == stage
        torch.testing.assert_close(explained.raw, grad_cam(saved.run.model, image, 0, stage).raw)
    for flat in ("fc", "avgpool" if "avgpool" in names else "gap"):  # a vector; a global pooling
        assert explanation_attribution(saved.run.model, image, stage=flat).stage == saved.default
