"""The run lock under concurrent starters: never two holders, however the starts interleave.

Four processes start at once on one folder, again and again: over a stale lock (a dead
training's, in each of the forms one can be left) and over none. Each winner keeps the lock
until every starter has tried, so two successful ``acquire`` calls in one trial are two holders.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convlens import runlock
from convlens.errors import ConvlensError
from convlens.runlock import LOCK_NAME, RunLock, refuse_if_locked

STARTERS = 4
TRIALS = 200  # per case: a stale lock, and none
WON, REFUSED, BROKE = 1, 0, -1


def _starter(run_dir: str, trials: int, index: int, start, tried, released, outcomes) -> None:
    """One starter: in each trial, try to take the lock; a winner holds it until all have tried."""
    for trial in range(trials):
        start.wait(timeout=30)
        lock = RunLock(run_dir)
        try:
            lock.acquire()
            outcome = WON
        except ConvlensError:
            outcome = REFUSED
        except Exception:  # e.g. a starter that lost its lock file to another: it broke
            outcome = BROKE
        outcomes[trial * STARTERS + index] = outcome
        tried.wait(timeout=30)
        if outcome == WON:
            lock.release()
        released.wait(timeout=30)


def _dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


def _stale_lock(run: Path, trial: int, dead: int) -> None:
    """A dead training's lock, in turn: an older convlens's (PID only), a flock writer's naming
    a dead PID, a flock writer's naming a live unrelated PID, and an empty one (killed between
    creating and writing it)."""
    holders = [
        {"pid": dead, "host": os.uname().nodename, "started": time.time()},
        {"pid": dead, "host": os.uname().nodename, "started": time.time(), "flock": True},
        {"pid": os.getppid(), "host": os.uname().nodename, "started": time.time(), "flock": True},
        None,
    ]
    holder = holders[trial % len(holders)]
    (run / LOCK_NAME).write_text("" if holder is None else json.dumps(holder))


def _race(run: Path, trials: int, stale: bool) -> list[list[int]]:
    context = multiprocessing.get_context("fork")
    start, tried, released = (context.Barrier(STARTERS + 1) for _ in range(3))
    outcomes = context.Array("b", trials * STARTERS)
    workers = [
        context.Process(target=_starter, args=(str(run), trials, index, start, tried, released, outcomes))
        for index in range(STARTERS)
    ]
    for worker in workers:
        worker.start()
    dead = _dead_pid()
    try:
        for trial in range(trials):
            if stale:
                _stale_lock(run, trial, dead)
            else:
                assert not (run / LOCK_NAME).exists()  # the last winner removed its lock
            start.wait(timeout=30)
            tried.wait(timeout=30)
            released.wait(timeout=30)
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    return [list(outcomes[t * STARTERS : (t + 1) * STARTERS]) for t in range(trials)]


@pytest.mark.parametrize("stale", [True, False], ids=["stale-lock", "no-lock"])
def test_concurrent_starters_never_both_hold_the_lock(tmp_path, stale):
    run = tmp_path / "run"
    run.mkdir()
    began = time.monotonic()
    results = _race(run, TRIALS, stale)
    assert time.monotonic() - began < 60
    broken = [t for t, trial in enumerate(results) if BROKE in trial]
    assert broken == [], f"starters broke in trials {broken[:10]}"
    holders = [sum(outcome == WON for outcome in trial) for trial in results]
    assert [t for t, count in enumerate(holders) if count != 1] == [], holders
    assert not (run / LOCK_NAME).exists()


def test_a_killed_holder_frees_the_lock_at_once(tmp_path, caplog):
    """The kernel drops a killed holder's flock: its lock is stale even while its PID lives on
    as someone else's (a reused PID) — here, a live process that never locked anything."""
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from convlens.runlock import RunLock; RunLock(sys.argv[1]).acquire();"
            " print('held', flush=True); time.sleep(60)",
            str(run),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConvlensError, match=rf"another training \(pid {holder.pid},"):
            refuse_if_locked(run)
        with pytest.raises(ConvlensError, match="another training"):
            RunLock(run).acquire()
        assert runlock.lock_holder(run)["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()
    assert runlock.lock_holder(run) is None
    refuse_if_locked(run)  # passes: nobody holds it
    with RunLock(run) as lock:
        assert lock.took_over
        assert "taking over the lock of a training that no longer runs" in caplog.text


def test_a_live_unlocked_lock_of_an_older_convlens_is_respected(tmp_path):
    """An older convlens wrote only its PID and never flocked: a live PID still means busy."""
    run = tmp_path / "run"
    run.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / LOCK_NAME).write_text(
            json.dumps({"pid": sleeper.pid, "host": os.uname().nodename, "started": time.time()})
        )
        with pytest.raises(ConvlensError, match=rf"another training \(pid {sleeper.pid},"):
            RunLock(run).acquire()
        assert (run / LOCK_NAME).exists()  # left alone
    finally:
        sleeper.kill()
        sleeper.wait()
