"""The neuron panel's numbers, each against a computation written out here with torch.

A tiny chain (conv → ReLU → max-pool → conv → ReLU → linear) whose forward is written out by hand
with ``torch.nn.functional``, so kernels, maps, patches, ablation and Grad-CAM's share are
checked against numbers convlens did not compute; a graph model (tests/any_models.py) for
kernels through BatchNorm and merges.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from any_models import Handwritten
from convlens.errors import ConvlensError
from convlens.inspect import open_model
from convlens.inspect.channel_ranking import grad_cam_ranking
from convlens.inspect.neuron_effects import channel_ablations, grad_cam_share
from convlens.inspect.neurons import feeders, neuron, neuron_kernel, neuron_stages
from convlens.models._registry import Normalize, StagedModel

DEAD = 2  # conv2's channel with a bias no 8x8 image can overcome


@pytest.fixture(scope="module")
def tiny() -> StagedModel:
    torch.manual_seed(0)
    stages = [
        ("normalize", Normalize([0.0], [1.0])),
        ("conv1", nn.Conv2d(1, 3, 3, padding=1)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(3, 4, 3)),
        ("relu2", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(4 * 2 * 2, 3)),
    ]
    model = StagedModel(stages, (1, 8, 8), 3).eval()
    with torch.no_grad():
        dict(model.stages())["conv2"].bias[DEAD] = -100.0
    return model


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(12, 1, 8, 8, generator=generator), torch.randint(0, 3, (12,), generator=generator)


def by_hand(model, x: torch.Tensor, zero: tuple[str, int] | None = None) -> dict[str, torch.Tensor]:
    """The tiny chain's forward written out, each stage's output by name; ``zero`` sets one
    channel of one stage to 0 on the way."""
    layer = dict(model.stages())
    outputs = {}

    def kept(name: str, value: torch.Tensor) -> torch.Tensor:
        if zero is not None and zero[0] == name:
            value = value.clone()
            value[:, zero[1]] = 0
        outputs[name] = value
        return value

    x = kept("conv1", F.conv2d(x, layer["conv1"].weight, layer["conv1"].bias, padding=1))
    x = kept("relu1", x.clamp_min(0))
    x = kept("pool1", F.max_pool2d(x, 2))
    x = kept("conv2", F.conv2d(x, layer["conv2"].weight, layer["conv2"].bias))
    x = kept("relu2", x.clamp_min(0))
    outputs["logits"] = x.reshape(len(x), -1) @ layer["fc"].weight.T + layer["fc"].bias
    return outputs


def conv2_region(row: int, col: int) -> tuple[int, int, int, int]:
    """Input pixels conv2's cell sees: its 3x3 window over pool1, each pool1 cell 2x2 of conv1's,
    each of those conv1's 3x3 window with one pixel of padding (clipped to the 8x8 image)."""
    return max(2 * row - 1, 0), min(2 * row + 6, 7), max(2 * col - 1, 0), min(2 * col + 6, 7)


def test_kernel_of_a_relu_stage_is_the_convolution_feeding_it(tiny, images):
    found = neuron(tiny, "relu1", 1, images[0][0])
    conv1 = dict(tiny.stages())["conv1"]
    assert found.kind == "relu" and found.channels == 3 and found.map_size == (8, 8)
    assert found.kernel.stage == "conv1" and found.kernel.input_stage == "normalize"
    torch.testing.assert_close(found.kernel.weight, conv1.weight[1].detach())
    assert found.kernel.bias == pytest.approx(float(conv1.bias[1].detach()))
    pooled = neuron(tiny, "pool1", 1, images[0][0])
    assert pooled.kernel.stage == "conv1" and pooled.kind == "max_pool"


def test_feeders_are_the_input_channels_with_most_kernel_weight(tiny, images):
    found = neuron(tiny, "conv2", 0, images[0][0])
    weight = dict(tiny.stages())["conv2"].weight[0].detach().double()  # (3, 3, 3)
    strength = [float(weight[i].abs().sum()) for i in range(3)]
    order = sorted(range(3), key=lambda i: -strength[i])
    assert [(f.stage, f.channel) for f in found.feeders] == [("pool1", i) for i in order]
    for feeder in found.feeders:
        assert feeder.strength == pytest.approx(strength[feeder.channel])
        assert feeder.weight_sum == pytest.approx(float(weight[feeder.channel].sum()))


