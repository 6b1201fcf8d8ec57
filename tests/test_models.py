"""Models: every registered model builds, runs forward and backward, and exposes its stages."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.models import (
    Normalize,
    count_parameters,
    create_model,
    flops_per_image,
    list_families,
)

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def test_registry_has_the_required_families():
    assert {"tinyvgg", "lenet5", "convnet", "resnet8", "mlp"} <= set(list_families())


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list_families())
def test_forward_backward(name, shape):
    model = create_model(name, shape, 10)
    images = torch.rand(4, *shape, requires_grad=True)
    logits = model(images)
    per_pixel = model.task == "segmentation"  # a class score per pixel, at the image's size
    assert logits.shape == ((4, 10, *shape[1:]) if per_pixel else (4, 10))
    logits.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    for parameter in model.parameters():
        assert parameter.grad is not None


@pytest.mark.parametrize("name", list_families("classification"))
def test_stages_cover_every_parameter_and_start_with_normalize(name):
    model = create_model(name, (1, 28, 28), 10)
    stages = model.stages()
    names = [stage for stage, _ in stages]
    assert names[0] == "normalize" and isinstance(stages[0][1], Normalize)
    # the last stage gives the logits: "fc" in convlens' own families, torchvision's name in its layouts
    assert isinstance(stages[-1][1], nn.Linear) and stages[-1][1].out_features == 10
    assert len(set(names)) == len(names)
    in_stages = {id(p) for _, module in stages for p in module.parameters()}
    assert in_stages == {id(p) for p in model.parameters()}
    # running the stages one after another is the model
    images = torch.rand(2, 1, 28, 28)
    model.eval()
    x = images
    for _, module in stages:
        x = module(x)
    assert torch.allclose(x, model(images))


@pytest.mark.parametrize("name", list_families())
def test_every_model_says_what_it_is_and_bounds_only_its_own_options(name):
    """The listings (`convlens models`, `convlens methods`, the Train tab) read this entry."""
    from convlens.models import MODELS, describe_model, model_options

    entry = MODELS.get(name)
    assert describe_model(name) == entry.help and entry.help.strip()
    assert [p.name for p in entry.parameters] == list(model_options(name))
    for option, (low, high) in entry.extras["limits"].items():
        assert option in model_options(name) and low <= model_options(name)[option] <= high


def test_normalization_is_inside_the_model():
    model = create_model("mlp", (1, 4, 4), 2, mean=[0.25], std=[0.5])
    normalized = model.stages()[0][1](torch.full((1, 1, 4, 4), 0.75))
    assert torch.allclose(normalized, torch.ones(1, 1, 4, 4))


def test_tinyvgg_is_cnn_explainers_layout():
    model = create_model("tinyvgg", (3, 64, 64), 10, padding=0)
    kinds = [type(m).__name__ for _, m in model.stages()][1:]
    assert kinds == ["Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d"] * 2 + ["Flatten", "Linear"]
    assert model.stages()[-1][1].in_features == 10 * 13 * 13  # 64→62→60→30→28→26→13, as in CNN Explainer


def test_parameter_and_flop_counts_by_hand():
    model = create_model("convnet", (1, 28, 28), 10)
    # conv1 1→16 3x3 + bias, conv2 16→32 3x3 + bias, fc 32*7*7→10
    expected = (9 * 16 + 16) + (16 * 32 * 9 + 32) + (32 * 7 * 7 * 10 + 10)
    assert count_parameters(model) == expected
    conv_flops = 2 * (9 * 1 * 16 * 28 * 28 + 9 * 16 * 32 * 14 * 14)
    assert flops_per_image(model, (1, 28, 28)) == conv_flops + 2 * 32 * 7 * 7 * 10


def test_convnet_stacks_convs_per_block_and_pools_after_the_last():
    model = create_model("convnet", (1, 28, 28), 10, blocks=2, convs=2, width=4)
    names = [name for name, _ in model.stages()]
    assert names == [
        "normalize",
        *("conv1", "relu1", "conv2", "relu2", "pool2"),
        *("conv3", "relu3", "conv4", "relu4", "pool4"),
        "flatten",
        "fc",
    ]
    widths = [(m.in_channels, m.out_channels) for _, m in model.stages() if isinstance(m, nn.Conv2d)]
    assert widths == [(1, 4), (4, 4), (4, 8), (8, 8)]
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert model.stages()[-1][1].in_features == 8 * 7 * 7
    with pytest.raises(ConvlensError, match="convs"):
        create_model("convnet", (1, 28, 28), 10, convs=5)


def test_convnet_can_keep_the_last_resolution_and_add_a_hidden_layer():
    model = create_model("convnet", (1, 28, 28), 10, blocks=3, batchnorm=True, pool_last=False, hidden=256)
    names = [name for name, _ in model.stages()]
    assert names[-7:] == ["conv3", "bn3", "relu3", "flatten", "fc1", "relu_fc1", "fc"]
    assert "pool3" not in names and {"pool1", "pool2"} <= set(names)
    stages = dict(model.stages())
    assert (stages["fc1"].in_features, stages["fc1"].out_features) == (64 * 7 * 7, 256)
    assert (stages["fc"].in_features, stages["fc"].out_features) == (256, 10)
    # by hand: conv1 1→16 at 28², conv2 16→32 at 14², conv3 32→64 at 7², then 3136→256→10
    convs = 2 * 9 * (1 * 16 * 28 * 28 + 16 * 32 * 14 * 14 + 32 * 64 * 7 * 7)
    assert flops_per_image(model, (1, 28, 28)) == convs + 2 * (3136 * 256 + 256 * 10)
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_convnet_stem_stride_downsamples_instead_of_the_first_pooling():
    model = create_model("convnet", (1, 28, 28), 10, blocks=3, pool_last=False, hidden=8, stem_stride=2)
    names = [name for name, _ in model.stages()]
    assert "pool1" not in names and "pool2" in names and "pool3" not in names
    stages = dict(model.stages())
    assert stages["conv1"].stride == (2, 2) and stages["conv2"].stride == (1, 1)
    assert stages["fc1"].in_features == 64 * 7 * 7  # 28 → 14 (stride) → 7 (pool2) → 7
    # by hand: conv1 at 14², conv2 at 14², conv3 at 7²; each with a bias (no BatchNorm)
    convs = 2 * 9 * (1 * 16 * 14 * 14 + 16 * 32 * 14 * 14 + 32 * 64 * 7 * 7)
    assert flops_per_image(model, (1, 28, 28)) == convs + 2 * (3136 * 8 + 8 * 10)


def test_resnet_block_stages_use_modules_for_every_relu():
    model = create_model("resnet8", (1, 28, 28), 10)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 1 + 3 * 2  # stem + two per block: hooks can see every one


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: create_model("alexnet", (1, 28, 28), 10), "unknown model 'alexnet'; choose one of"),
        (lambda: create_model("convnet", (1, 28, 28), 1), "at least 2"),
        (lambda: create_model("convnet", (1, 28, 28), 10, depth=3), "no option 'depth'"),
        (lambda: create_model("lenet5", (1, 2, 2), 10), "too small"),
        (lambda: create_model("convnet", (28, 28), 10), "C x H x W"),
    ],
)
def test_bad_model_requests(call, message):
    with pytest.raises(ConvlensError, match=message):
        call()
