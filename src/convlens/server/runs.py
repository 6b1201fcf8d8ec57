"""The runs the explorer serves: each trained checkpoint loaded once, switchable by id.

A run given on the command line is loaded when the server starts (a broken run folder should
fail ``convlens serve`` at once, not on the first click); its test images are loaded on first
use, because the page works without them (draw, upload) and some data sets take seconds to
parse. While serving, ``RunStore.refresh`` follows the folders: a checkpoint written again is
reloaded, and a new folder in the runs dir (a training started from the page, or by
``convlens train``) is followed from its first epoch and loaded once it is finished.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from convlens.errors import ConvlensError
from convlens.run import Run

log = logging.getLogger("convlens")


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


FOLDER_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # a runs-dir folder name that is its own id
REFRESH_S = 1.0  # look at the folders at most this often: new epochs and runs show within ~2 s


def _signature(path: Path) -> tuple | None:
    """What changes when a checkpoint is committed again: save_checkpoint renames a new JSON in,
    then its tensors. Both count, so a load that raced a save (the JSON new, its tensors not yet
    in place) is tried again once the save has finished, not skipped until the next save."""
    try:
        stat = path.stat()
    except OSError:
        return None
    try:
        tensors = path.with_suffix(".safetensors").stat()
    except OSError:
        return stat.st_mtime_ns, stat.st_size, None
    return stat.st_mtime_ns, stat.st_size, (tensors.st_mtime_ns, tensors.st_size)


class RunStore:
    """The runs the explorer serves, in command-line order, then the runs dir's folders by name.

    It follows its folders while serving (``refresh``): a folder given on the command line is
    reloaded when its checkpoint is written again, and every folder of ``runs_dir`` (where the
    explorer's own trainings go) is followed too: it is listed by ``folders`` from its first file
    on (for its training's events and snapshots), and joins ``runs`` once its ``model.json``
    exists. A folder of ``runs_dir`` that cannot be loaded is skipped with a warning.
    """

    def __init__(self, run_dirs: list[str | Path], runs_dir: str | Path | None = None) -> None:
        if not run_dirs and runs_dir is None:
            raise ConvlensError("give at least one run folder written by `convlens train`")
        self.runs_dir = Path(runs_dir) if runs_dir is not None else None
        self.runs: dict[str, LoadedRun] = {}  # replaced, never changed in place: readers need no lock
        self._folders: dict[str, Path] = {}  # every followed run folder, loaded or still training
        self._sources: dict[str, Path] = {}  # what was given for each loaded run (folder or .json)
        self._seen: dict[str, tuple | None] = {}  # the checkpoint signature each run was loaded at
        self._lock = threading.Lock()
        self._refreshed = 0.0
        for run_dir in run_dirs:
            run = Run.open(run_dir)
            run_id = _run_id(Path(run_dir), set(self.runs))
            self._add(run_id, Path(run_dir), run)
        self.refresh(force=True)

    def _add(self, run_id: str, source: Path, run: Run) -> None:
        if not hasattr(run.model, "stages"):
            raise ConvlensError(f"{source}: model has no stages(); the explorer needs a StagedModel")
        self._sources[run_id] = source
        self._folders = {**self._folders, run_id: run.folder}
        self._seen[run_id] = _signature(self._watched(run_id, run))
        self.runs = {**self.runs, run_id: LoadedRun(run_id, run)}

    def _watched(self, run_id: str, run: Run | None = None) -> Path:
        """The checkpoint JSON whose change means a new model: model.json of a folder (once it
        exists), else the file the run was loaded from."""
        source = self._sources.get(run_id, self._folders.get(run_id))
        if source is not None and source.is_dir() and (source / "model.json").exists():
            return source / "model.json"
        if run is None:
            run = self.runs[run_id].run if run_id in self.runs else None
        return run.checkpoint if run is not None else self._folders[run_id] / "model.json"

    def refresh(self, force: bool = False) -> None:
        """Pick up new run folders in ``runs_dir`` and checkpoints written since the last look."""
        now = time.monotonic()
        if not force and now - self._refreshed < REFRESH_S:
            return
        with self._lock:
            self._refreshed = now
            self._scan_runs_dir()
            for run_id in list(self._folders):
                watched = self._watched(run_id)
                signature = _signature(watched)
                if signature is None or signature == self._seen.get(run_id):
                    continue
                self._seen[run_id] = signature
                try:
                    run = Run.open(self._sources.get(run_id, watched))
                    self._add(run_id, self._sources.get(run_id, self._folders[run_id]), run)
                except (ConvlensError, OSError) as exc:
                    log.warning("%s: not loaded: %s", self._folders[run_id], exc)

    def _scan_runs_dir(self) -> None:
        if self.runs_dir is None or not self.runs_dir.is_dir():
            return
        known = {folder.resolve() for folder in self._folders.values()}
        for folder in sorted(self.runs_dir.iterdir()):
            if folder.is_dir() and not folder.name.startswith(".") and folder.resolve() not in known:
                self._folders = {**self._folders, _run_id(folder, set(self._folders)): folder}

    def follow(self, run_id: str) -> Path:
        """A new folder of ``runs_dir`` for a training the explorer starts (``new_id`` named it)."""
        assert self.runs_dir is not None and FOLDER_ID.fullmatch(run_id)
        with self._lock:
            self._folders = {**self._folders, run_id: self.runs_dir / run_id}
        return self._folders[run_id]

    def new_id(self, base: str) -> str:
        """An id for a new run folder in ``runs_dir``: ``base``, else ``base-2``, ``base-3``, ..."""
        assert self.runs_dir is not None
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.")[:80] or "run"
        run_id, n = base, 2
        while run_id in self._folders or (self.runs_dir / run_id).exists():
            run_id, n = f"{base}-{n}", n + 1
        return run_id

    def folder(self, run_id: str) -> Path:
        """The folder of a followed run (loaded or still training); an unknown id is RunNotFound."""
        self.refresh()
        if run_id not in self._folders:
            raise RunNotFound(f"no run {run_id!r}; runs: {', '.join(self._folders) or 'none yet'}")
        return self._folders[run_id]

    def folders(self) -> dict[str, Path]:
        """Every followed run folder by id: the loaded runs and those still training."""
        self.refresh()
        return dict(self._folders)

    def get(self, run_id: str) -> LoadedRun:
        runs = self.runs
        if run_id not in runs:
            self.refresh()
            runs = self.runs
        if run_id not in runs:
            raise RunNotFound(f"no run {run_id!r}; loaded runs: {', '.join(runs) or 'none yet'}")
        return runs[run_id]

    def summaries(self) -> list[dict]:
        self.refresh()
        return [run_summary(run) for run in self.runs.values()]


def run_summary(run: LoadedRun) -> dict:
    """One line about a run, for the run switcher."""
    return {
        "id": run.run_id,
        "task": run.run.task,
        "model": run.run.model_name,
        "dataset": run.run.dataset.get("name", ""),
        "input_shape": list(run.input_shape),
        "classes": len(run.class_names),
        "test_accuracy": run.run.test_accuracy,
    }
