"""Trainings started from the explorer: each one a ``convlens train`` child process.

A child process keeps the server responsive (training holds the cores and the GIL for minutes)
and gives stopping the command line's semantics for free: SIGINT makes ``convlens train`` stop
between two batches and leave ``last.*`` resumable. The child writes into a folder of the runs
dir named by the server (``RunStore.new_id``); nothing the client sends becomes a path. What a
training has done so far is read from its folder (``follow.py``), so a training started here and
one started with ``convlens train`` in another terminal are followed the same way.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from convlens.cli.app import SIGINT_VARIABLE
from convlens.errors import ConvlensError
from convlens.server.runs import RunStore

MAX_EPOCHS = 100  # the recipe's own cap for small data sets; a page should not start a day-long run
MAX_BATCH_SIZE = 1024
MAX_LR = 10.0
STOP_WAIT_S = 15.0  # after SIGINT: the child finishes its batch and exits; then it is killed
READ_OUT_WAIT_S = 5.0  # a child that ended: how long its error may take to be read from the pipe
KEPT_ENDED = 64  # ended trainings whose status the server still answers; older ones are runs on disk
PAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
OPTIONS = ("data", "model", "epochs", "lr", "batch_size", "seed", "page")


class TooManyTrainings(Exception):
    """As many trainings run as the server allows at once (answered with 429)."""


class NoRunsDir(Exception):
    """The explorer was started without a runs dir to write trainings into (answered with 409)."""


def default_at_once() -> int:
    """Trainings at once: one per two cores, at most 2 (each uses the cores it gets)."""
    return max(1, min(2, (os.cpu_count() or 2) // 2))


@dataclass
class TrainRequest:
    """What ``POST /api/train`` takes; ``check`` turns any bad value into one ConvlensError line."""

    data: str
    model: str = "convnet"
    epochs: int | None = None  # None: the recipe's default for the data set
    lr: float | None = None
    batch_size: int | None = None
    seed: int = 0
    page: str | None = None  # the page that asks: its second training replaces its first

    @classmethod
    def from_json(cls, body: bytes) -> TrainRequest:
        try:
            values = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # Recursion: nested too deep
            raise ConvlensError(f"body must be a JSON object ({exc})") from None
        if not isinstance(values, dict):
            raise ConvlensError('body must be a JSON object such as {"data": "digits", "epochs": 4}')
        unknown = sorted(set(values) - set(OPTIONS))
        if unknown:
            raise ConvlensError(f"unknown option {unknown[0]!r}; options are: {', '.join(OPTIONS)}")
        if "data" not in values:
            raise ConvlensError("data: choose a built-in data set, e.g. digits", parameter="data")
        request = cls(**values)
        request.check()
        return request

    def check(self) -> None:
        from convlens.data import BUILTINS, list_datasets
        from convlens.models import list_models

        if not isinstance(self.data, str) or self.data not in BUILTINS:
            raise ConvlensError(
                f"data: unknown data set {self.data!r}; choose one of: {', '.join(BUILTINS)}",
                parameter="data",
            )
        facts = next(row for row in list_datasets() if row["name"] == self.data)
        if not facts["available"]:
            raise ConvlensError(
                f"data: {self.data} is not available here ({facts['hint']})", parameter="data"
            )
        if not isinstance(self.model, str) or self.model not in list_models():
            raise ConvlensError(
                f"model: unknown model {self.model!r}; choose one of: {', '.join(list_models())}",
                parameter="model",
            )
        _whole("epochs", self.epochs, 1, MAX_EPOCHS, optional=True)
        _whole("batch_size", self.batch_size, 1, MAX_BATCH_SIZE, optional=True)
        _whole("seed", self.seed, 0, 2**63 - 1)
        if self.lr is not None and not (
            isinstance(self.lr, int | float)
            and not isinstance(self.lr, bool)
            and math.isfinite(self.lr)
            and 0 < self.lr <= MAX_LR
        ):
            raise ConvlensError(f"lr must be a number in (0, {MAX_LR:g}], got {self.lr!r}", parameter="lr")
        if self.page is not None and not (isinstance(self.page, str) and PAGE_ID.fullmatch(self.page)):
            raise ConvlensError("page must be 1-64 letters, digits, - or _", parameter="page")

    def command(self, folder: Path) -> list[str]:
        """The ``convlens train`` command line of this request, writing into ``folder``."""
        command = [sys.executable, "-m", "convlens", "train", "--data", self.data, "--model", self.model]
        for flag, value in (("--epochs", self.epochs), ("--lr", self.lr), ("--batch-size", self.batch_size)):
            if value is not None:
                command += [flag, str(value)]
        return [*command, "--seed", str(self.seed), "--out", str(folder), "--json"]


def _whole(name: str, value, low: int, high: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConvlensError(f"{name} must be a whole number {low}..{high}, got {value!r}", parameter=name)


@dataclass
class Training:
    """One child ``convlens train``: its run id and folder, process, page and how it ended."""

    run_id: str
    folder: Path
    process: subprocess.Popen
    page: str | None
    started: float = field(default_factory=time.time)
    stopping: bool = False  # a stop was asked for (DELETE, a newer training of its page, shutdown)
    errors: collections.deque = field(default_factory=lambda: collections.deque(maxlen=20), repr=False)
    read_out: threading.Event = field(default_factory=threading.Event, repr=False)  # stderr read to its end

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def outcome(self) -> dict:
        """How it ended: finished, stopped (resumable when a last epoch was saved) or failed."""
        code = self.process.poll()
        resumable = (self.folder / "last.json").is_file()
        if code is None:
            return {"status": "running", "resumable": resumable, "message": ""}
        if code == 0 or (self.stopping and (self.folder / "model.json").is_file()):
            # a stop that lands after the final model.json was written ends nothing: it finished
            return {"status": "finished", "resumable": False, "message": ""}
        self.read_out.wait(timeout=READ_OUT_WAIT_S)  # its last line (the error) may still be in the pipe
        said = [line for line in self.errors if line.startswith("convlens: error:")]
        message = (said or list(self.errors) or [f"convlens train exited with code {code}"])[-1]
        message = message.removeprefix("convlens: error: ")
        status = "stopped" if self.stopping else "failed"
        return {"status": status, "resumable": resumable, "message": message}

    def summary(self) -> dict:
        return {"id": self.run_id, "started": self.started, **self.outcome()}  # never the page id


class Trainings:
    """The explorer's child trainings: at most ``at_once`` running, one per page."""

    def __init__(self, store: RunStore, at_once: int | None = None) -> None:
        self.store = store
        self.at_once = at_once or default_at_once()
        self.trainings: dict[str, Training] = {}
        self.closing = threading.Event()  # set when the server stops: streams end, children stop
        self._lock = threading.Lock()

    def start(self, request: TrainRequest) -> Training:
        """Start ``request`` in a new folder of the runs dir; the page's running training stops first."""
        from convlens.storage import preflight

        if self.store.runs_dir is None:
            raise NoRunsDir("this explorer has no runs folder to train into; start it with a runs dir")
        with self._lock:  # shut_down takes it too: a child is started before it looks, or not at all
            if self.closing.is_set():
                raise TooManyTrainings("the explorer is stopping; no new trainings")
            replaced = [t for t in self.running() if request.page is not None and t.page == request.page]
            if len(self.running()) - len(replaced) >= self.at_once:
                raise TooManyTrainings(
                    f"{self.at_once} training(s) already running, the most this explorer runs at once; "
                    "wait for one to finish or stop it"
                )
            for training in replaced:
                self.stop(training)
            preflight(self.store.runs_dir, parameter=None)
            run_id = self.store.new_id(f"{request.data}-{request.model}")
            folder = self.store.follow(run_id)
            training = Training(run_id, folder, self._spawn(request.command(folder)), request.page)
            self._remember(training)
        threading.Thread(target=self._collect, args=(training,), daemon=True, name=f"train-{run_id}").start()
        return training

    def _remember(self, training: Training) -> None:
        """Add a training; forget the oldest ended ones past ``KEPT_ENDED`` (their runs stay on disk)."""
        ended = [run_id for run_id, known in self.trainings.items() if not known.running]
        forget = set(ended[: max(0, len(ended) - KEPT_ENDED)])
        kept = {run_id: known for run_id, known in self.trainings.items() if run_id not in forget}
        self.trainings = {**kept, training.run_id: training}  # replaced: readers iterate unlocked

    def _spawn(self, command: list[str]) -> subprocess.Popen:
        environment = {**os.environ, SIGINT_VARIABLE: "1"}  # stop() works though this server ignores SIGINT
        if self.at_once > 1:  # share the cores instead of each child taking all of them
            environment["CONVLENS_THREADS"] = str(max(1, (os.cpu_count() or 2) // self.at_once))
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=environment,
            start_new_session=True,  # a Ctrl-C at the terminal reaches the server, which stops each child once
        )

    def _collect(self, training: Training) -> None:
        """Keep the last lines the child prints (its error, if any) until it exits."""
        for line in training.process.stderr:
            if line.strip():
                training.errors.append(line.strip())
        training.read_out.set()
        training.process.wait()
        self.store.refresh(force=True)  # a finished run joins the runs before the page asks

    def running(self) -> list[Training]:
        return [t for t in self.trainings.values() if t.running]

    def get(self, run_id: str) -> Training | None:
        return self.trainings.get(run_id)

    def stop(self, training: Training, wait_s: float = STOP_WAIT_S) -> None:
        """SIGINT, as Ctrl-C would: the child saves nothing half-done and ``last.*`` stays resumable."""
        if not training.running:
            return
        self._interrupt(training)
        try:
            training.process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            training.process.kill()  # the checkpoints are atomic: a kill loses at most the epoch under way
            training.process.wait()

    def _interrupt(self, training: Training) -> None:
        """SIGINT once: a second one would land while the child handles the first (Ctrl-C twice)."""
        if not training.stopping:
            training.stopping = True
            with contextlib.suppress(ProcessLookupError):
                training.process.send_signal(signal.SIGINT)

    def close(self) -> None:
        """The server stops: end the event streams and ask every child to stop (without waiting)."""
        self.closing.set()
        for training in self.running():
            self._interrupt(training)

    def shut_down(self) -> None:
        """Stop every child and wait for them (the server's last step)."""
        self.close()
        with self._lock:  # a start under way spawns its child first; later ones see ``closing``
            trainings = list(self.trainings.values())
        for training in trainings:
            self.stop(training)
