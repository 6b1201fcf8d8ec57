"""Building an entry of the decoded-image cache (``data.cache``): decode, split, write, swap in.

A folder of 100,000 photos takes minutes to decode, and the usual change to such a folder is
small: a few files added, replaced or removed. So an entry records where each file's image
went (its split and row, or why it was skipped) and, when the folder changes, the new entry
copies the rows of every unchanged file out of the old one and decodes only the files that
are new or changed. Because the cached rows are exactly what decoding gives (3 channels are
kept for a grayscale folder only when every image is gray, and a gray row repeated three
times is its 3-channel decoding), the result is the one a full decode would make; a folder
whose chosen size changes is decoded in full, and says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from convlens.data.bundle import PixelCounts, hash_rows
from convlens.data.decode_workers import Outcome, create_npy, decode_all, header_shapes, write_rows
from convlens.data.readers import FolderListing, check_decoded, choose_size, decode_target, folder_rows
from convlens.data.rows import open_mapped, take
from convlens.errors import ConvlensError, printable
from convlens.storage import atomic_write, preflight

log = logging.getLogger("convlens")

CHUNK_BYTES = 8 * 2**20  # what one copy step of the cache build holds
SPLITS = ("train", "test")


class _Notes(logging.Handler):
    """The warnings a build gives (skipped files, resizing), kept to repeat on every later load."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def build_entry(
    listing: FolderListing,
    image_size: tuple[int, int] | None,
    seed: int,
    entry: Path,
    facts: dict,
    workers: int | None,
    progress,
    previous: dict | None = None,
) -> dict:
    """Decode ``listing`` into a new ``entry`` folder (replacing it) and return its meta.

    ``facts``: the entry's own keys (version, signature, file list, ...). ``previous``: the meta
    of the entry being replaced, whose unchanged files' rows are copied instead of decoded."""
    root, where = listing.root, printable(listing.root)
    folders = entry.parent
    target = decode_target(image_size)
    kept_before = _unchanged(previous, facts["files"]) if previous else {}
    old_size = tuple(previous["train"]["shape"][2:]) if kept_before else None
    size = image_size
    if size is None:  # a guess from the headers; the decoded sizes have the last word below
        todo = [i for i in range(len(listing.files)) if i not in kept_before]
        found = header_shapes(listing.files, target, workers, todo)
        shapes = [s for s in found if s is not None] + [o[0][0] for o in kept_before.values() if o[0][0]]
        size = choose_size(shapes, root, quiet=True) if shapes else (1, 1)
    if kept_before and tuple(size) != old_size:
        log.warning("%s: the images' size changed to %dx%d; decoding every image again", where, *size)
        kept_before = {}
    count = len(listing.files)
    preflight(folders, 2 * count * 3 * size[0] * size[1] + 16 * 2**20, "caching the decoded images", None)
    todo = [i for i in range(count) if i not in kept_before]
    if kept_before:
        log.warning(
            "%s: decoding %s new or changed image(s), keeping %s from the cache",
            where,
            f"{len(todo):,}",
            f"{len(kept_before):,}",
        )
    else:
        log.info("%s: decoding %s images into the cache (%s)", where, f"{count:,}", printable(folders))
    work = Path(tempfile.mkdtemp(dir=folders, prefix=f".{entry.name}.", suffix=".tmp"))
    notes = _Notes()
    log.addHandler(notes)
    try:
        decoded = work / "decoded.npy"
        offset = create_npy(decoded, (count, 3, *size))
        results: list[Outcome | None] = [None] * count
        if kept_before:
            _copy_unchanged(entry, previous, kept_before, decoded, offset)
            for position, (outcome, _, _) in kept_before.items():
                results[position] = outcome
        fresh = decode_all(listing.files, target, size, decoded, workers, progress, todo, offset)
        results = [old if new is None else new for old, new in zip(results, fresh, strict=True)]
        kept = [i for i, result in enumerate(results) if result[2] is None]
        check_decoded(listing, kept, [results[i][2] for i in range(count) if results[i][2] is not None])
        if image_size is None:
            chosen = choose_size([results[i][0] for i in kept], root)
            if chosen != size:  # a file whose header lied: decode everything again at its size
                size = chosen
                results = decode_all(listing.files, target, size, decoded, workers, progress)
        channels = 1 if all(results[i][1] for i in kept) else 3
        labels = np.asarray([listing.labels[i] for i in kept], dtype=np.int64)
        try:
            train_rows, test_rows = folder_rows(listing, kept, labels, seed)
        except ConvlensError as exc:
            raise ConvlensError(f"{where}: {exc}") from None
        meta = _write_splits(
            work, decoded, np.asarray(kept, dtype=np.int64), labels, train_rows, test_rows, channels
        )
        decoded.unlink()
        meta.update(
            facts,
            decoded=_where_each_went(results, kept, train_rows, test_rows),
            notes=notes.messages,
        )
        atomic_write(work / "meta.json", json.dumps(meta).encode())
        _replace(entry, work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        log.removeHandler(notes)
    return meta


# ---------------------------------------------------------------- reusing an old entry's rows


def _unchanged(previous: dict, files: list[list]) -> dict[int, tuple]:
    """{position in ``files``: (outcome, split, row)} for each file the old entry holds as it is
    now (same path, size and time); empty when the old entry records no rows."""
    recorded = previous.get("decoded")
    old_files = previous.get("files")
    if not isinstance(recorded, list) or not isinstance(old_files, list) or len(recorded) != len(old_files):
        return {}
    before = {tuple(row): place for row, place in zip(old_files, recorded, strict=True)}
    kept = {}
    for position, row in enumerate(files):
        place = before.get(tuple(row))
        if isinstance(place, str):  # skipped then: skipped now, with the same reason
            kept[position] = ((None, False, place, False), None, None)
        elif isinstance(place, list) and len(place) == 5:
            height, width, gray, split, index = place
            kept[position] = (((height, width), bool(gray), None, False), SPLITS[split], index)
    return kept


def _copy_unchanged(entry: Path, previous: dict, kept: dict, decoded: Path, offset: int) -> None:
    """Copy each unchanged file's row from the old entry to its new row of ``decoded`` (as 3
    channels)."""
    by_split: dict[str, list[tuple[int, int]]] = {split: [] for split in SPLITS}
    for position, (_, split, index) in kept.items():
        if split is not None:
            by_split[split].append((index, position))
    fd = os.open(decoded, os.O_WRONLY)
    try:
        for split, pairs in by_split.items():
            if not pairs:
                continue
            pairs.sort()  # old rows in order: neighbours are read in one call
            source = open_mapped(entry / previous[split]["file"])  # (n, C, H, W)
            step = max(1, CHUNK_BYTES // max(1, 3 * source[0].numel()))
            for first in range(0, len(pairs), step):
                chunk = pairs[first : first + step]
                images = take(source, torch.tensor([index for index, _ in chunk]))
                images = images.expand(-1, 3, -1, -1).contiguous()  # a gray row, as 3 channels
                write_rows(fd, images.numpy(), [position for _, position in chunk], offset)
            del source
    finally:
        os.close(fd)


def _where_each_went(results: list, kept: list[int], train_rows, test_rows) -> list:
    """Per file: [height, width, gray, split (0 train, 1 test), row], or why it was skipped."""
    place: dict[int, tuple[int, int]] = {}
    for split, rows in enumerate((train_rows, test_rows)):
        for row, k in enumerate(rows.tolist()):
            place[kept[k]] = (split, row)
    where = []
    for position, (shape, gray, error, _) in enumerate(results):
        if error is not None:
            where.append(error)
        else:
            where.append([shape[0], shape[1], int(gray), *place[position]])
    return where


# ---------------------------------------------------------------- writing the splits


def _write_splits(work: Path, decoded: Path, kept, labels, train_rows, test_rows, channels: int) -> dict:
    """train.npy and test.npy from the decoded rows, hashed and counted on the way."""
    source = open_mapped(decoded)  # (files, 3, H, W), read a chunk at a time
    digest, counts, meta = hashlib.sha256(), PixelCounts(channels), {}
    for split, rows in (("train", train_rows), ("test", test_rows)):
        shape = (len(rows), channels, *source.shape[2:])
        path = work / f"{split}.npy"
        step = max(1, CHUNK_BYTES // max(1, source[0].numel()))
        digest.update(str(shape).encode())
        with open(path, "wb") as handle:
            header = {"descr": "|u1", "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(handle, header)
            for first in range(0, len(rows), step):
                chunk = take(source, torch.from_numpy(kept[rows[first : first + step]]))[
                    :, :channels
                ].contiguous()
                handle.write(chunk.numpy().tobytes())
                hash_rows(digest, chunk)
                if split == "train":
                    counts.add(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        split_labels = torch.from_numpy(labels[rows])
        digest.update(str(tuple(split_labels.shape)).encode())
        hash_rows(digest, split_labels)
        status = path.stat()
        meta[split] = {
            "file": path.name,
            "shape": list(shape),
            "bytes": status.st_size,
            "mtime_ns": status.st_mtime_ns,
            "labels": split_labels.tolist(),
        }
    del source
    mean, std = counts.stats()
    meta.update(mean=list(mean), std=list(std), fingerprint=digest.hexdigest()[:16])
    return meta


def _replace(entry: Path, work: Path) -> None:
    """Swap the finished folder in (a process still reading the old files keeps them open)."""
    if entry.exists():
        old = entry.with_name(f".{entry.name}.old.{os.getpid()}.tmp")
        os.replace(entry, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(work, entry)
    with contextlib.suppress(OSError):
        from convlens.storage import current_umask

        os.chmod(entry, 0o777 & ~current_umask())
