"""Tricks of the fastest small-CNN training records, as variants of convlens's default convnet.

airbench (Keller Jordan's CIFAR-10 records) and the hlb/"train_mnist_fast" MNIST scripts reach
their accuracy in very few epochs with a handful of changes to an ordinary convnet. This module
registers the ``trick`` model family for ``bench/recipe_sweep.py``: exactly ``convnet`` with the
same options (so the defaults can be named option for option), plus one switch per trick, so
each can be measured alone against the defaults:

- ``whiten``: the first convolution's filters are the principal components of the training
  set's 3x3 patches, scaled to unit variance (ZCA/PCA whitening) and their negatives, computed
  once at construction and frozen (only its bias trains). Same shape, same FLOPs.
- ``dirac``: every 3x3 convolution starts as the identity on its first ``in_channels`` filters
  (``nn.init.dirac_``), the rest keep PyTorch's initialisation.
- ``first_block``: ``pool-relu`` pools the first convolution's output before its BatchNorm
  (if any) and ReLU, which then run on a quarter of the pixels; ``pool-bn-relu`` does the same
  and adds a BatchNorm there when the model has none.

Test-time augmentation changes no training, so it is measured on every run's final model
(``view_averaged_accuracy``) instead of as a switch: the logits averaged over the image and its
mirror (``flip``), or over the image and its four one-pixel shifts (``shift``).

``linear_decay`` switches ``fit``'s OneCycle schedule to linear annealing (airbench's
triangular schedule) for the rest of the process: the sweep calls it in a run's own process.

``python bench/record_tricks.py`` times one training step of the defaults against pooling first,
in CPU seconds (interleaved, best of 5), for the two data sets' default models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convlens.data import to_float
from convlens.models import register_model
from convlens.models._registry import StagedModel
from convlens.models.convnets import convnet

WHITENING_EPS = 5e-4  # airbench's: keeps the smallest components from being scaled without bound
WHITENING_IMAGES = 5000  # patches from this many training images are plenty for a 9 x 9 covariance
_training_images: torch.Tensor | None = None


def use_training_images(images: torch.Tensor) -> None:
    """The training split ``whiten`` computes its patch statistics from (set before ``fit``)."""
    global _training_images
    _training_images = images


def linear_decay() -> None:
    """Make every later OneCycleLR anneal linearly (``fit`` looks the class up when it runs)."""
    base = torch.optim.lr_scheduler.OneCycleLR
    if getattr(base, "linear", False):
        return

    class LinearOneCycle(base):
        linear = True

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "anneal_strategy": "linear"})

    torch.optim.lr_scheduler.OneCycleLR = LinearOneCycle


def views(pixels: torch.Tensor, kind: str) -> list[torch.Tensor]:
    """The views test-time augmentation averages: ``flip`` (the image and its mirror) or
    ``shift`` (the image and its four one-pixel shifts, zero-filled: these data sets' background)."""
    if kind == "flip":
        return [pixels, pixels.flip(-1)]
    padded = F.pad(pixels, (1, 1, 1, 1))
    height, width = pixels.shape[-2:]
    return [pixels] + [
        padded[..., 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
    ]


@torch.no_grad()
def view_averaged_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, kind: str, batch: int = 500
) -> float:
    """Test accuracy when the logits are the mean over ``views(kind)`` of each image."""
    model.eval()
    correct = 0
    for first in range(0, images.shape[0], batch):
        pixels = to_float(images[first : first + batch])
        logits = torch.stack([model(view) for view in views(pixels, kind)]).mean(0)
        correct += int((logits.argmax(1) == labels[first : first + batch]).sum())
    return correct / images.shape[0]


def whitening_filters(images: torch.Tensor, normalize: nn.Module, count: int) -> torch.Tensor:
    """``count`` 3x3 filters: the top ``count // 2`` principal components of the normalized
    images' 3x3 patches divided by the square root of their variance, then their negatives."""
    sample = normalize(to_float(images[:WHITENING_IMAGES]))
    channels = sample.shape[1]
    patches = F.unfold(sample, 3, padding=1).transpose(1, 2).reshape(-1, channels * 9).double()
    covariance = patches.T @ patches / patches.shape[0]  # uncentered, as airbench's
    variances, components = torch.linalg.eigh(covariance)  # ascending
    top = count // 2
    if top > components.shape[1]:
        raise ValueError(f"whiten: {count} filters need {top} components; 3x3 patches give {channels * 9}")
    scaled = (components[:, -top:] / torch.sqrt(variances[-top:] + WHITENING_EPS)).T.flip(0)
    scaled = scaled.reshape(top, channels, 3, 3).float()
    return torch.cat([scaled, -scaled])


def _reorder_first_block(stages: list, width: int, add_bn: bool) -> list:
    """conv1 → pool1 → [bn1] → relu1 instead of conv1 → [bn1] → relu1 → pool1."""
    named = dict(stages)
    if "pool1" not in named:
        raise ValueError("first_block: the first block has no pooling to move")
    bn = named.get("bn1") or (nn.BatchNorm2d(width) if add_bn else None)
    first = [("conv1", named["conv1"]), ("pool1", named["pool1"])]
    first += [("bn1", bn)] if bn is not None else []
    first.append(("relu1", named["relu1"]))
    moved = {"conv1", "bn1", "relu1", "pool1"}
    at = [name for name, _ in stages].index("conv1")
    rest = [(name, module) for name, module in stages if name not in moved]
    return rest[:at] + first + rest[at:]


@register_model(
    "trick",
    limits={"width": (1, 1024), "blocks": (1, 8), "hidden": (0, 4096), "convs": (1, 4)},
)
def trick(
    in_shape,
    num_classes,
    mean,
    std,
    width: int = 16,
    blocks: int = 2,
    batchnorm: bool = False,
    convs: int = 1,
    pool_last: bool = True,
    hidden: int = 0,
    whiten: bool = False,
    dirac: bool = False,
    first_block: str = "",
) -> StagedModel:
    """convnet with the same options, plus one record-holder trick per switch (module docstring)."""
    if first_block not in ("", "pool-relu", "pool-bn-relu"):
        raise ValueError(f"trick: unknown first_block {first_block!r}")
    base = convnet(
        in_shape, num_classes, mean, std, width=width, blocks=blocks, batchnorm=batchnorm,
        convs=convs, pool_last=pool_last, hidden=hidden,
    )  # fmt: skip
    stages = base.stages()
    if first_block:
        stages = _reorder_first_block(stages, width, add_bn=first_block == "pool-bn-relu")
    model = StagedModel(stages, in_shape, num_classes)
    with torch.no_grad():
        if dirac:
            for _, module in stages:
                if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
                    nn.init.dirac_(module.weight[: min(module.in_channels, module.out_channels)])
        if whiten:
            if _training_images is None:
                raise ValueError("whiten: call use_training_images() before building the model")
            conv = dict(stages)["conv1"]
            conv.weight.copy_(whitening_filters(_training_images, dict(stages)["normalize"], width))
            conv.weight.requires_grad_(False)
    return model


def step_cpu_seconds(model: nn.Module, batch: int = 64, steps: int = 20) -> float:
    """CPU seconds per SGD step on random 28x28 batches (CPU time, so that other processes on
    a shared machine distort it less than wall-clock time)."""
    import time

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    pixels = torch.rand(batch, *model.in_shape).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, model.num_classes, (batch,))
    model = model.to(memory_format=torch.channels_last).train()
    for step in range(steps + 3):  # 3 warm-up steps
        if step == 3:
            start = time.process_time()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(pixels), labels).backward()
        optimizer.step()
    return (time.process_time() - start) / steps


if __name__ == "__main__":  # python bench/record_tricks.py: step cost of the first-block orders
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _common import cpu_pressure

    torch.set_num_threads(1)
    large = {"blocks": 3, "batchnorm": True, "pool_last": False, "hidden": 64}
    candidates = {
        "mnist5k default": {},
        "mnist5k conv-pool-BN-ReLU": {"first_block": "pool-bn-relu"},
        "Fashion default": large,
        "Fashion conv-pool-BN-ReLU": {**large, "first_block": "pool-bn-relu"},
    }
    print(f"pressure before: {cpu_pressure()}; 1 thread, batch 64, best of 5 interleaved rounds")
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(5):
        for label, options in candidates.items():
            torch.manual_seed(0)
            model = trick((1, 28, 28), 10, (0.5,), (0.25,), **options)
            best[label] = min(best[label], step_cpu_seconds(model))
    for label, seconds in best.items():
        print(f"{label:<28} {1000 * seconds:6.2f} ms CPU per step  ({64 / seconds:,.0f} img/s per thread)")
    print(f"pressure after: {cpu_pressure()}")
