"""Shared pieces of the lab: quick training runs, shifting images, the result base class."""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from convlens.data import Dataset, to_float
from convlens.data.transforms import sample_indices
from convlens.errors import ConvlensError
from convlens.registry import Registry

if TYPE_CHECKING:
    from collections.abc import Callable


# Every experiment registers itself at the end of its module; `convlens lab`, the report and
# the explorer's registry endpoint read this. A new experiment is one file plus one line; its
# tables and figure are views (``convlens.views.lab``, ``convlens.views.plots.lab``) for the
# built-in ones, or functions given to ``register_experiment`` by an experiment from outside.
# An experiment's ``run`` may also take ``progress(done, total, what)`` to report coarse steps
# (e.g. each model it trains); ``run_experiment`` passes it on.
EXPERIMENTS = Registry("lab experiment", shared_inputs=("dataset", "progress"))


def register_experiment(
    name: str,
    run: Callable[..., LabResult],
    figure: Callable[[LabResult], object] | None = None,
    quick: dict | None = None,
    help: str | None = None,
    tables: Callable[[LabResult], list] | None = None,
) -> None:
    """Register ``run(dataset, **options) -> LabResult`` as experiment ``name``.

    ``figure(result) -> matplotlib Figure`` and ``tables(result) -> list[views.tables.Table]``
    are for experiments registered from outside the package (the lab stays below the views, so
    the built-in ones are drawn by ``convlens.views``). ``quick`` holds tiny settings for smoke
    tests and ``convlens lab all --quick``: seconds instead of minutes, numbers too rough to
    conclude anything from.
    """
    extras = {"quick": dict(quick or {})}
    extras.update({key: value for key, value in (("figure", figure), ("tables", tables)) if value})
    EXPERIMENTS.register(name, run, help=help, **extras)


class LabResult:
    """Mixin for experiment results: plain numbers, JSON-ready (``to_json``)."""

    seconds: float

    def to_json(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


def _plain(value):
    if torch.is_tensor(value):
        return value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def check_positive(name: str, value: int) -> int:
    if not isinstance(value, int) or value < 1:
        raise ConvlensError(f"{name} must be a positive integer, got {value}")
    return value


def train_quick(
    dataset: Dataset,
    model: str,
    epochs: int,
    seed: int = 0,
    augment: str = "none",
    label_smoothing: float = 0.1,
    **options,
) -> tuple[torch.nn.Module, float]:
    """Train with the project's recipe in a throw-away folder; returns (model in eval mode, test accuracy).

    Augmentation is off by default ("none"): its random shifts and rotations would blur exactly
    the properties (locality, translation) the experiments measure; "auto" is the data set's recipe.
    """
    from convlens.checkpoint import load_checkpoint
    from convlens.train import TrainConfig, fit

    config = TrainConfig(
        model=model,
        model_options=dict(options),
        epochs=epochs,
        seed=seed,
        augment=augment,
        label_smoothing=label_smoothing,
        device="cpu",
        # an experiment compares models trained the same way on all its training images, for a
        # fixed schedule: no validation split, no early stopping, the last epoch
        validation_fraction=0.0,
    )
    with tempfile.TemporaryDirectory(prefix="convlens-lab-") as folder:
        result = fit(dataset, config, Path(folder) / "run")
        trained, _ = load_checkpoint(Path(folder) / "run")
    return trained.eval(), result.test_accuracy


def with_images(
    dataset: Dataset,
    train_images: torch.Tensor,
    test_images: torch.Tensor,
    name: str,
    train_labels: torch.Tensor | None = None,
    test_labels: torch.Tensor | None = None,
) -> Dataset:
    """The same classes, normalization and augmentation with other pixels (e.g. shuffled) and,
    optionally, labels. ``spec`` is cleared: these pixels cannot be loaded again by name."""
    return dataclasses.replace(
        dataset,
        name=name,
        spec="",
        train_images=train_images,
        train_labels=dataset.train_labels if train_labels is None else train_labels,
        test_images=test_images,
        test_labels=dataset.test_labels if test_labels is None else test_labels,
    )


def subset(dataset: Dataset, train: int | None, test: int | None, seed: int = 0) -> Dataset:
    """A seeded random ``train``/``test`` images of each split (None: all), for quick runs."""
    if train is None and test is None:
        return dataset
    train_index = sample_indices(dataset.train_labels.shape[0], train, seed)
    test_index = sample_indices(dataset.test_labels.shape[0], test, seed)
    return with_images(
        dataset,
        dataset.train_images[train_index],
        dataset.test_images[test_index],
        dataset.name,
        dataset.train_labels[train_index],
        dataset.test_labels[test_index],
    )


def shift_images(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move the content of (N, C, H, W) images by dy rows and dx columns; uncovered pixels become 0."""
    height, width = images.shape[-2:]
    if abs(dy) >= height or abs(dx) >= width:
        return torch.zeros_like(images)
    padded = F.pad(images, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))  # (N, C, H+|dy|, W+|dx|)
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top : top + height, left : left + width]


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Logits (N, classes) for uint8 or float images."""
    model.eval()
    outputs = [model(to_float(images[i : i + batch_size])) for i in range(0, images.shape[0], batch_size)]
    return torch.cat(outputs)
