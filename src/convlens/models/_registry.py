"""Model registry: one name → one constructor, and the interface every model shares.

Every model is a ``StagedModel``: an ordered list of named stages (normalize, conv1,
relu1, pool1, …, fc) run one after another. Inspect, attribution and the web page use only
``stages()``, so any registered model can be explained without special cases.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

from convlens.errors import ConvlensError

_MODELS: dict[str, Callable[..., StagedModel]] = {}
_DESCRIPTIONS: dict[str, str] = {}


class Normalize(nn.Module):
    """First stage of every model: (pixel - mean) / std, so inputs stay pixels in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class StagedModel(nn.Module):
    """A CNN as an ordered chain of named stages; ``forward`` returns class logits."""

    def __init__(
        self, stages: Sequence[tuple[str, nn.Module]], in_shape: tuple[int, int, int], num_classes: int
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(OrderedDict(stages))
        self.in_shape = tuple(in_shape)
        self.num_classes = num_classes
        self.arguments: dict = {}  # filled by create_model: what rebuilds this model from a checkpoint

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.body(pixels)

    def stages(self) -> list[tuple[str, nn.Module]]:
        """The ordered, named layers a learner would point at: normalize, conv1, relu1, …, fc."""
        return list(self.body.named_children())


def register_model(name: str) -> Callable:
    """Decorator: register ``fn(in_shape, num_classes, mean, std, **options) -> StagedModel`` as ``name``."""

    def decorate(fn: Callable[..., StagedModel]) -> Callable[..., StagedModel]:
        if name in _MODELS:
            raise RuntimeError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        _DESCRIPTIONS[name] = (fn.__doc__ or "").strip().splitlines()[0]
        return fn

    return decorate


def list_models() -> list[str]:
    """Names of every registered model."""
    return sorted(_MODELS)


def describe_model(name: str) -> str:
    return _DESCRIPTIONS[name]


def model_options(name: str) -> dict:
    """The keyword options (with defaults) a model accepts beyond shape, classes and normalization."""
    _check_name(name)
    signature = inspect.signature(_MODELS[name])
    return {
        p.name: p.default
        for p in signature.parameters.values()
        if p.name not in {"in_shape", "num_classes", "mean", "std"}
    }


def _check_name(name: str) -> None:
    if name not in _MODELS:
        raise ConvlensError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")


def create_model(
    name: str,
    in_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **options,
) -> StagedModel:
    """Build a registered model for inputs of ``in_shape`` (C, H, W) and ``num_classes`` outputs."""
    _check_name(name)
    in_shape = tuple(int(s) for s in in_shape)
    if len(in_shape) != 3 or in_shape[0] < 1 or min(in_shape) < 1:
        raise ConvlensError(f"input shape must be C x H x W with positive sides, got {in_shape}")
    if num_classes < 2:
        raise ConvlensError(f"num_classes must be at least 2, got {num_classes}")
    channels = in_shape[0]
    mean = tuple(mean) if mean is not None else (0.5,) * channels
    std = tuple(std) if std is not None else (0.5,) * channels
    if len(mean) != channels or len(std) != channels:
        raise ConvlensError(f"normalization needs {channels} mean/std values, got {len(mean)}/{len(std)}")
    unknown = set(options) - set(model_options(name))
    if unknown:
        raise ConvlensError(
            f"model {name!r} has no option {sorted(unknown)[0]!r}; options: {sorted(model_options(name))}"
        )
    model = _MODELS[name](in_shape=in_shape, num_classes=num_classes, mean=mean, std=std, **options)
    model.arguments = {
        "name": name,
        "in_shape": list(in_shape),
        "num_classes": num_classes,
        "mean": list(mean),
        "std": list(std),
        "options": options,
    }
    return model


def flat_features(stages: Sequence[tuple[str, nn.Module]], in_shape: tuple[int, int, int]) -> int:
    """How many features reach the classifier: run the feature stages once on a zero image."""
    try:
        with torch.no_grad():
            out = nn.Sequential(OrderedDict(stages))(torch.zeros(1, *in_shape))
    except RuntimeError:  # a kernel larger than its (shrunken) input
        out = torch.zeros(0)
    if out.numel() == 0:
        raise ConvlensError(
            f"input {in_shape} is too small for this model: the feature map shrinks to nothing"
        )
    return out[0].numel()