def test_feature_map_strongest_cell_and_its_arithmetic(tiny, images):
    image = images[0][3]
    found = neuron(tiny, "conv2", 1, image)
    expected = by_hand(tiny, image.unsqueeze(0))["conv2"][0, 1].detach()  # (2, 2)
    torch.testing.assert_close(found.feature_map, expected)
    row, col = divmod(int(expected.argmax()), 2)
    assert found.strongest == (row, col)
    assert found.cell.total == pytest.approx(float(expected[row, col]), abs=1e-5)
    assert found.receptive_field == conv2_region(row, col)


def test_top_and_bottom_patches_and_their_crops(tiny, images):
    pictures, labels = images
    found = neuron(tiny, "relu2", 3, pictures[0], pictures, labels, k=4)
    maps = by_hand(tiny, pictures)["relu2"][:, 3].detach()  # (N, 2, 2)
    peaks = maps.flatten(1).amax(dim=1)
    assert [p.index for p in found.top_patches] == peaks.topk(4).indices.tolist()
    assert [p.index for p in found.bottom_patches] == peaks.topk(4, largest=False).indices.tolist()
    for patch in found.top_patches:
        assert patch.value == pytest.approx(float(peaks[patch.index]))
        row, col = divmod(int(maps[patch.index].flatten().argmax()), 2)
        assert (patch.row, patch.col) == (row, col)
        top, bottom, left, right = conv2_region(row, col)
        assert patch.region == (top, bottom, left, right)
        torch.testing.assert_close(patch.pixels, pictures[patch.index, :, top : bottom + 1, left : right + 1])
    assert found.image_count == 12


def test_dead_only_where_the_stage_is_rectified(tiny, images):
    pictures, labels = images
    dead = neuron(tiny, "relu2", DEAD, pictures[0], pictures, labels)
    assert dead.dead is True
    assert dead.dead_label == "dead: never above 0 on the 12 test images"
    assert neuron(tiny, "conv2", DEAD, pictures[0], pictures, labels).dead is None  # not rectified
    live = int(by_hand(tiny, pictures)["relu2"].amax(dim=(0, 2, 3)).argmax())
    assert neuron(tiny, "relu2", live, pictures[0], pictures, labels).dead is False
    assert neuron(tiny, "pool1", 0, pictures[0]).dead is None  # no test images: unknown


def test_ablation_against_the_forward_with_the_channel_zeroed(tiny, images):
    pictures, labels = images
    found = neuron(tiny, "relu1", 2, pictures[5], pictures, labels)
    before = torch.softmax(by_hand(tiny, pictures)["logits"], dim=1).detach()
    after = torch.softmax(by_hand(tiny, pictures, zero=("relu1", 2))["logits"], dim=1).detach()
    target = int(before[5].argmax())
    assert found.ablation.target == target
    assert found.ablation.before == pytest.approx(float(before[5, target]), abs=1e-6)
    assert found.ablation.after == pytest.approx(float(after[5, target]), abs=1e-6)
    assert found.ablation.predicted_after == int(after[5].argmax())
    predicted = before.argmax(dim=1)
    rows = torch.arange(12)
    sample = found.sample_ablation
    assert sample.images == 12
    assert sample.mean_change == pytest.approx(
        float((after[rows, predicted] - before[rows, predicted]).mean()), abs=1e-6
    )
    assert sample.accuracy_before == pytest.approx(float((predicted == labels).float().mean()))
    assert sample.accuracy_after == pytest.approx(float((after.argmax(dim=1) == labels).float().mean()))
    assert sample.changed_predictions == int((after.argmax(dim=1) != predicted).sum())
    every = channel_ablations(tiny, "relu1", [0, 2], pictures, labels)
    assert every[1] == sample


