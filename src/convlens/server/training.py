"""The explorer's trainings: jobs of ``convlens.train.jobs``, at most ``at_once`` running, one
per page, each in a new folder of the runs dir (or resuming a stopped one in its own folder).

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException

from convlens.server.runs import RunStore
from convlens.server.streams import TooManyTrainings
from convlens.train.jobs import (
    STOP_WAIT_S,
    NotResumable,
    TrainingJob,
    TrainJob,
    resumable_data,
    resume,
    start,
)

KEPT_ENDED = 64  # ended trainings whose status the server still answers; older ones are runs on disk


class NoRunsDir(HTTPException):
    """The explorer was started without a runs dir to write trainings into: 409."""

    def __init__(self) -> None:
        super().__init__(409, "this explorer has no runs folder to train into; start it with a runs dir")


class CannotResume(HTTPException):
    """A run whose training cannot be resumed here (finished, training, no epoch saved): 409."""

    def __init__(self, run_id: str, why: str) -> None:
        super().__init__(409, f"run {run_id!r} {why}")


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

        def begin() -> tuple[str, TrainingJob]:
            run_id = self.store.new_id(f"{job.data}-{job.model}")
            return run_id, self._start(job, self.store.follow(run_id))

        return self._launch(page, lambda: None, begin)

    def resume(self, run_id: str, page: str | None = None) -> Training:
        """Continue the stopped training of ``run_id`` in its own folder from its last saved epoch
        (``train.jobs.resume``), under the same limits as ``start``: one per page, ``at_once``.
        A run that has finished, trains now or saved no epoch is a 409 (``CannotResume``)."""
        if self.store.runs_dir is None:
            raise NoRunsDir()
        folder = self.store.folder(run_id)  # an unknown id: RunNotFound (404)

        def check() -> None:  # before the page's running training is stopped for it
            known = self.trainings.get(run_id)
            if known is not None and known.running:
                raise CannotResume(run_id, "is training now; stop it first or wait for it to end")
            try:
                resumable_data(folder, builtin_only=True)
            except NotResumable as exc:
                raise CannotResume(run_id, exc.why) from None

        def begin() -> tuple[str, TrainingJob]:
            try:
                return run_id, self._resume(folder)
            except NotResumable as exc:  # changed since ``check`` looked
                raise CannotResume(run_id, exc.why) from None

        return self._launch(page, check, begin)

    def _launch(
        self, page: str | None, check: Callable[[], None], begin: Callable[[], tuple[str, TrainingJob]]
    ) -> Training:
        """``check``, make room (``page``'s running training stops; at most ``at_once``), then
        ``begin`` the job; a thread collects it when it ends."""
        with self._lock:  # shut_down takes it too: a job is started before it looks, or not at all
            if self.closing.is_set():
                raise TooManyTrainings("the explorer is stopping; no new trainings")
            check()
            replaced = [t for t in self.running() if page is not None and t.page == page]
            if len(self.running()) - len(replaced) >= self.at_once:
                raise TooManyTrainings(
                    f"{self.at_once} training(s) already running, the most this explorer runs at once; "
                    "wait for one to finish or stop it"
                )
            for training in replaced:
                training.job.stop()
            run_id, job = begin()
            training = Training(run_id, job, page)
            self._remember(training)
        threading.Thread(target=self._collect, args=(training,), daemon=True, name=f"train-{run_id}").start()
        return training

    def _threads(self) -> int | None:
        """Each child's share of the cores when several may run at once."""
        return max(1, (os.cpu_count() or 2) // self.at_once) if self.at_once > 1 else None

    def _start(self, job: TrainJob, folder: Path) -> TrainingJob:
        return start(job, folder, threads=self._threads())

    def _resume(self, folder: Path) -> TrainingJob:
        return resume(folder, threads=self._threads(), builtin_only=True)

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
