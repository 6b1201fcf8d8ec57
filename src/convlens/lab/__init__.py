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

__all__ = ["EXPERIMENTS", "LabResult", "Table", "check_experiment", "list_experiments", "run_experiment"]


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
