"""The lab: each claim a CNN article makes, turned into a measured experiment.

Every experiment is a module with ``run(dataset, **options)`` returning a dataclass of
numbers (``to_json()``, ``tables()``); ``run_experiment`` times it. Defaults finish in about
two minutes or less on two CPU cores with mnist5k.
"""

from __future__ import annotations

import importlib
import time

from convlens.errors import ConvlensError
from convlens.lab._common import LabResult, Table

EXPERIMENTS = {
    "params": "dense vs convolutional parameter counts, exact, with the formula",
    "locality": "CNN and MLP on original vs pixel-shuffled images: who needs neighbours?",
    "equivariance": "feature maps of a shifted image vs shifted feature maps, per stage",
    "invariance": "accuracy vs shift for a CNN with pooling, without pooling, and an MLP",
    "hierarchy": "receptive fields, feature visualization per depth, edge-like first-layer kernels",
    "calibration": "reliability diagram, ECE and temperature scaling",
}

# Tiny settings for smoke tests and `convlens lab all --quick`: seconds instead of minutes,
# numbers too rough to conclude anything from.
QUICK = {
    "params": {},
    "locality": {"epochs": 1, "train_limit": 500, "test_limit": 200},
    "equivariance": {"epochs": 1, "images": 20},
    "invariance": {"epochs": 1, "max_shift": 2, "train_limit": 500, "test_limit": 200},
    "hierarchy": {"epochs": 1, "channels": 2, "featureviz_steps": 4, "random_kernels": 200},
    "calibration": {"epochs": 1},
}

__all__ = [
    "EXPERIMENTS",
    "QUICK",
    "LabResult",
    "Table",
    "check_experiment",
    "list_experiments",
    "run_experiment",
]


def list_experiments() -> list[str]:
    """Experiment names in the order ``lab all`` runs them."""
    return list(EXPERIMENTS)


def check_experiment(name: str) -> str:
    if name not in EXPERIMENTS:
        raise ConvlensError(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)}, or all")
    return name


def run_experiment(name: str, dataset, **options) -> LabResult:
    """Run one experiment on a Dataset bundle; the result carries how many seconds it took."""
    module = importlib.import_module(f"convlens.lab.{check_experiment(name)}")
    start = time.perf_counter()
    result = module.run(dataset, **options)
    result.seconds = time.perf_counter() - start
    return result
