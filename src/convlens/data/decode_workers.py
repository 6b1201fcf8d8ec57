"""Decoding an image folder in worker processes, each writing its images straight into a file.

JPEG decoding is the slow part of reading a folder (about a millisecond an image) and it is
single-threaded in Pillow, so one process per core decodes a share of the files: processes,
not threads, because Pillow's Python-side work holds the GIL. What makes two workers twice
as fast as one is that nothing else is done per image:

- the file list goes to each worker once, when it starts (forked: it is simply there), and a
  task is two numbers, a run of contiguous positions; no paths or pixels are pickled per image;
- a worker decodes a task's images into one buffer of its own (JPEGs at reduced scale through
  Pillow's ``draft``, see ``readers.decode_image``; an image already at the size is copied as
  it is, without a trip through torch) and writes each run of neighbouring rows of the output
  ``.npy`` with one ``pwrite``;
- it sends back only a few facts per file (decoded size, grayscale or not, the error of a file
  it could not read), and the parent holds no pixels.

With one worker the same code runs in this process. Workers use one thread each.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convlens.data.readers import NonFinitePixelsError, decode_image, image_to_tensor, is_grayscale
from convlens.data.tar_members import image_source
from convlens.errors import ConvlensError

FILES_PER_TASK = 256  # most files in one task: a few tasks per worker keep both busy to the end
MIN_FILES_PER_TASK = 16  # fewer and the bookkeeping of a task outweighs its decoding
TASK_BYTES = 32 * 2**20  # most decoded bytes one task buffers before writing them
TASKS_PER_WORKER = 4

# (decoded (height, width) or None, grayscale, error message or None, non-finite pixels)
Outcome = tuple[tuple[int, int] | None, bool, str | None, bool]


@dataclass(frozen=True)
class _Job:
    """What every task of one decoding shares, handed to each worker once."""

    files: list[str]
    positions: list[int]  # which files to decode; a task is a run of this list
    target: tuple[int, int]  # the size large JPEGs are decoded at (reduced scale)
    size: tuple[int, int] | None  # the rows' size (None: read headers only)
    out_path: str | None
    data_offset: int  # where row 0 starts in the output file


_JOB: _Job | None = None  # this worker's job (set by ``_start_worker``, or in-process)


def worker_count(files: int, workers: int | None = None) -> int:
    """``workers`` (default ``CONVLENS_DECODE_WORKERS``, else one per usable core), no more than
    one per ``MIN_FILES_PER_TASK`` files."""
    if workers is None:
        text = os.environ.get("CONVLENS_DECODE_WORKERS", "").strip()
        if text:
            if not text.isdigit() or int(text) < 1:
                raise ConvlensError(f"CONVLENS_DECODE_WORKERS must be a whole number >= 1, got {text!r}")
            workers = int(text)
        else:
            workers = (
                len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            )
    return max(1, min(int(workers), math.ceil(files / MIN_FILES_PER_TASK)))


def _task_runs(count: int, workers: int, row_bytes: int) -> list[tuple[int, int]]:
    """``(first, stop)`` runs of ``count`` positions: a few per worker, within the size limits."""
    per_task = math.ceil(count / (workers * TASKS_PER_WORKER))
    per_task = min(per_task, FILES_PER_TASK, max(1, TASK_BYTES // max(1, row_bytes)))
    per_task = max(per_task, min(MIN_FILES_PER_TASK, count))
    return [(first, min(first + per_task, count)) for first in range(0, count, max(1, per_task))]


def _start_worker(job: _Job) -> None:
    global _JOB
    _JOB = job
    torch.set_num_threads(1)  # two workers on two cores: threads would only wait for each other
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which ends the pool


@contextlib.contextmanager
def _mapper(job: _Job, workers: int):
    """An ``imap_unordered``-like function over ``workers`` processes that know ``job`` (this
    process when 1)."""
    global _JOB
    if workers <= 1:
        threads, _JOB = torch.get_num_threads(), job
        torch.set_num_threads(1)  # as a worker runs: one image is too small to share out
        try:
            yield map
        finally:
            torch.set_num_threads(threads)
            _JOB = None
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pool = context.Pool(workers, initializer=_start_worker, initargs=(job,))
    try:
        yield pool.imap_unordered
        pool.close()
    finally:
        pool.terminate()
        pool.join()


@contextlib.contextmanager
def _bar(total: int, progress):
    """``progress(done, total, what)``: the caller's, else a Rich bar on a terminal's stderr."""
    if progress is not None or total < 4 * MIN_FILES_PER_TASK or not sys.stderr.isatty():
        yield progress or (lambda done, total, what: None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task("decoding images", total=total)
    with bar:
        yield lambda done, total, what: bar.update(task, completed=done)


def _header_task(run: tuple[int, int]) -> list[tuple[int, tuple[int, int] | None]]:
    from PIL import Image

    job = _JOB
    found = []
    for position in job.positions[run[0] : run[1]]:
        try:
            with Image.open(image_source(job.files[position])) as img:
                img.draft(None, (job.target[1], job.target[0]))  # the scale decode_image decodes at
                found.append((position, (img.size[1], img.size[0])))
        except Exception:  # unreadable here: skipped, with its reason, when decoded
            found.append((position, None))
    return found


def header_shapes(
    files: list[Path], target: tuple[int, int], workers: int | None = None, positions: list[int] | None = None
) -> list:
    """Each file's size as ``decode_image`` will decode it, from its header (None: unreadable or
    not among ``positions``)."""
    positions = list(range(len(files))) if positions is None else list(positions)
    job = _Job([str(file) for file in files], positions, target, None, None, 0)
    count = worker_count(len(positions), workers)
    shapes: list = [None] * len(files)
    with _mapper(job, count) as mapper:
        for found in mapper(_header_task, _task_runs(len(positions), count, 64)):
            for position, shape in found:
                shapes[position] = shape
    return shapes


def _decode_into(row: np.ndarray, path: str, target: tuple[int, int]) -> Outcome:
    """Decode one file (or tar member, ``data.tar_members``) into ``row`` (3, H, W), as
    ``readers.image_to_tensor`` would make it."""
    try:
        array = decode_image(image_source(path), target)  # (h, w, 3) uint8
    except NonFinitePixelsError as exc:
        return None, False, str(exc), True
    except ConvlensError as exc:
        return None, False, str(exc), False
    if array.shape[:2] == row.shape[1:]:
        row[...] = array.transpose(2, 0, 1)  # at its size already: no resizing, no torch
    else:
        row[...] = image_to_tensor(array, 3, tuple(row.shape[1:])).numpy()
    return (int(array.shape[0]), int(array.shape[1])), is_grayscale(array), None, False


def write_rows(fd: int, buffer: np.ndarray, rows: list[int], data_offset: int) -> None:
    """Row k of ``buffer`` to row ``rows[k]`` of the file: one ``pwrite`` per run of neighbours."""
    row_bytes = buffer[0].nbytes
    data = memoryview(buffer).cast("B")
    start = 0
    while start < len(rows):
        end = start + 1
        while end < len(rows) and rows[end] == rows[end - 1] + 1:
            end += 1
        chunk, where, written = (
            data[start * row_bytes : end * row_bytes],
            data_offset + rows[start] * row_bytes,
            0,
        )
        while written < len(chunk):
            written += os.pwrite(fd, chunk[written:], where + written)
        start = end


def _decode_task(run: tuple[int, int]) -> list[tuple[int, Outcome]]:
    job = _JOB
    positions = job.positions[run[0] : run[1]]
    buffer = np.zeros((len(positions), 3, *job.size), dtype=np.uint8)  # (n, 3, H, W)
    found, rows = [], []  # rows: where the decoded ones go, buffer row k to file row rows[k]
    for position in positions:
        outcome = _decode_into(buffer[len(rows)], job.files[position], job.target)
        found.append((position, outcome))
        if outcome[2] is None:
            rows.append(position)
    fd = os.open(job.out_path, os.O_WRONLY)
    try:
        write_rows(fd, buffer[: len(rows)], rows, job.data_offset)
    finally:
        os.close(fd)
    return found


def create_npy(path: Path, shape: tuple[int, ...]) -> int:
    """A uint8 ``.npy`` file of ``shape`` with its space reserved; returns where the data starts."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "|u1", "fortran_order": False, "shape": shape})
        offset = handle.tell()
        total = offset + math.prod(shape)
        if hasattr(os, "posix_fallocate") and total > offset:
            os.posix_fallocate(handle.fileno(), 0, total)  # a full disk fails now, in one line
        else:
            handle.truncate(total)
    return offset