def test_grad_cam_share_against_the_gradient_by_hand_and_captum(tiny, images):
    from captum.attr import LayerGradCam

    image = images[0][7]
    outputs = by_hand(tiny, image.unsqueeze(0))
    feature_map = outputs["relu2"]
    target = int(outputs["logits"][0].argmax())
    (gradient,) = torch.autograd.grad(outputs["logits"][0, target], feature_map)
    weights = gradient[0].mean(dim=(1, 2))  # (4,)
    contributions = weights * feature_map[0].detach().mean(dim=(1, 2))
    shares = [grad_cam_share(tiny, "relu2", c, image) for c in range(4)]
    for channel, share in enumerate(shares):
        assert share.target == target
        assert share.weight == pytest.approx(float(weights[channel]), abs=1e-6)
        assert share.contribution == pytest.approx(float(contributions[channel]), abs=1e-6)
        assert share.rank == 1 + int((contributions > contributions[channel]).sum())
    # Grad-CAM's map before its ReLU is the sum of the weighted maps: its mean is the contributions' sum
    cam = LayerGradCam(tiny, dict(tiny.stages())["relu2"]).attribute(
        image.unsqueeze(0), target=target, relu_attributions=False
    )
    assert float(cam.detach().mean()) == pytest.approx(sum(s.contribution for s in shares), abs=1e-6)


def test_grad_cam_ranking_orders_the_stage_by_the_contributions_by_hand(tiny, images):
    from captum.attr import LayerGradCam

    image = images[0][7]
    outputs = by_hand(tiny, image.unsqueeze(0))
    target = 1 - int(outputs["logits"][0].argmax()) % 2  # a class other than the predicted one, too
    for explained in (None, target):
        chosen = int(outputs["logits"][0].argmax()) if explained is None else explained
        (gradient,) = torch.autograd.grad(outputs["logits"][0, chosen], outputs["relu2"], retain_graph=True)
        weights = gradient[0].mean(dim=(1, 2))  # (4,)
        contributions = weights * outputs["relu2"][0].detach().mean(dim=(1, 2))
        ranking = grad_cam_ranking(tiny, "relu2", image, explained)
        assert ranking.target == chosen and ranking.stage == "relu2"
        order = [line.channel for line in ranking.channels]
        assert sorted(order) == [0, 1, 2, 3]
        ranked = contributions.detach()[order]  # the contributions by hand, in the ranking's order
        assert bool((ranked[:-1] >= ranked[1:] - 1e-7).all())  # largest first (ties: either order)
        for line in ranking.channels:
            assert line.weight == pytest.approx(float(weights[line.channel]), abs=1e-6)
            assert line.contribution == pytest.approx(float(contributions[line.channel]), abs=1e-6)
        cam = LayerGradCam(tiny, dict(tiny.stages())["relu2"]).attribute(
            image.unsqueeze(0), target=chosen, relu_attributions=False
        )
        assert ranking.map_mean == pytest.approx(float(cam.detach().mean()), abs=1e-6)
        if ranking.map_mean > 0:
            assert sum(line.share for line in ranking.channels) == pytest.approx(1.0)
            top = ranking.channels[0]
            assert top.share == pytest.approx(float(contributions.max() / contributions.sum()), abs=1e-5)
        else:
            assert all(line.share is None for line in ranking.channels)
    first = grad_cam_ranking(tiny, "relu2", image).channels[0].channel
    assert grad_cam_share(tiny, "relu2", first, image).rank == 1
    with pytest.raises(ConvlensError, match=r"^stage 'fc' has no channels to visualize") as refused:
        grad_cam_ranking(tiny, "fc", image)
    assert refused.value.parameter == "stage"


