"""Decoding an image folder in worker processes, each writing its images straight into a file.

JPEG decoding is the slow part of reading a folder (about a millisecond an image) and it is
single-threaded in Pillow, so one process per core decodes a share of the files. Each worker
writes its images at their own rows of the output ``.npy`` with ``pwrite`` and sends back only
a few facts per file (decoded size, grayscale or not, the error of a file it could not read):
no pixels cross a pipe, and the parent holds none of them. With one worker the same code runs
in this process. Workers are forked (they start in milliseconds with everything imported)
and use one thread each.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch

from convlens.data.readers import NonFinitePixelsError, decode_image, image_to_tensor, is_grayscale
from convlens.errors import ConvlensError

FILES_PER_TASK = 32

# (decoded (height, width) or None, grayscale, error message or None, non-finite pixels)
Outcome = tuple[tuple[int, int] | None, bool, str | None, bool]


def worker_count(files: int, workers: int | None = None) -> int:
    """``workers`` (default ``CONVLENS_DECODE_WORKERS``, else one per usable core), no more than
    there are tasks."""
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
    return max(1, min(int(workers), math.ceil(files / FILES_PER_TASK)))


def _init_worker() -> None:
    torch.set_num_threads(1)  # two workers on two cores: threads would only wait for each other
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which ends the pool


@contextlib.contextmanager
def _mapper(workers: int):
    """An ``imap_unordered``-like function over ``workers`` processes (this one when 1)."""
    if workers <= 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as a worker runs: one image is too small to share out
        try:
            yield map
        finally:
            torch.set_num_threads(threads)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pool = context.Pool(workers, initializer=_init_worker)
    try:
        yield pool.imap_unordered
        pool.close()
    finally:
        pool.terminate()
        pool.join()


@contextlib.contextmanager
def _bar(total: int, progress):
    """``progress(done, total, what)``: the caller's, else a Rich bar on a terminal's stderr."""
    if progress is not None or total < 2 * FILES_PER_TASK or not sys.stderr.isatty():
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


def _tasks(files: list[Path], *extra) -> list[tuple]:
    return [
        (
            list(range(first, min(first + FILES_PER_TASK, len(files)))),
            files[first : first + FILES_PER_TASK],
            *extra,
        )
        for first in range(0, len(files), FILES_PER_TASK)
    ]


def _header_task(task) -> list[tuple[int, tuple[int, int] | None]]:
    from PIL import Image

    positions, paths, target = task
    found = []
    for position, path in zip(positions, paths, strict=True):
        try:
            with Image.open(path) as img:
                img.draft(None, (target[1], target[0]))  # the scale decode_image will decode at
                found.append((position, (img.size[1], img.size[0])))
        except Exception:  # unreadable here: skipped, with its reason, when decoded
            found.append((position, None))
    return found


def header_shapes(files: list[Path], target: tuple[int, int], workers: int | None = None) -> list:
    """Each file's size as ``decode_image`` will decode it, from its header (None: unreadable)."""
    shapes: list = [None] * len(files)
    with _mapper(worker_count(len(files), workers)) as mapper:
        for found in mapper(_header_task, _tasks(files, target)):
            for position, shape in found:
                shapes[position] = shape
    return shapes


def _decode_task(task) -> list[tuple[int, Outcome]]:
    positions, paths, target, size, out_path, offset, row_bytes = task
    found = []
    fd = os.open(out_path, os.O_WRONLY)
    try:
        for position, path in zip(positions, paths, strict=True):
            try:
                array = decode_image(Path(path), target)
            except NonFinitePixelsError as exc:
                found.append((position, (None, False, str(exc), True)))
                continue
            except ConvlensError as exc:
                found.append((position, (None, False, str(exc), False)))
                continue
            data = memoryview(image_to_tensor(array, 3, size).contiguous().numpy()).cast("B")
            written, where = 0, offset + position * row_bytes
            while written < row_bytes:
                written += os.pwrite(fd, data[written:], where + written)
            found.append(
                (position, ((int(array.shape[0]), int(array.shape[1])), is_grayscale(array), None, False))
            )
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
) -> list[Outcome]:
    """Decode every file at ``size`` as 3 channels into row i of ``out_path`` (a new ``.npy``);
    one ``Outcome`` per file, in order. Pixels that are NaN stop it, as they stop the reader."""
    row_bytes = 3 * size[0] * size[1]
    offset = create_npy(out_path, (len(files), 3, *size))
    outcomes: list = [None] * len(files)
    done = 0
    with _bar(len(files), progress) as report, _mapper(worker_count(len(files), workers)) as mapper:
        for found in mapper(_decode_task, _tasks(files, target, size, str(out_path), offset, row_bytes)):
            for position, outcome in found:
                outcomes[position] = outcome
            done += len(found)
            report(done, len(files), "decoding images")
    for outcome in outcomes:
        if outcome[3]:  # the first in reading order, as the in-memory reader would name it
            raise NonFinitePixelsError(outcome[2])
    return outcomes
