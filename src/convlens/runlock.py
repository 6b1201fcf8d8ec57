"""One training per run folder: ``RUN_DIR/training.lock``, held with ``flock`` while training.

The kernel decides who holds the lock: ``acquire`` opens the file and takes an exclusive
``flock`` on it, and the kernel drops that lock the moment its holder exits, however it dies.
So a lock left by a killed training is free at once and taken over by locking the same file,
never by deleting it; a starter cannot delete a lock another starter just took, and two
starters racing over a stale lock (or over none) cannot both win. The file also holds the
writer's PID, host and start time, to name it in the refusal and for readers that only look.

A file whose writer did not ``flock`` it (an older convlens) is judged by its PID as before.
The lock is released when the ``with`` block ends, by any exception or KeyboardInterrupt too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from convlens.errors import ConvlensError, printable
from convlens.storage import fsync_dir, with_path

LOCK_NAME = "training.lock"
ATTEMPTS = 50  # opens of the lock file before giving up: each lost race costs one
BUSY_WAIT_S = 0.02  # a reader probing the lock holds it this briefly: wait it out before refusing

log = logging.getLogger("convlens")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except OSError:
        return False
    try:  # Linux: a killed child not yet reaped is a zombie, which no longer writes anything
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        if isinstance(started, int | float)
        else "?"
    )
    host = holder.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"pid {holder.get('pid', '?')}{where}, started {when}"


def _read_fd(fd: int) -> dict:
    """The holder written in an open lock file; {} when empty or unreadable."""
    try:
        raw = os.pread(fd, 4096, 0)
        holder = json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _try_flock(fd: int, mode: int) -> bool:
    """Take ``mode`` without waiting; False while another open file holds a conflicting lock."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _live_unlocked_holder(holder: dict) -> bool:
    """Whether a lock file nobody ``flock``s still belongs to a live training: only one written
    by an older convlens, which did not ``flock``, and whose process still runs."""
    if not holder or holder.get("flock"):
        return False  # empty, or its writer held it with flock and the kernel dropped it: gone
    if holder.get("host") not in (None, socket.gethostname()):
        return True  # another machine's process: it cannot be checked from here
    pid = holder.get("pid")
    return isinstance(pid, int) and pid_alive(pid)


def lock_holder(run_dir: str | Path) -> dict | None:
    """The holder of ``run_dir``'s lock while a live training holds it ({} if it has not yet
    written its name), else None. Only looks: probes with a shared lock for an instant."""
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        holder = _read_fd(fd)
        if not _try_flock(fd, fcntl.LOCK_SH):
            return holder
        return holder if _live_unlocked_holder(holder) else None
    finally:
        os.close(fd)  # also drops the probe's shared lock


def refuse_if_locked(run_dir: str | Path, parameter: str = "run_dir") -> None:
    """Fail early (before loading data) when a live training holds ``run_dir``; takes nothing."""
    holder = lock_holder(run_dir)
    if holder is not None:
        raise RunLock(run_dir, parameter)._busy(holder)


class RunLock:
    """``with RunLock(run_dir):`` hold the run folder for one training (creates the folder).

    A folder this lock created and that is still empty when it is released is removed again,
    so a training refused before writing anything leaves nothing behind.
    """

    def __init__(self, run_dir: str | Path, parameter: str = "run_dir") -> None:
        self.run_dir, self.parameter = Path(run_dir), parameter
        self.path = self.run_dir / LOCK_NAME
        self.held = False
        self.took_over = False  # True when a dead training's lock was found: it was interrupted
        self._fd: int | None = None
        self._created = False
        self._token = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "flock": True,  # readers: the kernel's lock, not this PID, says whether it is held
        }

    def _busy(self, holder: dict) -> ConvlensError:
        return ConvlensError(
            f"{self.parameter} {printable(self.run_dir)}: another training ({_describe(holder)}) is "
            f"writing here; wait for it to end, or remove {printable(self.path)} if that process is gone",
            parameter=self.parameter,
        )

    def _fail(self, error: BaseException) -> BaseException:
        self._cleanup_folder()
        return error

    def acquire(self) -> RunLock:
        if not self.run_dir.exists():
            self.run_dir.mkdir(parents=True)
            self._created = True
        for _ in range(ATTEMPTS):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError as exc:
                if self.run_dir.exists():
                    raise self._fail(with_path(exc, self.path)) from None
                self.run_dir.mkdir(parents=True, exist_ok=True)  # a releasing holder removed it
                self._created = True
                continue
            except OSError as exc:
                raise self._fail(with_path(exc, self.path)) from None
            try:
                if self._lock_this_file(fd):
                    self._fd, self.held = fd, True
                    return self
            except BaseException:
                os.close(fd)
                self._cleanup_folder()
                raise
            os.close(fd)  # the file was replaced or removed meanwhile: open the new one
        raise self._fail(
            ConvlensError(
                f"{self.parameter} {printable(self.run_dir)}: could not take the lock "
                f"{printable(self.path)} (another training keeps taking it)",
                parameter=self.parameter,
            )
        )

    def _lock_this_file(self, fd: int) -> bool:
        """Lock the opened file and write our name in it; False when the path no longer names
        this file (its holder released it, removing it, between our open and our lock)."""
        deadline = time.monotonic() + BUSY_WAIT_S
        while not _try_flock(fd, fcntl.LOCK_EX):
            if time.monotonic() >= deadline:
                raise self._busy(_read_fd(fd))
            time.sleep(0.005)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            same = False
        if not same:
            return False
        found = _read_fd(fd)
        if _live_unlocked_holder(found):
            raise self._busy(found)
        if found:
            log.warning(
                "%s: taking over the lock of a training that no longer runs (%s)",
                printable(self.run_dir),
                _describe(found),
            )
            self.took_over = True
        data = (json.dumps(self._token) + "\n").encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except OSError as exc:
            raise with_path(exc, self.path) from None
        fsync_dir(self.run_dir)
        return True

    def release(self) -> None:
        if not self.held or self._fd is None:
            return
        fd, self._fd, self.held = self._fd, None, False
        try:  # remove the file while still holding it, so no starter can lock a removed file
            if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)
        self._cleanup_folder()

    def _cleanup_folder(self) -> None:
        if self._created:
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()  # only when still empty

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