def test_the_regularised_visualization_is_measured_on_the_picture_it_returns(tiny, images):
    pictures, labels = images
    assert neuron(tiny, "relu2", 1, pictures[0], pictures, labels).visualization is None  # not asked
    found = neuron(
        tiny, "relu2", 1, pictures[0], pictures, labels, visualization=True, visualization_steps=16
    )
    picture = found.visualization
    assert picture.steps == 16 and picture.image.shape == (1, 8, 8)
    assert float(picture.image.min()) >= 0 and float(picture.image.max()) <= 1
    reached = by_hand(tiny, picture.image.unsqueeze(0))["relu2"][0, 1].detach().mean()
    assert picture.activation == pytest.approx(float(reached), abs=1e-6)
    means = by_hand(tiny, pictures)["relu2"][:, 1].mean(dim=(1, 2)).detach()  # (N,) each test image's
    assert picture.best_image_index == int(means.argmax())
    assert picture.best_image_activation == pytest.approx(float(means.max()), abs=1e-6)
    with pytest.raises(
        ConvlensError, match=r"^visualization_steps must be a whole number >= 1, got 0$"
    ) as refused:
        neuron(tiny, "relu2", 1, pictures[0], visualization=True, visualization_steps=0)
    assert refused.value.parameter == "visualization_steps"


def test_graph_model_kernels_through_batchnorm_and_none_after_a_merge():
    torch.manual_seed(0)
    model = open_model(Handwritten().eval(), (3, 8, 8))
    relu = neuron_kernel(model, "relu", 1)  # conv1 → bn1 → relu
    assert relu.stage == "conv1" and relu.input_stage == "input"
    after_conv2 = neuron_kernel(model, "relu_1", 0)
    assert after_conv2.stage == "conv2" and after_conv2.input_stage == "relu"
    assert {f.stage for f in feeders(after_conv2)} == {"relu"}
    assert neuron_kernel(model, "relu_2", 0) is None  # reads an addition of two paths
    assert neuron_kernel(model, "pool", 0) is None  # a concatenation comes first
    assert neuron_kernel(model, "branch", 1).input_stage == "relu_2"
    found = neuron(model, "relu_2", 0, torch.rand(3, 8, 8))  # the whole panel on a graph
    assert found.kernel is None and found.feeders == [] and found.grad_cam.channels == 4


def test_hooks_are_removed(tiny, images):
    pictures, labels = images
    neuron(tiny, "relu2", 0, pictures[0], pictures, labels)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in tiny.modules())


def test_the_stages_with_a_panel(tiny):
    assert neuron_stages(tiny) == ["conv1", "relu1", "pool1", "conv2", "relu2"]


@pytest.mark.parametrize(
    ("stage", "channel", "parameter", "message"),
    [
        (
            "conv9",
            0,
            "stage",
            r"^unknown stage 'conv9'; this model's stages are: normalize, conv1, .*softmax$",
        ),
        (
            "fc",
            0,
            "stage",
            r"^stage 'fc' has no channels to visualize; choose one of: conv1, relu1, pool1, conv2, relu2$",
        ),
        ("normalize", 0, "stage", r"^stage 'normalize' has no channels to visualize"),
        ("softmax", 0, "stage", r"^unknown stage 'softmax'"),
        ("conv2", 4, "channel", r"^channel must be 0\.\.3 for stage 'conv2', got 4$"),
        ("conv2", -1, "channel", r"^channel must be 0\.\.3"),
        ("conv2", True, "channel", r"^channel must be 0\.\.3 for stage 'conv2', got True$"),
        (None, 0, "stage", r"^stage must be a stage name, got NoneType$"),
    ],
)
def test_bad_stage_or_channel_names_the_parameter_and_valid_values(
    tiny, images, stage, channel, parameter, message
):
    with pytest.raises(ConvlensError, match=message) as refused:
        neuron(tiny, stage, channel, images[0][0])
    assert refused.value.parameter == parameter


def test_bad_test_images_and_k(tiny, images):
    with pytest.raises(ConvlensError, match=r"^test_images: expected N x 1x8x8, got \(12, 8, 8\)") as refused:
        neuron(tiny, "conv1", 0, images[0][0], images[0][:, 0])
    assert refused.value.parameter == "test_images"
    with pytest.raises(ConvlensError, match=r"^k must be a whole number >= 0, got -1"):
        neuron(tiny, "conv1", 0, images[0][0], images[0], k=-1)
