"""The lab: each claim a CNN article makes, turned into a measured experiment.

Every experiment is a module with ``run(dataset, **options)`` returning a dataclass of
numbers (``to_json()``), registered with one ``register_experiment(...)`` line;
``run_experiment`` checks the options and times it. Its tables and figure are views
(``convlens.views.lab``); ``save_record``/``load_record`` keep its outcome on disk
(``convlens.lab.records``), written by `convlens lab` and read by the report.
Defaults finish in about two minutes or less on two CPU cores with mnist5k.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable

from convlens.errors import ConvlensError
from convlens.lab._common import EXPERIMENTS, LabResult, register_experiment
from convlens.lab.records import LabRecord, has_record, load_record, save_index, save_record

BUILT_IN = ("params", "locality", "equivariance", "invariance", "hierarchy", "calibration", "faithfulness")
for _module in BUILT_IN:  # importing an experiment registers it; this is the order `lab all` runs them
    importlib.import_module(f"convlens.lab.{_module}")

__all__ = [
    "EXPERIMENTS",
    "LabRecord",
    "LabResult",
    "check_experiment",
    "check_options",
    "has_record",
    "list_experiments",
    "load_record",
    "quick_options",
    "register_experiment",
    "run_experiment",
    "save_index",
    "save_record",
]


def list_experiments() -> list[str]:
    """Experiment names in the order ``lab all`` runs them."""
    return EXPERIMENTS.names()


def check_experiment(name: str) -> str:
    if name not in EXPERIMENTS:
        raise ConvlensError(
            f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS.names())}, or all",
            parameter="name",
        )
    return EXPERIMENTS.get(name).name


def check_options(name: str, options: dict) -> dict:
    """``options`` for experiment ``name``, refusing keys its ``run`` does not take."""
    entry = EXPERIMENTS.get(check_experiment(name))
    accepted = [p.name for p in entry.parameters if p.name != "model"]
    for key in options:
        if key not in accepted:
            raise ConvlensError(
                f"option {key}: unknown; this experiment takes: {', '.join(accepted)}", parameter="option"
            )
    return {key: tuple(value) if isinstance(value, list) else value for key, value in options.items()}


def quick_options(name: str) -> dict:
    """The experiment's tiny smoke-test settings."""
    return dict(EXPERIMENTS.get(check_experiment(name)).extras.get("quick", {}))


def run_experiment(
    name: str, dataset, progress: Callable[[int, int, str], None] | None = None, **options
) -> LabResult:
    """Run one experiment on a Dataset bundle; the result carries how many seconds it took.

    ``progress(done, total, what)`` follows the experiment's coarse steps where its ``run`` takes
    ``progress``, else it is called once at the start (0 of 1) and once at the end (1 of 1).
    """
    entry = EXPERIMENTS.get(check_experiment(name))
    options = check_options(name, options)
    steps = entry.accepts("progress") and progress is not None
    if progress is not None and not steps:
        progress(0, 1, name)
    start = time.perf_counter()
    result = entry.function(dataset, **options, **({"progress": progress} if steps else {}))
    result.seconds = time.perf_counter() - start
    if progress is not None and not steps:
        progress(1, 1, name)
    return result
