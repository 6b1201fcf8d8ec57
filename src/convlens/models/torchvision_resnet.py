"""ResNet-18 and ResNet-34 with torchvision's module names and shapes (He et al., 2015).

The stem is ImageNet's (a 7x7 convolution with stride 2, then a 3x3 max-pool with stride 2), so
a 224-pixel image reaches ``layer4`` as a 7x7 map and a 32-pixel one as 1x1. Weights trained
with torchvision load key for key (``convlens.models.torchvision_layout``); the stages a learner
points at are the stem's layers, each residual block (``layer1.0`` ... ``layer4.1``) and the head.
"""

from __future__ import annotations

import torch
from torch import nn

from convlens.models._registry import Normalize, register_model
from convlens.models.torchvision_layout import TORCHVISION_FAMILIES, BlockStages


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the input (``downsample``d when the shape changes), then ReLU.

    The same ``relu`` module runs twice, as in torchvision; it is not in-place, so hooks that
    replace a ReLU's output (feature visualization) see both calls.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        residual = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(residual + identity)


def _layer(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    """One of torchvision's ``layerN``: the first block changes width and stride, the rest keep them."""
    return nn.Sequential(
        BasicBlock(in_channels, out_channels, stride),
        *(BasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)),
    )


def _resnet(in_shape, num_classes, mean, std, blocks_per_layer: tuple[int, int, int, int]) -> BlockStages:
    widths = (64, 128, 256, 512)
    stages = [
        ("normalize", Normalize(mean, std)),
        ("conv1", nn.Conv2d(in_shape[0], 64, 7, stride=2, padding=3, bias=False)),
        ("bn1", nn.BatchNorm2d(64)),
        ("relu", nn.ReLU()),
        ("maxpool", nn.MaxPool2d(3, stride=2, padding=1)),
    ]
    channels = 64
    for index, (width, blocks) in enumerate(zip(widths, blocks_per_layer, strict=True)):
        stages.append((f"layer{index + 1}", _layer(channels, width, blocks, 1 if index == 0 else 2)))
        channels = width
    stages += [
        ("avgpool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),  # torchvision flattens in forward(); a stage here, without weights
        ("fc", nn.Linear(channels, num_classes)),
    ]
    model = BlockStages(stages, in_shape, num_classes, containers=("layer1", "layer2", "layer3", "layer4"))
    _initialize(model)
    return model


def _initialize(model: nn.Module) -> None:
    """torchvision's initialization (He normal, fan-out, for every convolution), so training
    from scratch starts where a torchvision ResNet does."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


@register_model("resnet18")
def resnet18(in_shape, num_classes, mean, std) -> BlockStages:
    """ResNet-18 with torchvision's layer names: a torchvision resnet18 state_dict loads key for key (11 M weights)."""
    return _resnet(in_shape, num_classes, mean, std, (2, 2, 2, 2))


@register_model("resnet34")
def resnet34(in_shape, num_classes, mean, std) -> BlockStages:
    """ResNet-34 with torchvision's layer names: a torchvision resnet34 state_dict loads key for key (21 M weights)."""
    return _resnet(in_shape, num_classes, mean, std, (3, 4, 6, 3))


TORCHVISION_FAMILIES.update(resnet18="fc", resnet34="fc")
