"""Following a run folder while something trains into it: its epochs as typed events, whether a
training still writes there, and how it ended — read from the files ``fit`` writes, never from
the trainer.

Reading the folder (``metrics.jsonl``, ``training.lock``, ``model.json``/``last.json``) is what
lets a job started with ``train.jobs.start`` and a training started with ``convlens train`` in
another terminal be followed in exactly the same way.

``metrics.jsonl`` is read incrementally: a look at a folder whose file has not changed reads
nothing, and a new epoch costs the reading of its own line. ``fit`` replaces the file whole on
each save (atomically), and at the end adds ``selected`` to every row, which moves every line;
a training of the folder from its first epoch again replaces it with a shorter or different
history. ``MetricsReader`` tells these apart by the last epoch it gave out (a ``Restart`` only
for the second).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from convlens.runlock import LOCK_NAME, pid_alive
from convlens.train.jobs import (
    ERROR_RECORD,
    JobOutcome,
    TrainingJob,
    has_finished,
    read_error,
    stopped_outcome,
)

POLL_S = 0.25  # how often ``follow`` looks at the folder: a new epoch shows within a quarter second
MAX_METRICS_BYTES = 64 * 2**20  # a larger metrics.jsonl is no training's: it is not read


@dataclass(frozen=True)
class EpochEvent:
    """One epoch of the run: every value ``metrics.jsonl`` holds for it (NaN and infinity as
    None: a diverged epoch's loss), the epochs planned and whether a snapshot was saved."""

    epoch: int
    values: dict
    planned_epochs: int | None
    snapshot: bool

    @property
    def train_loss(self) -> float | None:
        return self.values.get("train_loss")

    @property
    def test_accuracy(self) -> float | None:
        return self.values.get("test_accuracy")

    def to_json(self) -> dict:
        return {**self.values, "epochs": self.planned_epochs, "snapshot": self.snapshot}


@dataclass(frozen=True)
class Restart:
    """The folder is being trained again from its first epoch: the epochs so far are void."""


@dataclass(frozen=True)
class Ended:
    """No training writes the folder any more: how the last one ended, after how many epochs."""

    outcome: JobOutcome
    epochs_done: int


FollowEvent = EpochEvent | Restart | Ended


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _row(line: bytes) -> dict | None:
    try:
        row = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if (
        not isinstance(row, dict)
        or isinstance(row.get("epoch"), bool)
        or not isinstance(row.get("epoch"), int)
    ):
        return None
    return {key: _finite(value) for key, value in row.items()}


def _same_epoch(row: dict) -> tuple:
    """What tells one epoch from another (the end of training adds ``selected`` to every row)."""
    return row.get("epoch"), row.get("train_loss"), row.get("test_loss")


class MetricsReader:
    """The rows of a folder's ``metrics.jsonl``, each given out once, read incrementally.

    It remembers where the last row it gave out ends (a byte offset) and which epoch that row
    was; while that row still stands at the same place the file only grew, and only what
    follows is read. Otherwise the file is read whole once: if its rows still include that
    epoch at the same position (``selected`` added), the rows after it are new; if not, the
    folder was trained again (``restarted``) and all its rows are new.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / "metrics.jsonl"
        self.count = 0  # rows given out
        self._signature: tuple | None = None  # the file as last read: inode, size, mtime
        # where the last row given out starts and ends in the file, and which epoch it is
        self._last: tuple[int, int, tuple] | None = None

    def read(self) -> tuple[bool, list[dict]]:
        """``(restarted, new rows)`` since the last call."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return False, []
        signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if signature == self._signature or stat.st_size > MAX_METRICS_BYTES:
            return False, []
        try:
            with open(self.path, "rb") as file:
                restarted, rows = self._read_from(file)
        except OSError:
            return False, []
        self._signature = signature
        return restarted, rows

    def _read_from(self, file) -> tuple[bool, list[dict]]:
        if self._last is None:  # nothing given out yet
            return False, self._rows(file, 0)
        start, end, key = self._last
        file.seek(start)
        line = file.read(end - start)
        row = _row(line) if line.endswith(b"\n") else None
        if row is not None and _same_epoch(row) == key:
            return False, self._rows(file, end)  # the file only grew
        file.seek(0)
        everything = self._lines(file, 0)
        if len(everything) >= self.count and _same_epoch(everything[self.count - 1][2]) == key:
            self._last = everything[self.count - 1][0], everything[self.count - 1][1], key  # lines moved
            return False, self._take(everything[self.count :])
        self.count, self._last = 0, None  # trained again: every row is new
        return True, self._take(everything)

    def _rows(self, file, offset: int) -> list[dict]:
        file.seek(offset)
        return self._take(self._lines(file, offset))

    @staticmethod
    def _lines(file, offset: int) -> list[tuple[int, int, dict]]:
        """Each complete line from ``offset`` that is an epoch's row: (start, end, row)."""
        found = []
        for line in file:
            start, offset = offset, offset + len(line)
            if not line.endswith(b"\n"):
                break  # a line still being written (not fit's, whose saves are whole files)
            row = _row(line)
            if row is not None:
                found.append((start, offset, row))
        return found

    def _take(self, lines: list[tuple[int, int, dict]]) -> list[dict]:
        if lines:
            start, end, row = lines[-1]
            self._last = start, end, _same_epoch(row)
            self.count += len(lines)
        return [row for _, _, row in lines]


def training_alive(folder: Path) -> bool:
    """Whether a live process on this machine holds the folder's ``training.lock``."""
    try:
        holder = json.loads((folder / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(holder, dict) or holder.get("host") not in (None, socket.gethostname()):
        return False
    pid = holder.get("pid")
    return isinstance(pid, int) and pid_alive(pid)


def folder_outcome(folder: Path) -> JobOutcome:
    """How the last training of a folder nobody here started ended: finished when ``model.json``
    is at least as new as ``last.json``; failed when a job's failure record is; else stopped
    (resumable when ``last.json`` exists)."""
    last = folder / "last.json"
    if has_finished(folder):
        return JobOutcome("finished")
    error = read_error(folder)
    if error is not None and _newer(folder / ERROR_RECORD, last):  # a job's child failed
        return JobOutcome("failed", last.is_file(), error.message, error.parameter)
    return stopped_outcome(folder)


def interrupted_at(folder: Path) -> int | None:
    """The last epoch saved by a training of ``folder`` that ended before its schedule did
    (stopped, killed or failed): where ``train.jobs.resume`` continues. None when the folder's
    training finished, still runs, or saved no epoch."""
    last = folder / "last.json"
    if not last.is_file() or has_finished(folder) or training_alive(folder):
        return None
    try:
        epoch = json.loads(last.read_text())["resume"]["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def _newer(path: Path, than: Path) -> bool:
    """``path`` exists and ``than`` does not, or is not newer."""
    try:
        written = path.stat().st_mtime_ns
    except OSError:
        return False
    try:
        return written >= than.stat().st_mtime_ns
    except OSError:
        return True


def planned_epochs(folder: Path) -> int | None:
    """The epochs the training was set up for (its checkpoint's training config), if one is saved."""
    for name in ("last.json", "model.json"):
        try:
            epochs = json.loads((folder / name).read_text())["training"]["epochs"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(epochs, int):
            return epochs
    return None


def snapshot_epochs(folder: Path) -> set[int]:
    """The epochs whose snapshots (``train.snapshots``) are saved in ``folder`` so far."""
    from convlens.errors import ConvlensError
    from convlens.train.snapshots import read_index

    try:
        return set(read_index(folder)["epochs"])
    except ConvlensError:
        return set()


class Follower:
    """One run folder followed by looking at it again and again (``poll``), each look short:
    a caller with an event loop runs each look on a worker thread and waits between them.

    With ``job`` the follower asks the job whether it runs and how it ended; without, the
    folder's ``training.lock`` and checkpoints tell (a training started anywhere else).
    """

    def __init__(self, folder: str | Path, job: TrainingJob | None = None) -> None:
        self.folder = Path(folder)
        self.job = job
        self.metrics = MetricsReader(self.folder)
        self.ended = False
        self._planned: int | None = None

    def running(self) -> bool:
        return self.job.running if self.job is not None else training_alive(self.folder)

    def outcome(self) -> JobOutcome:
        return self.job.outcome() if self.job is not None else folder_outcome(self.folder)

    def poll(self) -> list[FollowEvent]:
        """What happened since the last look: new epochs (a ``Restart`` first if the folder was
        trained again), and ``Ended`` once no training writes the folder (the last look)."""
        alive = self.running()  # asked before reading: the rows read after it include its last epoch
        restarted, rows = self.metrics.read()
        events: list[FollowEvent] = []
        if restarted:
            events.append(Restart())
            self._planned = None
        if rows:
            self._planned = self._planned or planned_epochs(self.folder)
            saved = snapshot_epochs(self.folder)
            events += [EpochEvent(row["epoch"], row, self._planned, row["epoch"] in saved) for row in rows]
        if not alive:
            events.append(Ended(self.outcome(), self.metrics.count))
            self.ended = True
        return events


def follow(
    folder: str | Path,
    job: TrainingJob | None = None,
    poll_s: float = POLL_S,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[FollowEvent]:
    """Every epoch of ``folder`` (those already done first) as it is written, then ``Ended``;
    a ``Restart`` when the folder is trained again from its first epoch meanwhile. ``stop``:
    asked between two looks, ends the iteration early when true."""
    follower = Follower(folder, job)
    while True:
        yield from follower.poll()
        if follower.ended or stop():
            return
        time.sleep(poll_s)
