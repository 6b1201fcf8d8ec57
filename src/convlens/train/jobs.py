"""Training jobs: a training started, stopped and followed while the caller goes on.

``start(TrainJob(data="digits", epochs=4), folder)`` trains in a child process that runs this
module's ``main`` (a library entry point, not the command line) on the serialized
``TrainConfig``. A child process keeps the caller responsive (training holds the cores and the
GIL for minutes) and makes stopping simple and safe: SIGINT stops it between two batches and
leaves ``last.*`` resumable, as Ctrl-C does for ``convlens train``; ``resume(folder)`` continues
such a training in a new child, as ``convlens train --resume`` does. The child runs in a session
of its own, so a Ctrl-C at the caller's terminal reaches the caller, which stops each job once.

A child that fails writes what went wrong as a record in the run folder (``job-error.json``:
message, parameter, kind), atomically; ``TrainingJob.outcome`` reads that record, never the
child's output. Messages name the request's fields (``batch_size must be ...``).

What a job has done so far is read from its run folder (``train.follow``), so a job and a
training started with ``convlens train`` in another terminal are followed the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from convlens.errors import ConvlensError
from convlens.process import THREADS_VARIABLE, set_threads, stop_on_sigint
from convlens.train.recipe import MAX_SEED, TrainConfig

MAX_EPOCHS = 100  # the recipe's own cap for small data sets: a job should not run for a day
MAX_BATCH_SIZE = 1024
MAX_LR = 10.0
STOP_WAIT_S = 15.0  # after SIGINT the child finishes its batch and exits; after this it is killed
ERROR_RECORD = "job-error.json"
INTERRUPTED = 130  # the child's exit code after SIGINT (128 + 2, as a shell reports it)
_DEFAULTS = TrainConfig()


def _limits(help: str, **bounds: float) -> dict:
    """A field's help and bounds, in JSON Schema's words (``minimum``, ``exclusiveMinimum``,
    ``maximum``): ``TrainJob.check`` enforces them and an HTTP face can publish them as they are."""
    return {"help": help, "bounds": bounds}


@dataclass(frozen=True)
class TrainJob:
    """What a training job trains: the data and the few ``TrainConfig`` settings a job may set.

    Each field's bounds are declared once, here (``dataclasses.fields(TrainJob)[i].metadata``);
    ``None`` leaves the choice to the recipe (``resolve_defaults``), as in ``TrainConfig``.
    """

    data: str = field(metadata=_limits("a built-in data set, e.g. digits"))  # from Python: a path too
    model: str = field(default=_DEFAULTS.model, metadata=_limits("a registered model"))
    epochs: int | None = field(
        default=_DEFAULTS.epochs,
        metadata=_limits("default: the recipe's choice for the data set", minimum=1, maximum=MAX_EPOCHS),
    )
    lr: float | None = field(
        default=_DEFAULTS.lr,
        metadata=_limits("peak learning rate (default: the recipe's)", exclusiveMinimum=0, maximum=MAX_LR),
    )
    batch_size: int | None = field(
        default=_DEFAULTS.batch_size,
        metadata=_limits("images per step (default: the recipe's)", minimum=1, maximum=MAX_BATCH_SIZE),
    )
    seed: int = field(
        default=_DEFAULTS.seed,
        metadata=_limits("initialization, shuffling and augmentation", minimum=0, maximum=MAX_SEED),
    )

    def check(self, paths: bool = True) -> None:
        """Raise a ConvlensError naming the first bad field. ``paths=False`` accepts built-in
        data set names only (a server must not let a client name a folder)."""
        from convlens.models import list_families

        _check_data(self.data, paths)
        if not isinstance(self.model, str) or self.model not in list_families():
            raise ConvlensError(
                f"model: unknown model {self.model!r}; choose one of: {', '.join(list_families())}",
                parameter="model",
            )
        _check_task(self.data, self.model)
        hints = typing.get_type_hints(TrainJob)
        for spec in dataclasses.fields(self):
            bounds = spec.metadata["bounds"]
            if bounds:  # a whole number unless its type admits a float
                whole = float not in (hints[spec.name], *typing.get_args(hints[spec.name]))
                _check_number(spec.name, getattr(self, spec.name), bounds, whole)

    def config(self) -> TrainConfig:
        """The ``TrainConfig`` this job trains with (everything it does not set: the defaults)."""
        values = {name: getattr(self, name) for name in ("model", "epochs", "lr", "batch_size", "seed")}
        return TrainConfig(**values)


def _check_task(data: str, model: str) -> None:
    """A model of the data's task: a segmentation model for masks, a classifier for labels. The
    default ``convnet`` stands for "the recipe's choice", a U-Net on masks (``train.recipe``)."""
    from convlens.data import spec_task
    from convlens.models import list_families, model_task

    task = spec_task(data)
    if model != "convnet" and model_task(model) != task:
        raise ConvlensError(
            f"model: {model} does {model_task(model)}, but {data} is {task} data; choose one of: "
            f"{', '.join(list_families(task))}",
            parameter="model",
        )


def _check_data(data: object, paths: bool) -> None:
    from convlens.data import DATASETS, is_builtin, list_datasets

    if isinstance(data, str) and is_builtin(data):
        facts = next(row for row in list_datasets() if row["name"] == data)
        if not facts["available"]:
            raise ConvlensError(f"data: {data} is not available here ({facts['hint']})", parameter="data")
        return
    if paths and isinstance(data, str) and data and Path(data).expanduser().exists():
        return
    where = " or the path of an image folder, IDX folder or .npz" if paths else ""
    raise ConvlensError(
        f"data: unknown data set {data!r}; choose one of: {', '.join(DATASETS.names())}{where}",
        parameter="data",
    )


def _check_number(name: str, value: object, bounds: dict, whole: bool) -> None:
    """``value`` is None or a number within JSON-Schema-style ``bounds``; else a ConvlensError."""
    if value is None:
        return
    low = bounds.get("minimum", bounds.get("exclusiveMinimum"))
    high = bounds["maximum"]
    kinds = int if whole else int | float
    fits = (
        isinstance(value, kinds)
        and not isinstance(value, bool)
        and (not isinstance(value, float) or math.isfinite(value))  # a huge int stays exact
        and (value > low if "exclusiveMinimum" in bounds else value >= low)
        and value <= high
    )
    if not fits:
        wanted = (
            f"a whole number {low}..{high}"
            if whole
            else f"a number in {'(' if 'exclusiveMinimum' in bounds else '['}{low:g}, {high:g}]"
        )
        raise ConvlensError(f"{name} must be {wanted}, got {value!r}", parameter=name)


Status = Literal["running", "finished", "stopped", "failed"]


@dataclass(frozen=True)
class JobOutcome:
    """How a job stands: running, or how it ended; ``resumable`` when a last epoch is saved.

    ``parameter`` names the request field a failure is about (None when it is about none)."""

    status: Status
    resumable: bool = False
    message: str = ""
    parameter: str | None = None

    def to_json(self) -> dict:
        """What a face shows: status, resumable and message."""
        return {"status": self.status, "resumable": self.resumable, "message": self.message}


@dataclass(frozen=True)
class JobError:
    """What the child writes to ``job-error.json`` when it fails: ``kind`` is ``bad_input``
    (a ConvlensError), ``os`` (no space, permissions) or ``internal`` (a bug)."""

    message: str
    parameter: str | None
    kind: Literal["bad_input", "os", "internal"]


def read_error(folder: Path) -> JobError | None:
    """The failure record a job's child left in ``folder``, if any (a damaged one: None)."""
    try:
        values = json.loads((folder / ERROR_RECORD).read_text())
        return JobError(str(values["message"]), values.get("parameter"), values["kind"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def has_finished(folder: Path) -> bool:
    """Whether the last training of ``folder`` finished: its final ``model.json`` is at least as
    new as ``last.json`` (a resumed and stopped again run has a newer ``last.json``)."""
    try:
        final = (folder / "model.json").stat().st_mtime_ns
    except OSError:
        return False
    try:
        return final >= (folder / "last.json").stat().st_mtime_ns
    except OSError:
        return True


def stopped_outcome(folder: Path) -> JobOutcome:
    """A training interrupted in ``folder``: resumable once its first epoch was saved."""
    resumable = (folder / "last.json").is_file()
    message = (
        "interrupted; it resumes from its last saved epoch"
        if resumable
        else "interrupted before its first epoch was saved"
    )
    return JobOutcome("stopped", resumable, message)


@dataclass
class TrainingJob:
    """One job's child process and run folder; ``stop`` and ``outcome`` as seen from the caller."""

    folder: Path
    process: subprocess.Popen
    stopping: bool = False  # a stop was asked for

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def outcome(self) -> JobOutcome:
        """Running, or how it ended: finished, stopped (resumable when a last epoch was saved)
        or failed (the child's record says why)."""
        code = self.process.poll()
        resumable = (self.folder / "last.json").is_file()
        if code is None:
            return JobOutcome("running", resumable)
        if code == 0 or (self.stopping and (self.folder / "model.json").is_file()):
            # a stop that lands after the final model.json was written ends nothing: it finished
            return JobOutcome("finished")
        if self.stopping:  # interrupted (or killed after STOP_WAIT_S)
            return stopped_outcome(self.folder)
        error = read_error(self.folder)
        if error is not None:
            return JobOutcome("failed", resumable, error.message, error.parameter)
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return JobOutcome("failed", resumable, f"the training process {how}")

    def interrupt(self) -> None:
        """SIGINT once, as Ctrl-C: a second one would land while the child handles the first."""
        if not self.stopping and self.running:
            self.stopping = True
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)

    def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """Interrupt and wait: the child saves nothing half-done and ``last.*`` stays resumable;
        one that has not ended after ``wait_s`` is killed (the checkpoints are atomic: a kill
        loses at most the epoch under way)."""
        if not self.running:
            return
        self.interrupt()
        try:
            self.process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(job: TrainJob, run_folder: str | Path, threads: int | None = None) -> TrainingJob:
    """Check ``job`` and start training it into ``run_folder`` in a child process.

    A bad field, a folder another training writes or a folder that cannot be written raise a
    ConvlensError here, before any child starts. ``threads``: the child's PyTorch CPU threads
    (several jobs at once should share the cores); None: CONVLENS_THREADS, else PyTorch's default.
    """
    job.check()
    config = job.config()
    config.check()
    return _spawn(Path(run_folder), job.data, config, resume=False, threads=threads)


class NotResumable(ConvlensError):
    """A run folder a job cannot resume; ``why`` says it in a few words (after the run's name)."""

    def __init__(self, folder: Path, why: str) -> None:
        super().__init__(f"run_folder {folder}: {why}", parameter="run_folder")
        self.why = why


def resumable_data(run_folder: str | Path, builtin_only: bool = False) -> str:
    """The data spec an interrupted training of ``run_folder`` resumes on (its ``last.json``'s);
    a NotResumable when it has finished, trains now, saved no epoch or cannot be resumed exactly.
    ``builtin_only``: a folder trained on a path is refused too (a server names no path)."""
    from convlens.data import is_builtin
    from convlens.runlock import lock_holder
    from convlens.train.resume_schema import check_resumable

    folder = Path(run_folder)
    if lock_holder(folder) is not None:
        raise NotResumable(folder, "is training now; stop it first or wait for it to end")
    if not (folder / "last.json").is_file():
        raise NotResumable(folder, "saved no epoch; there is nothing to resume (start a new training)")
    if has_finished(folder):
        raise NotResumable(folder, "has finished; there is nothing to resume")
    try:
        check_resumable(folder / "last.json")
        data = json.loads((folder / "last.json").read_text())["dataset"]["spec"]
    except (ConvlensError, OSError, ValueError, KeyError, TypeError) as exc:
        raise NotResumable(folder, f"cannot be resumed exactly: {exc}") from None
    if not isinstance(data, str) or (builtin_only and not is_builtin(data)):
        raise NotResumable(
            folder, "was trained on a data folder, not a built-in data set; resume it where it was started"
        )
    return data


def resume(run_folder: str | Path, threads: int | None = None, builtin_only: bool = False) -> TrainingJob:
    """Continue the interrupted training in ``run_folder`` from its last saved epoch in a child
    process, as ``convlens train --resume`` does: the saved schedule, seed and data, bit-exact
    (``last.*`` holds the weights, optimizer, schedule and random state). Refusals
    (``resumable_data``) are raised here, before any child starts."""
    folder = Path(run_folder)
    data = resumable_data(folder, builtin_only)
    return _spawn(folder, data, TrainConfig(), resume=True, threads=threads)  # the saved config wins


def _spawn(folder: Path, data: str, config: TrainConfig, resume: bool, threads: int | None) -> TrainingJob:
    """The child that trains (or resumes) ``config`` on ``data`` into ``folder``."""
    from convlens.runlock import refuse_if_locked
    from convlens.storage import preflight, remove_quietly

    refuse_if_locked(folder, parameter="run_folder")
    preflight(folder, parameter="run_folder")
    remove_quietly(folder / ERROR_RECORD)  # an earlier job's record is not this one's
    environment = dict(os.environ)
    if threads is not None:
        environment[THREADS_VARIABLE] = str(threads)
    process = subprocess.Popen(
        [sys.executable, "-c", "from convlens.train.jobs import main; main()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=environment,
        start_new_session=True,  # a Ctrl-C at the terminal reaches the caller, which stops each job once
    )
    spec = {"run_folder": str(folder), "data": data, "config": dataclasses.asdict(config), "resume": resume}
    with contextlib.suppress(BrokenPipeError):  # a child that died at once: its outcome says so
        process.stdin.write(json.dumps(spec).encode())
        process.stdin.close()
    return TrainingJob(folder, process)


def main() -> None:
    """The child's entry point: train the spec read from stdin; a failure becomes the record."""
    from convlens.storage import atomic_write, os_error_text

    stop_on_sigint()  # stopped with SIGINT even when the caller runs with SIGINT ignored
    spec = json.loads(sys.stdin.read())
    folder = Path(spec["run_folder"])
    try:
        set_threads(os.environ.get(THREADS_VARIABLE), THREADS_VARIABLE)
        _train(spec["data"], TrainConfig(**spec["config"]), folder, spec.get("resume", False))
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except Exception as exc:
        if isinstance(exc, ConvlensError):
            error = JobError(str(exc), exc.parameter, "bad_input")
        elif isinstance(exc, OSError):
            error = JobError(os_error_text(exc), None, "os")
        else:
            error = JobError(f"internal error: {type(exc).__name__}: {exc}", None, "internal")
        with contextlib.suppress(OSError):  # a folder that cannot be written: the exit code remains
            atomic_write(folder / ERROR_RECORD, json.dumps(dataclasses.asdict(error)).encode())
        if error.kind == "internal":
            raise  # a bug: its traceback goes to the inherited stderr
        sys.exit(2)


def _train(data: str, config: TrainConfig, folder: Path, resume: bool) -> None:
    from convlens.data import load_dataset
    from convlens.runlock import refuse_if_locked
    from convlens.train.fitting import fit

    config.check()
    refuse_if_locked(folder)  # a training that started in the folder since ``start`` looked
    try:
        dataset = load_dataset(data)
    except ConvlensError as exc:
        if exc.parameter is not None:
            raise
        raise ConvlensError(f"data: {exc}", parameter="data") from None
    fit(dataset, config, folder, resume=resume)
