"""One training per run folder: ``RUN_DIR/training.lock`` holds the writer's PID, host and start.

A second ``fit`` into a folder whose lock belongs to a live process is refused with a
ConvlensError naming that process; a lock left by a process that no longer runs (killed, the
machine rebooted) is taken over with a warning. The lock is released when the ``with`` block
ends, by any exception or KeyboardInterrupt too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path

from convlens.errors import ConvlensError, printable
from convlens.storage import fsync_dir, remove_quietly, with_path

LOCK_NAME = "training.lock"

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


def _read(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def refuse_if_locked(run_dir: str | Path, parameter: str = "run_dir") -> None:
    """Fail early (before loading data) when a live training holds ``run_dir``; takes nothing."""
    path = Path(run_dir) / LOCK_NAME
    try:
        holder = _read(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    lock = RunLock(run_dir, parameter)
    if not lock._stale(holder):
        raise lock._busy(holder)


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
        self._created = False
        self._token = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}

    def _stale(self, holder: dict) -> bool:
        if not holder:
            return True  # empty or unreadable: its writer died between creating and writing it
        if holder.get("host") not in (None, socket.gethostname()):
            return False  # another machine's process: it cannot be checked from here
        pid = holder.get("pid")
        return not isinstance(pid, int) or not pid_alive(pid)

    def _busy(self, holder: dict) -> ConvlensError:
        return ConvlensError(
            f"{self.parameter} {printable(self.run_dir)}: another training ({_describe(holder)}) is "
            f"writing here; wait for it to end, or remove {printable(self.path)} if that process is gone",
            parameter=self.parameter,
        )

    def acquire(self) -> RunLock:
        if not self.run_dir.exists():
            self.run_dir.mkdir(parents=True)
            self._created = True
        data = (json.dumps(self._token) + "\n").encode()
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    holder = _read(self.path)
                except FileNotFoundError:
                    continue  # released meanwhile: try again
                if not self._stale(holder):
                    self._cleanup_folder()
                    raise self._busy(holder) from None
                log.warning(
                    "%s: taking over the lock of a training that no longer runs (%s)",
                    printable(self.run_dir),
                    _describe(holder) if holder else "unreadable lock file",
                )
                remove_quietly(self.path)
                self.took_over = True
                continue
            except OSError as exc:
                self._cleanup_folder()
                raise with_path(exc, self.path) from None
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
            except BaseException:
                remove_quietly(self.path)
                self._cleanup_folder()
                raise
            fsync_dir(self.run_dir)
            self.held = True
            return self
        raise ConvlensError(
            f"{self.parameter} {self.run_dir}: could not take the lock {self.path} (another training "
            "keeps taking it)",
            parameter=self.parameter,
        )

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            holder = _read(self.path)
        except FileNotFoundError:
            holder = None
        if (
            holder
            and holder.get("pid") == self._token["pid"]
            and holder.get("started") == self._token["started"]
        ):
            remove_quietly(self.path)
        self._cleanup_folder()

    def _cleanup_folder(self) -> None:
        if self._created:
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()  # only when still empty

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
