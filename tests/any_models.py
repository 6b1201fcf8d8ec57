"""Models built in the tests for the any-model checks, with each stage's output written out by hand.

A hand-written model with a functional ReLU, an in-place ReLU module called twice, a residual
addition, a concatenation and ``torch.flatten``; and a small ResNet in torchvision's layout (its
block calls one in-place ReLU twice, adds with ``+=``, and its head flattens with
``x.view(x.size(0), -1)``). ``MODELS`` maps a name to (build, reference): ``reference(net, x)``
is the forward written out, out of place, stage by stage, under the stage names convlens gives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Handwritten(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)  # called twice
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.branch = nn.Conv2d(4, 2, 1)
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.conv2(x))
        y = self.relu(y + x)
        z = torch.cat([y, self.branch(y)], dim=1)  # (N, 6, H, W)
        z = self.gap(self.pool(z))
        return self.fc(torch.flatten(z, 1))


def handwritten_stages(net: Handwritten, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The forward written out, out of place: what each stage must output."""
    s = {"conv1": net.conv1(x)}
    s["bn1"] = net.bn1(s["conv1"])
    s["relu"] = torch.relu(s["bn1"])
    s["conv2"] = net.conv2(s["relu"])
    s["relu_1"] = torch.relu(s["conv2"])  # the functional ReLU
    s["add"] = s["relu_1"] + s["relu"]
    s["relu_2"] = torch.relu(s["add"])  # the ReLU module's second call
    s["branch"] = net.branch(s["relu_2"])
    s["cat"] = torch.cat([s["relu_2"], s["branch"]], dim=1)
    s["pool"] = net.pool(s["cat"])
    s["gap"] = net.gap(s["pool"])
    s["flatten"] = s["gap"].reshape(len(x), -1)
    s["fc"] = net.fc(s["flatten"])
    return s


class BasicBlock(nn.Module):
    """torchvision's layout: one in-place ReLU module called twice, ``out += identity``."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(4, 4, 1))
        self.layer2 = nn.Sequential(BasicBlock(4, 8, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x = self.avgpool(x)
        return self.fc(x.view(x.size(0), -1))


def _block(block: BasicBlock, x: torch.Tensor, path: str, s: dict) -> torch.Tensor:
    s[f"{path}.conv1"] = block.conv1(x)
    s[f"{path}.bn1"] = block.bn1(s[f"{path}.conv1"])
    s[f"{path}.relu"] = torch.relu(s[f"{path}.bn1"])
    s[f"{path}.conv2"] = block.conv2(s[f"{path}.relu"])
    s[f"{path}.bn2"] = block.bn2(s[f"{path}.conv2"])
    identity = x
    if block.downsample is not None:
        s[f"{path}.downsample.0"] = block.downsample[0](x)
        identity = s[f"{path}.downsample.1"] = block.downsample[1](s[f"{path}.downsample.0"])
    s[f"{path}.add"] = s[f"{path}.bn2"] + identity
    s[f"{path}.relu_1"] = torch.relu(s[f"{path}.add"])
    return s[f"{path}.relu_1"]


def resnet_stages(net: TinyResNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    s = {"conv1": net.conv1(x)}
    s["bn1"] = net.bn1(s["conv1"])
    s["relu"] = torch.relu(s["bn1"])
    s["maxpool"] = net.maxpool(s["relu"])
    x = _block(net.layer2[0], _block(net.layer1[0], s["maxpool"], "layer1.0", s), "layer2.0", s)
    s["avgpool"] = net.avgpool(x)
    s["view"] = s["avgpool"].reshape(len(x), -1)
    s["fc"] = net.fc(s["view"])
    return s


def trained(net: nn.Module, seed: int) -> nn.Module:
    """Weights and BatchNorm statistics that are not the identity, in eval mode."""
    torch.manual_seed(seed)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return net.eval()


SHAPE = (3, 12, 12)
MODELS = {
    "handwritten": (lambda: trained(Handwritten(), 0), handwritten_stages),
    "resnet": (lambda: trained(TinyResNet(), 1), resnet_stages),
}
