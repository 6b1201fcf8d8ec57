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


class RunNotFound(ConvlensError):
    """A request named a run the server has not loaded (answered with 404)."""


@dataclass
class LoadedRun:
    """One trained model, its checkpoint metadata and (lazily) its test split."""

    run_id: str
    model: torch.nn.Module
    meta: dict
    # Hooks and gradients touch the shared model, so explanations run one at a time per run.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    cache: dict = field(default_factory=dict, repr=False)  # results that never change, e.g. the card
    _test_split: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    _test_error: str | None = field(default=None, repr=False)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.meta["input_shape"])  # type: ignore[return-value]

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def check_class(self, index: int | None, name: str = "target") -> int | None:
        """A class index from a request, or None; names the valid range when it is out of it."""
        if index is None:
            return None
        if not 0 <= index < len(self.class_names):
            raise ConvlensError(f"{name} must be a class index 0..{len(self.class_names) - 1}, got {index}")
        return int(index)

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
                    self._test_split = _load_test_split(self.meta)
                except ConvlensError as exc:
                    self._test_error = f"test images of run {self.run_id!r} are not available: {exc}"
        return self.test_split()


def _load_test_split(meta: dict) -> tuple[torch.Tensor, torch.Tensor]:
    from convlens.checkpoint import checkpoint_data

    dataset, _ = checkpoint_data(meta)
    return dataset.test_images, dataset.test_labels


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
        from convlens.checkpoint import load_checkpoint

        if not run_dirs:
            raise ConvlensError("give at least one run folder written by `convlens train`")
        self.runs: dict[str, LoadedRun] = {}
        for run_dir in run_dirs:
            model, meta = load_checkpoint(run_dir)
            if not hasattr(model, "stages"):
                raise ConvlensError(f"{run_dir}: model has no stages(); the explorer needs a StagedModel")
            run_id = _run_id(Path(run_dir), set(self.runs))
            self.runs[run_id] = LoadedRun(run_id, model, meta)

    def get(self, run_id: str) -> LoadedRun:
        if run_id not in self.runs:
            raise RunNotFound(f"no run {run_id!r}; loaded runs: {', '.join(self.runs)}")
        return self.runs[run_id]

    def summaries(self) -> list[dict]:
        return [run_summary(run) for run in self.runs.values()]


def run_summary(run: LoadedRun) -> dict:
    """One line about a run, for the run switcher."""
    metrics = run.meta.get("metrics") or {}
    return {
        "id": run.run_id,
        "model": run.meta["model"]["name"],
        "dataset": (run.meta.get("dataset") or {}).get("name", ""),
        "input_shape": list(run.input_shape),
        "classes": len(run.class_names),
        "test_accuracy": metrics.get("test_accuracy"),
    }
