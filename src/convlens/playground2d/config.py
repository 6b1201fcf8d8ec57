"""What one playground training is made of, checked where it enters convlens.

The bounds are those of the TensorFlow Playground (at most 6 hidden layers of at most 8
neurons, noise up to 50 %), so every neuron stays small enough to draw and train live.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from convlens.errors import ConvlensError
from convlens.playground2d.data import DATASETS, MAX_NOISE, check_dataset
from convlens.playground2d.features import check_features

MAX_LAYERS = 6
MAX_NEURONS = 8
MAX_BATCH = 100
MAX_LR = 10.0
MAX_SEED = 2**31 - 1
ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")
REGULARIZATIONS = ("none", "l1", "l2")


@dataclass(frozen=True)
class PlaygroundConfig:
    """One network on one data set; the defaults solve all four data sets (tests/test_playground2d.py)."""

    dataset: str = "spiral"  # spiral, xor, circle, gauss; plane, multi-gauss regress
    noise: float = 0.0  # percent, 0 to 50: jitter that makes the classes overlap
    train_percent: float = 50.0  # share of the 500 points used for training; the rest test it
    seed: int = 0  # the points, their split, the initial weights and the batch order
    features: tuple[str, ...] = ("x1", "x2")  # only the raw coordinates: the network carves the rest
    hidden: tuple[int, ...] = (8, 8, 8)  # neurons per hidden layer; () is a single straight cut
    activation: str = "tanh"  # smooth and signed: each neuron's map shows a soft cut
    lr: float = 0.01  # Adam's step size (0.03 made the spiral's boundary swing from epoch to epoch)
    regularization: str = "none"  # none, l1 or l2, on the weights (not the biases)
    regularization_rate: float = 0.0  # how much of the penalty joins the loss
    batch_size: int = 10  # points per gradient step

    @property
    def task(self) -> str:
        """``classification`` or ``regression``: the data set decides the output and the loss."""
        return DATASETS[self.dataset].task

    def to_json(self) -> dict:
        return {**asdict(self), "features": list(self.features), "hidden": list(self.hidden)}


def _number(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConvlensError(f"{name} must be a number, got {value!r}", parameter=name) from None
    if not math.isfinite(number):
        raise ConvlensError(f"{name} must be a finite number, got {value!r}", parameter=name)
    return number


def _whole(value, name: str, low: int, high: int) -> int:
    number = _number(value, name)
    if number != int(number) or not low <= number <= high:
        raise ConvlensError(
            f"{name} must be a whole number from {low} to {high}, got {value!r}", parameter=name
        )
    return int(number)


def _within(value, name: str, low: float, high: float, unit: str = "") -> float:
    number = _number(value, name)
    if not low <= number <= high:
        raise ConvlensError(
            f"{name} must be between {low:g} and {high:g}{unit}, got {value!r}", parameter=name
        )
    return number


def _one_of(value, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConvlensError(f"{name} {value!r} is not one of {', '.join(choices)}", parameter=name)
    return value


def check_config(config: PlaygroundConfig) -> PlaygroundConfig:
    """``config`` with every value checked and normalized (features in their canonical order);
    a value out of range raises a ConvlensError naming it and its valid range."""
    check_dataset(config.dataset)
    hidden = tuple(config.hidden)
    if len(hidden) > MAX_LAYERS:
        raise ConvlensError(
            f"hidden: at most {MAX_LAYERS} hidden layers, got {len(hidden)}", parameter="hidden"
        )
    for width in hidden:
        if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_NEURONS:
            raise ConvlensError(
                f"hidden: each layer has 1 to {MAX_NEURONS} neurons, got {width!r}", parameter="hidden"
            )
    lr = _number(config.lr, "lr")
    if not 0 < lr <= MAX_LR:
        raise ConvlensError(f"lr must be above 0 and at most {MAX_LR:g}, got {config.lr!r}", parameter="lr")
    return replace(
        config,
        noise=_within(config.noise, "noise", 0, MAX_NOISE, " (percent)"),
        train_percent=_within(config.train_percent, "train_percent", 10, 90, " (percent)"),
        seed=_whole(config.seed, "seed", 0, MAX_SEED),
        features=check_features(config.features),
        hidden=hidden,
        activation=_one_of(config.activation, "activation", ACTIVATIONS),
        lr=lr,
        regularization=_one_of(config.regularization, "regularization", REGULARIZATIONS),
        regularization_rate=_within(config.regularization_rate, "regularization_rate", 0, 10),
        batch_size=_whole(config.batch_size, "batch_size", 1, MAX_BATCH),
    )
