"""Following a run folder while something trains into it: its epochs so far, whether a training
still writes there, and how it ended — read from the files ``fit`` writes, never from the trainer.

Reading the folder (``metrics.jsonl``, ``training.lock``, ``model.json``/``last.json``) is what
lets the explorer follow a training it started and one started with ``convlens train`` in
another terminal in exactly the same way. ``epoch_events`` turns that into a server-sent event
stream: one ``data: {json}`` event per epoch, then one with ``"done": true`` (and one with
``"restart": true`` when the folder is trained again from its first epoch meanwhile).
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from convlens.runlock import LOCK_NAME, pid_alive

POLL_S = 0.25  # how often a stream looks at the folder: a new epoch shows within a quarter second
KEEP_ALIVE_S = 15.0  # an SSE comment line this often, so proxies keep an idle stream open
MAX_METRICS_BYTES = 64 * 2**20


def _finite(value):
    """NaN and infinity are not JSON: a diverged epoch's loss travels as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def read_epochs(folder: Path) -> list[dict]:
    """The epochs ``metrics.jsonl`` lists so far (written whole by each save; [] before the first)."""
    try:
        path = folder / "metrics.jsonl"
        if path.stat().st_size > MAX_METRICS_BYTES:
            return []
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            rows.append({key: _finite(value) for key, value in row.items()})
    return rows


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


def folder_outcome(folder: Path) -> dict:
    """How the last training of a folder nobody here started ended: finished when ``model.json``
    is at least as new as ``last.json``, else stopped (resumable when ``last.json`` exists)."""
    model, last = folder / "model.json", folder / "last.json"
    if model.is_file() and (not last.is_file() or model.stat().st_mtime_ns >= last.stat().st_mtime_ns):
        return {"status": "finished", "resumable": False, "message": ""}
    resumable = last.is_file()
    return {
        "status": "stopped",
        "resumable": resumable,
        "message": "interrupted; it resumes from its last saved epoch"
        if resumable
        else "interrupted before its first epoch was saved",
    }


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


def _same_epoch(row: dict) -> tuple:
    """What tells one epoch from another (the end of training adds ``selected`` to every row)."""
    return row.get("epoch"), row.get("train_loss"), row.get("test_loss")


def _event(value: dict) -> str:
    return f"data: {json.dumps(value)}\n\n"


async def epoch_events(
    run_id: str,
    folder: Path,
    running: Callable[[], bool],
    outcome: Callable[[], dict],
    snapshot_epochs: Callable[[], list[int]],
    stopping: Callable[[], bool],
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """Every epoch of ``folder`` (those already done first), then ``{"done": true, ...}`` once
    ``running()`` is false. Ends early when the client goes away or the server stops.

    The callables and the folder's files are read on a worker thread: a large ``metrics.jsonl``
    or ``outcome`` loading the finished model must not stall the event loop (every request)."""
    sent, planned, quiet, last_sent = 0, None, 0.0, None
    while True:
        # asked before reading: the rows read after it include its last epoch
        alive = await asyncio.to_thread(running)
        rows = await asyncio.to_thread(read_epochs, folder)
        if sent and (len(rows) < sent or _same_epoch(rows[sent - 1]) != last_sent):  # trained again
            yield _event({"id": run_id, "restart": True})
            sent, planned = 0, None
        if len(rows) > sent:
            planned = planned or await asyncio.to_thread(planned_epochs, folder)
            saved = set(await asyncio.to_thread(snapshot_epochs))
            for row in rows[sent:]:
                yield _event({"id": run_id, **row, "epochs": planned, "snapshot": row["epoch"] in saved})
            sent, quiet, last_sent = len(rows), 0.0, _same_epoch(rows[-1])
        if not alive:
            yield _event(
                {"id": run_id, "done": True, "epochs_done": sent, **await asyncio.to_thread(outcome)}
            )
            return
        if stopping() or await disconnected():
            return
        await asyncio.sleep(POLL_S)
        quiet += POLL_S
        if quiet >= KEEP_ALIVE_S:
            yield ": still training\n\n"
            quiet = 0.0
