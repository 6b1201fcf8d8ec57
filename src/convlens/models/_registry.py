"""Model registry: one name → one constructor, and the interface every model shares.

Every model is a ``StagedModel``: an ordered list of named stages (normalize, conv1,
relu1, pool1, …, fc) run one after another. Inspect, attribution and the web page use only
``stages()``, so any registered model can be explained without special cases.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from convlens.data.bundle import MAX_CLASSES
from convlens.errors import ConvlensError, shown
from convlens.registry import Registry

# name → constructor; ``extras["limits"]`` holds each numeric option's inclusive range
MODELS = Registry("model", shared_inputs=("in_shape", "num_classes", "mean", "std"))

# The largest model create_model builds: 100 M float32 weights are 400 MB, 1.2 GB with the
# gradients and momentum that training adds. Counted on PyTorch's "meta" device, which
# allocates nothing, so a width of 10**6 is refused in milliseconds instead of exhausting memory.
MAX_PARAMETERS = 100_000_000


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


def register_model(
    name: str,
    limits: dict[str, tuple[float, float]] | None = None,
    by_name: bool = True,
    task: str = "classification",
) -> Callable:
    """Decorator: register ``fn(in_shape, num_classes, mean, std, **options) -> StagedModel`` as ``name``.

    ``limits`` gives the inclusive range of numeric options (``{"width": (1, 1024)}``); every
    option's type is its default's (an int option takes ints, a bool option true or false).
    A thin wrapper over ``MODELS.register``: the CLI, the server and the catalog read ``MODELS``.
    ``by_name=False`` marks a model that needs more than a name to build (the ``graph`` of an
    imported model): it opens from checkpoints, but is not a family to train from scratch.
    ``task`` is what its output means: ``classification`` (class scores per image, (B, classes))
    or ``segmentation`` (class scores per pixel, (B, classes, H, W)).
    """

    def decorate(fn: Callable[..., StagedModel]) -> Callable[..., StagedModel]:
        return MODELS.register(name, fn, limits=dict(limits or {}), by_name=by_name, task=task)

    return decorate


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(MODELS.names())


def list_families(task: str | None = None) -> list[str]:
    """The models ``create_model`` builds from a name alone, sorted: what a face offers to train;
    with ``task``, only those for that task (``classification`` or ``segmentation``)."""
    return sorted(
        name
        for name in MODELS.names()
        if MODELS.get(name).extras.get("by_name", True)
        and (task is None or MODELS.get(name).extras.get("task", "classification") == task)
    )


def model_task(name: str) -> str:
    """What the model ``name`` predicts: ``classification`` or ``segmentation``."""
    _check_name(name)
    return MODELS.get(name).extras.get("task", "classification")


def describe_model(name: str) -> str:
    """The model's one-line help (the first line of its docstring)."""
    _check_name(name)
    return MODELS.get(name).help


def model_options(name: str) -> dict:
    """The keyword options (with defaults) a model accepts beyond shape, classes and normalization."""
    _check_name(name)
    signature = inspect.signature(MODELS.get(name).function)
    return {p.name: p.default for p in signature.parameters.values() if p.name not in MODELS.shared_inputs}


def _check_name(name: str) -> None:
    # exact names only: a model name is written into checkpoints and must read back the same
    if not isinstance(name, str) or name not in MODELS.names():
        raise ConvlensError(
            f"unknown model {shown(name)}; choose one of: {', '.join(list_models())}", parameter="name"
        )


def _limits(name: str) -> dict[str, tuple[float, float]]:
    return MODELS.get(name).extras.get("limits", {})


def _kind(default) -> str | None:
    """The type an option takes, from its default: bool, int, float, str (None: anything)."""
    for kind in (bool, int, float, str):  # bool first: True is also an int
        if isinstance(default, kind):
            return kind.__name__
    return None


