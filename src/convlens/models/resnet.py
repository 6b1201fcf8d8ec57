"""A small residual network (ResNet-8: a stem conv, three basic blocks, global pooling)."""

from __future__ import annotations

import torch
from torch import nn

from convlens.models._registry import Normalize, StagedModel, register_model


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the input (projected when the shape changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu2 = nn.ReLU()  # a module, not F.relu, so hooks see it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(residual + self.shortcut(x))


@register_model("resnet8", limits={"width": (1, 1024)})
def resnet8(in_shape, num_classes, mean, std, width: int = 16) -> StagedModel:
    """Small ResNet: stem conv + three residual blocks (width, 2x, 4x; stride 2 twice) + global average pool."""
    stages = [
        ("normalize", Normalize(mean, std)),
        ("conv1", nn.Conv2d(in_shape[0], width, 3, padding=1, bias=False)),
        ("bn1", nn.BatchNorm2d(width)),
        ("relu1", nn.ReLU()),
        ("block1", BasicBlock(width, width, 1)),
        ("block2", BasicBlock(width, 2 * width, 2)),
        ("block3", BasicBlock(2 * width, 4 * width, 2)),
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(4 * width, num_classes)),
    ]
    return StagedModel(stages, in_shape, num_classes)
