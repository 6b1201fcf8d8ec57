"""Families with torchvision's layout: its checkpoints load key for key, and the forward is the textbook one.

The expected names and shapes are written out here from torchvision's definitions (resnet.py,
mobilenetv2.py), not read from convlens, and the forward is checked against a functional
ResNet-18 written from the paper's recipe over a plain dict of tensors.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convlens.errors import ConvlensError
from convlens.models import create_model
from convlens.models.torchvision_layout import load_torchvision_weights, own_keys

# torchvision resnet18 for 3 channels and 1000 classes: (module path, kind, shape of its weight)
RESNET18_LAYERS = """
conv1 conv 64 3 7 7
bn1 bn 64
layer1.0.conv1 conv 64 64 3 3
layer1.0.bn1 bn 64
layer1.0.conv2 conv 64 64 3 3
layer1.0.bn2 bn 64
layer1.1.conv1 conv 64 64 3 3
layer1.1.bn1 bn 64
layer1.1.conv2 conv 64 64 3 3
layer1.1.bn2 bn 64
layer2.0.conv1 conv 128 64 3 3
layer2.0.bn1 bn 128
layer2.0.conv2 conv 128 128 3 3
layer2.0.bn2 bn 128
layer2.0.downsample.0 conv 128 64 1 1
layer2.0.downsample.1 bn 128
layer2.1.conv1 conv 128 128 3 3
layer2.1.bn1 bn 128
layer2.1.conv2 conv 128 128 3 3
layer2.1.bn2 bn 128
layer3.0.conv1 conv 256 128 3 3
layer3.0.bn1 bn 256
layer3.0.conv2 conv 256 256 3 3
layer3.0.bn2 bn 256
layer3.0.downsample.0 conv 256 128 1 1
layer3.0.downsample.1 bn 256
layer3.1.conv1 conv 256 256 3 3
layer3.1.bn1 bn 256
layer3.1.conv2 conv 256 256 3 3
layer3.1.bn2 bn 256
layer4.0.conv1 conv 512 256 3 3
layer4.0.bn1 bn 512
layer4.0.conv2 conv 512 512 3 3
layer4.0.bn2 bn 512
layer4.0.downsample.0 conv 512 256 1 1
layer4.0.downsample.1 bn 512
layer4.1.conv1 conv 512 512 3 3
layer4.1.bn1 bn 512
layer4.1.conv2 conv 512 512 3 3
layer4.1.bn2 bn 512
fc linear 1000 512
"""


def torchvision_resnet18_shapes(in_channels: int = 3, classes: int = 1000) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in RESNET18_LAYERS.strip().splitlines():
        path, kind, *sizes = line.split()
        size = [int(s) for s in sizes]
        if path == "conv1":
            size[1] = in_channels
        if kind == "conv":
            shapes[f"{path}.weight"] = tuple(size)
        elif kind == "bn":
            for key in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{path}.{key}"] = tuple(size)
            shapes[f"{path}.num_batches_tracked"] = ()
        else:
            shapes[f"{path}.weight"], shapes[f"{path}.bias"] = (classes, size[1]), (classes,)
    return shapes


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights as a trained checkpoint has them: BatchNorm statistics far from 0 and 1."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif len(shape) == 4:  # a kernel, scaled so activations neither vanish nor explode
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=generator) * (2 / fan_in) ** 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.5
    return state


def test_resnet18_has_torchvisions_keys_and_shapes():
    model = create_model("resnet18", (3, 32, 32), 1000)
    expected = torchvision_resnet18_shapes()
    assert len(expected) == 122  # 62 learned tensors + 3 statistics for each of 20 BatchNorms
    assert {k: tuple(v.shape) for k, v in own_keys(model).items()} == expected


def test_a_torchvision_resnet18_state_dict_loads_key_for_key():
    model = create_model("resnet18", (3, 32, 32), 3)
    state = random_state_dict(torchvision_resnet18_shapes(classes=3))
    report = load_torchvision_weights(model, state)
    assert report.complete and sorted(report.loaded) == sorted(state)
    for key, tensor in own_keys(model).items():
        assert torch.equal(tensor, state[key].to(tensor.dtype)), key


def test_in_channels_change_only_the_first_kernel():
    model = create_model("resnet18", (1, 32, 32), 3)
    assert {k: tuple(v.shape) for k, v in own_keys(model).items()} == torchvision_resnet18_shapes(1, 3)


def _bn(x, state, path):
    return F.batch_norm(
        x, state[f"{path}.running_mean"], state[f"{path}.running_var"],
        state[f"{path}.weight"], state[f"{path}.bias"], training=False, eps=1e-5,
    )  # fmt: skip


def reference_resnet18(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """ResNet-18 written out with torch.nn.functional from a dict of tensors (He et al. 2015, option B)."""
    x = F.relu(_bn(F.conv2d(x, state["conv1.weight"], stride=2, padding=3), state, "bn1"))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    for layer in range(1, 5):
        for block in range(2):
            path, stride = f"layer{layer}.{block}", 2 if layer > 1 and block == 0 else 1
            out = F.relu(
                _bn(
                    F.conv2d(x, state[f"{path}.conv1.weight"], stride=stride, padding=1), state, f"{path}.bn1"
                )
            )
            out = _bn(F.conv2d(out, state[f"{path}.conv2.weight"], padding=1), state, f"{path}.bn2")
            if f"{path}.downsample.0.weight" in state:
                x = _bn(
                    F.conv2d(x, state[f"{path}.downsample.0.weight"], stride=stride),
                    state,
                    f"{path}.downsample.1",
                )
            x = F.relu(out + x)
    x = x.mean(dim=(2, 3))  # (N, 512) global average pool
    return F.linear(x, state["fc.weight"], state["fc.bias"])


def test_forward_equals_the_functional_reference_with_normalization_first():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    model = create_model("resnet18", (3, 32, 32), 3, mean=mean, std=std).eval()
    state = random_state_dict(torchvision_resnet18_shapes(classes=3), seed=1)
    load_torchvision_weights(model, state)
    pixels = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))  # (N, C, H, W) in [0, 1]
    normalized = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference_resnet18(state, normalized)
        torch.testing.assert_close(model(pixels), expected, atol=1e-4, rtol=1e-4)
        assert expected.std() > 0.1  # the reference is not a constant that anything would match


def test_resnet34_and_mobilenet_v2_have_torchvisions_layout():
    resnet34 = own_keys(create_model("resnet34", (3, 32, 32), 1000))
    assert len(resnet34) == 218  # 36 convolutions, 36 BatchNorms (5 tensors each), fc
    assert tuple(resnet34["layer3.5.conv2.weight"].shape) == (256, 256, 3, 3)
    assert tuple(resnet34["layer4.2.bn2.running_var"].shape) == (512,)
    mobilenet = {
        k: tuple(v.shape) for k, v in own_keys(create_model("mobilenet_v2", (3, 32, 32), 1000)).items()
    }
    assert len(mobilenet) == 314  # 52 convolutions, 52 BatchNorms (5 tensors each), classifier.1
    assert {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),  # t=1: no expansion, the depthwise comes first
        "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.2.conv.1.0.weight": (96, 1, 3, 3),
        "features.2.conv.2.weight": (24, 96, 1, 1),
        "features.2.conv.3.running_mean": (24,),
        "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1),
        "classifier.1.weight": (1000, 1280),
    }.items() <= mobilenet.items()


def test_mobilenet_block_adds_its_input_only_when_the_shape_stays():
    model = create_model("mobilenet_v2", (3, 32, 32), 3).eval()
    stages = dict(model.stages())
    x = torch.rand(1, 24, 8, 8)
    block = stages["features.3"]  # 24 → 24, stride 1: residual
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + block.conv(x))
        assert not stages["features.2"].adds_input  # 16 → 24, stride 2


def test_keys_that_do_not_fit_are_named_and_nothing_is_copied():
    model = create_model("resnet18", (3, 32, 32), 3)
    before = {k: v.clone() for k, v in own_keys(model).items()}
    state = random_state_dict(torchvision_resnet18_shapes(classes=1000))  # ImageNet's head
    del state["layer2.0.downsample.1.running_var"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(ConvlensError, match="state_dict does not fit resnet18") as caught:
        load_torchvision_weights(model, state)
    message = str(caught.value)
    assert "fc.weight is 1000x512, expected 3x512" in message
    assert "1 missing (layer2.0.downsample.1.running_var)" in message
    assert "1 unexpected (layer5.0.conv1.weight)" in message
    assert all(torch.equal(before[k], v) for k, v in own_keys(model).items())


def test_not_strict_loads_what_fits_and_reports_the_rest():
    model = create_model("resnet18", (3, 32, 32), 3)
    state = random_state_dict(torchvision_resnet18_shapes(classes=1000))
    report = load_torchvision_weights(model, state, strict=False)
    assert [key for key, *_ in report.mismatched] == ["fc.weight", "fc.bias"]
    assert len(report.loaded) == 120 and not report.missing and not report.unexpected


def test_only_torchvision_layouts_take_torchvision_keys():
    with pytest.raises(ConvlensError, match="model: torchvision's key names fit only"):
        load_torchvision_weights(create_model("resnet8", (3, 32, 32), 3), {})
    with pytest.raises(ConvlensError, match="'fc.bias' holds a list"):
        load_torchvision_weights(create_model("resnet18", (3, 32, 32), 3), {"fc.bias": [0.0]})
