"""What an imported model expects of an image, checked once: shape, class names, mean and std.

convlens models take pixels in [0, 1] and normalize inside. An imported model either normalizes
with the mean/std its weights were trained with (ImageNet's for most torchvision checkpoints),
with a data set's, or not at all (the [0, 1] convention). The run records which, so the faces
keep speaking in pixels and the shift check compares against the right numbers (none, when the
model takes pixels as they are).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from convlens.errors import ConvlensError, printable

UNIT_INTERVAL = "none: the model takes pixels in [0, 1] as they are"


@dataclass(frozen=True)
class Preprocessing:
    """What the model expects of an image: its shape, and the mean/std it normalizes with."""

    input_shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...] | None  # None: the [0, 1] convention (no normalization)
    std: tuple[float, ...] | None
    source: str  # where mean/std came from, as the run card says it

    def to_json(self) -> dict:
        return {"mean": _list(self.mean), "std": _list(self.std), "source": self.source}

    def model_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The mean/std the model's normalize stage is built with: the identity (0 and 1) for the
        [0, 1] convention, never a model's default."""
        channels = self.input_shape[0]
        if self.mean is None:
            return (0.0,) * channels, (1.0,) * channels
        return self.mean, self.std


def _list(values):
    return None if values is None else [float(v) for v in values]


def check_class_names(class_names) -> list[str]:
    from convlens.data.bundle import MAX_CLASSES

    if isinstance(class_names, str):
        class_names = [name.strip() for name in class_names.split(",")]
    names = list(class_names or [])
    if not 2 <= len(names) <= MAX_CLASSES or not all(isinstance(n, str) and n for n in names):
        raise ConvlensError(
            f"class_names must be 2 to {MAX_CLASSES:,} non-empty names, got {printable(names)[:120]}",
            parameter="class_names",
        )
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ConvlensError(f"class_names: {', '.join(twice)} given twice", parameter="class_names")
    return names


def check_input_shape(shape) -> tuple[int, int, int]:
    from convlens.data.transforms import MAX_SIDE

    try:
        values = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or values[0] not in (1, 3) or not all(1 <= s <= MAX_SIDE for s in values[1:]):
        raise ConvlensError(
            f"input_shape must be C,H,W with 1 or 3 channels and sides from 1 to {MAX_SIDE}, got {shape}",
            parameter="input_shape",
        )
    return values  # type: ignore[return-value]


def _numbers(name: str, values, channels: int, positive: bool) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        numbers = ()
    ok = len(numbers) == channels and all(math.isfinite(v) and (v > 0 or not positive) for v in numbers)
    if not ok:
        what = "positive " if positive else ""
        raise ConvlensError(
            f"{name} must be {channels} finite {what}number(s), one per channel in [0, 1] pixel units, got {values}",
            parameter=name,
        )
    return numbers


def preprocessing(input_shape, mean=None, std=None, source: str = "given") -> Preprocessing:
    """Checked preprocessing; no mean and std is the [0, 1] convention."""
    shape = check_input_shape(input_shape)
    if (mean is None) != (std is None):
        missing = "std" if std is None else "mean"
        raise ConvlensError(
            f"{missing} is needed too: give mean and std together, or neither", parameter=missing
        )
    if mean is None:
        return Preprocessing(shape, None, None, UNIT_INTERVAL)
    return Preprocessing(
        shape, _numbers("mean", mean, shape[0], False), _numbers("std", std, shape[0], True), source
    )


def _from_data(data, input_shape, mean, std) -> tuple[Preprocessing, list[str], dict]:
    """Class names, input shape and mean/std read from a data set (given values win)."""
    from convlens.data import load_dataset
    from convlens.train.result import dataset_facts

    size = check_input_shape(input_shape)[1:] if input_shape is not None else None
    try:
        dataset = load_dataset(data, image_size=size)
    except ConvlensError as exc:
        raise ConvlensError(f"data {printable(data)}: {exc}", parameter="data") from None
    if input_shape is not None and tuple(dataset.input_shape) != check_input_shape(input_shape):
        raise ConvlensError(
            f"input_shape {list(input_shape)} does not fit data {printable(data)}, whose images are "
            f"{list(dataset.input_shape)}",
            parameter="input_shape",
        )
    if mean is None and std is None:
        mean, std, source = dataset.mean, dataset.std, f"the data set's ({dataset.normalization_source})"
    else:
        source = "given"
    return (
        preprocessing(dataset.input_shape, mean, std, source),
        list(dataset.class_names),
        dataset_facts(dataset),
    )


def resolve_preprocessing(class_names, input_shape, mean, std, data):
    """(Preprocessing, class names, data facts) from a data set or from the values given."""
    if data is not None:
        prep, names, facts = _from_data(data, input_shape, mean, std)
        if class_names is not None and check_class_names(class_names) != names:
            raise ConvlensError(
                f"class_names differ from data {printable(data)}'s ({', '.join(names)}); give one of them",
                parameter="class_names",
            )
        return prep, names, facts
    if input_shape is None:
        raise ConvlensError("input_shape is needed (C,H,W), or data to read it from", parameter="input_shape")
    return preprocessing(input_shape, mean, std), check_class_names(class_names), {}
