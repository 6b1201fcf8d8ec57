"""The runs the explorer serves: each trained checkpoint loaded once, switchable by id.

A run is loaded when the server starts (a broken run folder should fail ``convlens serve``
at once, not on the first click); its test images are loaded on first use, because the
page works without them (draw, upload) and some data sets take seconds to parse.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from convlens.errors import ConvlensError
from convlens.run import Run


class RunNotFound(ConvlensError):
    """A request named a run the server has not loaded (answered with 404)."""


@dataclass
class LoadedRun:
    """A ``convlens.Run`` as the server holds it: an id, a lock, and caches of what never changes."""

    run_id: str
    run: Run
    # Hooks and gradients touch the shared model, so explanations run one at a time per run.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    # Slow work (feature visualization, attacks) runs on its own copy of the model under its own
    # lock, so a predict or activations request never waits behind it.
    slow_lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _slow_model: torch.nn.Module | None = field(default=None, repr=False)
    cache: dict = field(default_factory=dict, repr=False)  # results that never change, e.g. the card
    _test_split: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    _test_error: str | None = field(default=None, repr=False)

    @property
    def model(self) -> torch.nn.Module:
        return self.run.model

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.run.input_shape

    @property
    def class_names(self) -> list[str]:
        return self.run.class_names

    def slow_model(self) -> torch.nn.Module:
        """A private copy of the model for slow work; hold ``slow_lock`` while using it."""
        import copy

        with self.slow_lock:
            if self._slow_model is None:
                with self.lock:  # copied while no request's hooks sit on the shared model
                    self._slow_model = copy.deepcopy(self.run.model).eval()
            return self._slow_model

    def check_class(self, index: int | None, name: str = "target") -> int | None:
        """A class index from a request, or None; names the valid range when it is out of it."""
        return self.run.class_index(index, name)

    def fields(self) -> list:
        """Every stage's output shape, parameters and receptive field (``inspect.receptive_fields``)."""
        from convlens.inspect import receptive_fields

        if "fields" not in self.cache:
            with self.lock:
                self.cache["fields"] = receptive_fields(self.model)
        return self.cache["fields"]

    def stage_field(self, stage: str):
        """The receptive-field facts of one stage; an unknown name lists the valid ones."""
        for stage_field in self.fields():
            if stage_field.stage == stage:
                return stage_field
        names = ", ".join(f.stage for f in self.fields())
        raise ConvlensError(f"unknown stage {stage!r}; this model's stages are: {names}")

    def model_channels(self, stage: str) -> int:
        """How many channels (or units) stage ``stage`` outputs."""
        return int(self.stage_field(stage).output_shape[0])

    def test_split(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's test images (N, C, H, W) uint8 and labels (N,), loaded once on first use."""
        if self._test_split is not None:
            return self._test_split
        if self._test_error is not None:
            raise ConvlensError(self._test_error)
        with self.lock:
            if self._test_split is None and self._test_error is None:
                try:
                    dataset, _ = self.run.data()
                    self._test_split = (dataset.test_images, dataset.test_labels)
                except ConvlensError as exc:
                    self._test_error = f"test images of run {self.run_id!r} are not available: {exc}"
        return self.test_split()


def _run_id(path: Path, taken: set[str]) -> str:
    """A short URL-safe id from the folder name, unique among the loaded runs."""
    folder = path if path.is_dir() else path.parent
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.name).strip("-.") or "run"
    run_id, n = base, 2
    while run_id in taken:
        run_id, n = f"{base}-{n}", n + 1
    return run_id


class RunStore:
    """The loaded runs in command-line order; the first is what the page shows first."""

    def __init__(self, run_dirs: list[str | Path]) -> None:
        if not run_dirs:
            raise ConvlensError("give at least one run folder written by `convlens train`")
        self.runs: dict[str, LoadedRun] = {}
        for run_dir in run_dirs:
            run = Run.open(run_dir)
            if not hasattr(run.model, "stages"):
                raise ConvlensError(f"{run_dir}: model has no stages(); the explorer needs a StagedModel")
            run_id = _run_id(Path(run_dir), set(self.runs))
            self.runs[run_id] = LoadedRun(run_id, run)

    def get(self, run_id: str) -> LoadedRun:
        if run_id not in self.runs:
            raise RunNotFound(f"no run {run_id!r}; loaded runs: {', '.join(self.runs)}")
        return self.runs[run_id]

    def summaries(self) -> list[dict]:
        return [run_summary(run) for run in self.runs.values()]


def run_summary(run: LoadedRun) -> dict:
    """One line about a run, for the run switcher."""
    return {
        "id": run.run_id,
        "model": run.run.model_name,
        "dataset": run.run.dataset.get("name", ""),
        "input_shape": list(run.input_shape),
        "classes": len(run.class_names),
        "test_accuracy": run.run.test_accuracy,
    }
