"""MobileNetV2 with torchvision's module names and shapes (Sandler et al., 2018).

Each block expands its channels with a 1x1 convolution, filters every channel on its own with a
3x3 depthwise convolution (``groups`` = channels: no channel mixing there), and projects back
with a linear 1x1 convolution; a block that keeps its shape adds its input back. Weights trained
with torchvision load key for key (``convlens.models.torchvision_layout``); the stages a learner
points at are ``features.0`` ... ``features.18``, the pooling and the classifier's layers.
"""

from __future__ import annotations

import torch
from torch import nn

from convlens.models._registry import Normalize, register_model
from convlens.models.torchvision_layout import TORCHVISION_FAMILIES, BlockStages

# torchvision's table, one row per group of blocks: (expansion t, output channels c, blocks n,
# stride of the first block s), at width multiplier 1.0 (every width already a multiple of 8)
INVERTED_RESIDUALS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS, LAST_CHANNELS = 32, 1280


def conv_bn_relu6(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, groups: int = 1):
    """Convolution (no bias: BatchNorm follows), BatchNorm, ReLU6: keys ``.0``, ``.1`` as torchvision's."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel,
            stride=stride,
            padding=(kernel - 1) // 2,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(),  # not in-place: hooks that read or replace activations see the values
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) - depthwise (3x3) - project (1x1, linear), plus the input when the shape stays."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.adds_input = stride == 1 and in_channels == out_channels
        layers = [conv_bn_relu6(in_channels, hidden, kernel=1)] if expansion != 1 else []
        layers += [
            conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, out_channels, 1, bias=False),  # projection: no ReLU after it
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.adds_input else self.conv(x)


@register_model("mobilenet_v2")
def mobilenet_v2(in_shape, num_classes, mean, std) -> BlockStages:
    """MobileNetV2 with torchvision's layer names: a torchvision mobilenet_v2 state_dict loads key for key (2.2 M weights)."""
    features: list[nn.Module] = [conv_bn_relu6(in_shape[0], STEM_CHANNELS, stride=2)]
    channels = STEM_CHANNELS
    for expansion, out_channels, blocks, stride in INVERTED_RESIDUALS:
        for index in range(blocks):
            features.append(InvertedResidual(channels, out_channels, stride if index == 0 else 1, expansion))
            channels = out_channels
    features.append(conv_bn_relu6(channels, LAST_CHANNELS, kernel=1))
    stages = [
        ("normalize", Normalize(mean, std)),
        ("features", nn.Sequential(*features)),
        ("pool", nn.AdaptiveAvgPool2d(1)),  # torchvision pools and flattens in forward(), without modules
        ("flatten", nn.Flatten()),
        ("classifier", nn.Sequential(nn.Dropout(0.2), nn.Linear(LAST_CHANNELS, num_classes))),
    ]
    model = BlockStages(stages, in_shape, num_classes, containers=("features", "classifier"))
    _initialize(model)
    return model


def _initialize(model: nn.Module) -> None:
    """torchvision's initialization, so training from scratch starts where a torchvision MobileNetV2 does."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


TORCHVISION_FAMILIES["mobilenet_v2"] = "classifier.1"