def decode_all(
    files: list[Path],
    target: tuple[int, int],
    size: tuple[int, int],
    out_path: Path,
    workers: int | None = None,
    progress=None,
    positions: list[int] | None = None,
    data_offset: int | None = None,
) -> list[Outcome | None]:
    """Decode every file (or those at ``positions``) at ``size`` as 3 channels into row i of
    ``out_path`` (a new ``.npy``; or an existing one whose rows start at ``data_offset``);
    one ``Outcome`` per file in order, None for a file not decoded. Pixels that are NaN stop
    it, as they stop the reader."""
    if data_offset is None:
        data_offset = create_npy(out_path, (len(files), 3, *size))
    positions = list(range(len(files))) if positions is None else sorted(positions)
    job = _Job([str(file) for file in files], positions, target, size, str(out_path), data_offset)
    count = worker_count(len(positions), workers)
    outcomes: list = [None] * len(files)
    done = 0
    with _bar(len(positions), progress) as report, _mapper(job, count) as mapper:
        for found in mapper(_decode_task, _task_runs(len(positions), count, 3 * size[0] * size[1])):
            for position, outcome in found:
                outcomes[position] = outcome
            done += len(found)
            report(done, len(positions), "decoding images")
    for outcome in outcomes:
        if outcome is not None and outcome[3]:  # the first in reading order, as the reader names it
            raise NonFinitePixelsError(outcome[2])
    return outcomes
