"""The explorer's trainings: jobs of ``convlens.train.jobs``, at most ``at_once`` running, one
per page, each in a new folder of the runs dir.

The library starts, stops and judges each job (a child process, stopped with SIGINT, failures
recorded in its run folder); what is left here is the explorer's own bookkeeping: which page
started which training, how many run at once and how the cores are shared among them, and
which ended trainings it still answers for. The folder is named by the server
(``RunStore.new_id``); nothing the client sends becomes a path.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException

from convlens.server.runs import RunStore
from convlens.server.streams import TooManyTrainings
from convlens.train.jobs import STOP_WAIT_S, TrainingJob, TrainJob, start

KEPT_ENDED = 64  # ended trainings whose status the server still answers; older ones are runs on disk


class NoRunsDir(HTTPException):
    """The explorer was started without a runs dir to write trainings into: 409."""

    def __init__(self) -> None:
        super().__init__(409, "this explorer has no runs folder to train into; start it with a runs dir")


def default_at_once() -> int:
    """Trainings at once: one per two cores, at most 2 (each uses the cores it gets)."""
    return max(1, min(2, (os.cpu_count() or 2) // 2))


@dataclass
class Training:
    """One training of the explorer: its run id, its job and the page that started it."""

    run_id: str
    job: TrainingJob
    page: str | None
    started: float = field(default_factory=time.time)

    @property
    def folder(self) -> Path:
        return self.job.folder

    @property
    def running(self) -> bool:
        return self.job.running

    def summary(self) -> dict:
        return {"id": self.run_id, "started": self.started, **self.job.outcome().to_json()}  # no page id


class Trainings:
    """The explorer's trainings: at most ``at_once`` running, one per page."""

    def __init__(self, store: RunStore, at_once: int | None = None) -> None:
        self.store = store
        self.at_once = at_once or default_at_once()
        self.trainings: dict[str, Training] = {}
        self.closing = threading.Event()  # set when the server stops: streams end, jobs stop
        self._lock = threading.Lock()

    def start(self, job: TrainJob, page: str | None = None) -> Training:
        """Start ``job`` in a new folder of the runs dir; ``page``'s running training stops first."""
        if self.store.runs_dir is None:
            raise NoRunsDir()
        job.check(paths=False)  # a bad field: a ConvlensError naming it, before anything stops
        with self._lock:  # shut_down takes it too: a job is started before it looks, or not at all
            if self.closing.is_set():
                raise TooManyTrainings("the explorer is stopping; no new trainings")
            replaced = [t for t in self.running() if page is not None and t.page == page]
            if len(self.running()) - len(replaced) >= self.at_once:
                raise TooManyTrainings(
                    f"{self.at_once} training(s) already running, the most this explorer runs at once; "
                    "wait for one to finish or stop it"
                )
            for training in replaced:
                training.job.stop()
            run_id = self.store.new_id(f"{job.data}-{job.model}")
            folder = self.store.follow(run_id)
            training = Training(run_id, self._start(job, folder), page)
            self._remember(training)
        threading.Thread(target=self._collect, args=(training,), daemon=True, name=f"train-{run_id}").start()
        return training

    def _start(self, job: TrainJob, folder: Path) -> TrainingJob:
        """The job's child, sharing the cores with the others when several may run at once."""
        threads = max(1, (os.cpu_count() or 2) // self.at_once) if self.at_once > 1 else None
        return start(job, folder, threads=threads)

    def _remember(self, training: Training) -> None:
        """Add a training; forget the oldest ended ones past ``KEPT_ENDED`` (their runs stay on disk)."""
        ended = [run_id for run_id, known in self.trainings.items() if not known.running]
        forget = set(ended[: max(0, len(ended) - KEPT_ENDED)])
        kept = {run_id: known for run_id, known in self.trainings.items() if run_id not in forget}
        self.trainings = {**kept, training.run_id: training}  # replaced: readers iterate unlocked

    def _collect(self, training: Training) -> None:
        """Wait for the job to end; a finished run joins the runs before the page asks."""
        training.job.process.wait()
        self.store.refresh(force=True)

    def running(self) -> list[Training]:
        return [t for t in self.trainings.values() if t.running]

    def get(self, run_id: str) -> Training | None:
        return self.trainings.get(run_id)

    def stop(self, training: Training, wait_s: float = STOP_WAIT_S) -> None:
        """SIGINT, as Ctrl-C would: the child saves nothing half-done and ``last.*`` stays resumable."""
        training.job.stop(wait_s)

    def close(self) -> None:
        """The server stops: end the event streams and ask every job to stop (without waiting)."""
        self.closing.set()
        for training in self.running():
            training.job.interrupt()

    def shut_down(self) -> None:
        """Stop every job and wait for them (the server's last step)."""
        self.close()
        with self._lock:  # a start under way starts its job first; later ones see ``closing``
            trainings = list(self.trainings.values())
        for training in trainings:
            training.job.stop()