def _text(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else repr(value)


def _describe_option(name: str, option: str, default) -> str:
    kind, limits = _kind(default), _limits(name).get(option)
    if kind == "bool":
        what = "true/false"
    elif limits:
        what = f"{kind} {limits[0]:g}..{limits[1]:g}"
    else:
        what = kind or "any"
    return f"{option} ({what}, default {_text(default)})"


def describe_options(name: str) -> str:
    """The options of a model as one line: ``width (int 1..1024, default 16), batchnorm (true/false, ...)``."""
    options = model_options(name)
    return ", ".join(_describe_option(name, key, value) for key, value in options.items()) or "none"


def check_model_options(name: str, options: dict) -> None:
    """Refuse an unknown option, a value of the wrong type or one outside the model's range.

    The error names the ``model_options`` parameter and lists every valid option with its
    type, range and default, so a typo is fixed from the message alone.
    """
    _check_name(name)
    valid = model_options(name)
    listing = f"valid options for {name}: {describe_options(name)}"
    for key, value in options.items():
        if key not in valid:
            raise ConvlensError(
                f"model_options: {name} has no option {key!r}; {listing}", parameter="model_options"
            )
        kind, limits = _kind(valid[key]), _limits(name).get(key)
        if kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        elif kind == "str":
            ok = isinstance(value, str)
        else:
            ok = True
        if ok and limits and kind in ("int", "float"):
            ok = limits[0] <= value <= limits[1]
        if not ok:
            expected = "true or false" if kind == "bool" else f"{'an' if kind == 'int' else 'a'} {kind}"
            if limits and kind in ("int", "float"):
                expected += f" from {limits[0]:g} to {limits[1]:g}"
            raise ConvlensError(
                f"model_options: {key} must be {expected}, got {_text(value)}; {listing}",
                parameter="model_options",
            )


def _check_size(
    name: str, build: Callable[[], StagedModel], in_shape, num_classes: int, options: dict
) -> None:
    """Build the model on the meta device (no memory) and refuse it beyond MAX_PARAMETERS."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            parameters = sum(p.numel() for p in build().parameters())
    except ConvlensError:
        raise
    except Exception:  # a plugin that cannot be built on "meta": the real build decides
        return
    if parameters <= MAX_PARAMETERS:
        return
    chosen = ", ".join(f"{k}={_text(v)}" for k, v in options.items())
    shape = "x".join(map(str, in_shape))
    what = f"{name} with {chosen}" if chosen else name
    raise ConvlensError(
        f"{'model_options: ' if chosen else ''}{what} for {shape} input and {num_classes} classes would have "
        f"{parameters:,} parameters, over the limit of {MAX_PARAMETERS:,}; choose smaller options or a "
        "smaller input (choose with image_size)",
        parameter="model_options" if chosen else None,
    )


def _normalization_values(key: str, values, channels: int) -> tuple:
    """``mean`` or ``std`` as a tuple (0.5 per channel when None); a tensor or array must be 1-D."""
    if values is None:
        return (0.5,) * channels
    if isinstance(values, np.ndarray | torch.Tensor) and values.ndim == 1:
        values = values.tolist()
    if not isinstance(values, list | tuple):
        raise ConvlensError(
            f"{key} must be a list of {channels} number(s), got {shown(values)}", parameter=key
        )
    return tuple(float(v) if isinstance(v, np.generic) else v for v in values)


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
    one_d = isinstance(in_shape, np.ndarray) and in_shape.ndim == 1
    sides = in_shape if isinstance(in_shape, list | tuple | torch.Size) or one_d else None
    if sides is None or not all(isinstance(s, int | np.integer) and not isinstance(s, bool) for s in sides):
        raise ConvlensError(
            f"in_shape must be (C, H, W): three whole numbers, got {shown(in_shape)}", parameter="in_shape"
        )
    in_shape = tuple(int(s) for s in sides)
    if len(in_shape) != 3 or in_shape[0] < 1 or min(in_shape) < 1:
        raise ConvlensError(f"input shape must be C x H x W with positive sides, got {in_shape}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConvlensError(f"num_classes must be at least 2, got {num_classes}", parameter="num_classes")
    if num_classes > MAX_CLASSES:
        raise ConvlensError(
            f"num_classes must be at most {MAX_CLASSES:,}, got {num_classes:,}", parameter="num_classes"
        )
    channels = in_shape[0]
    mean = _normalization_values("mean", mean, channels)
    std = _normalization_values("std", std, channels)
    if len(mean) != channels or len(std) != channels:
        raise ConvlensError(f"normalization needs {channels} mean/std values, got {len(mean)}/{len(std)}")
    for key, values in (("mean", mean), ("std", std)):  # a zero std divides every pixel by 0: NaN
        if not all(
            isinstance(v, numbers.Real)
            and not isinstance(v, bool)
            and math.isfinite(v)
            and (key == "mean" or v > 0)
            for v in values
        ):
            raise ConvlensError(
                f"{key} must be {channels} finite {'positive ' if key == 'std' else ''}number(s), got {list(values)!r}",
                parameter=key,
            )
    check_model_options(name, options)

    def build() -> StagedModel:
        return MODELS.get(name).function(
            in_shape=in_shape, num_classes=num_classes, mean=mean, std=std, **options
        )

    _check_size(name, build, in_shape, num_classes, options)
    model = build()
    model.task = model_task(name)  # what its output means: the trainer and the faces read it
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
