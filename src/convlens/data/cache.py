"""The decoded-image cache: a large image folder decoded once, in parallel, and read from disk.

Decoding every JPEG of a folder into one tensor is fine for a few thousand images, but a
practitioner's folder of 100,000 photos is 4.9 GB as uint8 at 128x128, and decoding it takes
minutes every run. So a folder of ``MIN_FILES`` images or more (``CONVLENS_FOLDER_CACHE``:
``auto``, ``always``, ``never``) is decoded once by worker processes (``CONVLENS_DECODE_WORKERS``,
default one per core) into uint8 ``.npy`` files per split at the chosen size, under
``cache_dir()/folders/`` (``CONVLENS_CACHE_DIR`` moves it; deleting it only costs a decode).
Every later ``load_dataset`` of the folder — train, eval, predict, the report, the explorer —
opens those files memory-mapped (``data.rows``) and the loops read them a batch at a time.

An entry is keyed by the folder's path and the image size, and records the folder's file list
with sizes and modification times, the seed of its test split and its own files' sizes and
times: a changed folder is rebuilt and says so, decoding only its new and changed files
(``data.cache_build`` copies the rows of the others), a damaged entry is rebuilt, never trusted.
Everything is written in a temporary folder and renamed into place, under a lock (several
processes of one torchrun wait for the first). The images are exactly those the in-memory
reader makes (same decoding, resizing, split and order), so the same seed trains the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from convlens.data.builtins import cache_dir
from convlens.data.bundle import Dataset
from convlens.data.cache_build import build_entry
from convlens.data.readers import FolderListing, list_image_folder, read_folder_in_memory, split_description
from convlens.data.rows import open_mapped
from convlens.errors import ConvlensError, printable
from convlens.storage import os_reason

log = logging.getLogger("convlens")

VERSION = 2  # 2: each file's split and row recorded, so a changed folder decodes only its changes
MIN_FILES = 1_000  # "auto" caches folders with at least this many images: smaller ones decode in a second


def read_image_folder(
    root: str | Path, image_size: tuple[int, int] | None = None, seed: int = 0, cache: bool | None = None
) -> Dataset:
    """One subfolder per class (optionally under ``train/`` and ``test/``); PNG/JPEG/BMP/GIF/TIFF.

    Undecodable files are skipped with one warning and a count, because one bad file in a
    folder of thousands should not stop training; a class left with no image is an error.
    A large folder (``cache`` None: ``use_cache`` decides) is read through the cache, a small
    one decoded into memory each time.
    """
    listing = list_image_folder(root)
    if use_cache(listing, cache):
        return read_cached_folder(listing, image_size, seed)
    return read_folder_in_memory(listing, image_size, seed)


def use_cache(listing: FolderListing, cache: bool | None = None) -> bool:
    """Whether ``listing``'s folder goes through the cache (``cache`` None: the environment decides)."""
    if cache is not None:
        return cache
    mode = os.environ.get("CONVLENS_FOLDER_CACHE", "auto").strip().lower()
    if mode in ("never", "off", "0", "no"):
        return False
    if mode in ("always", "on", "1", "yes"):
        return True
    return len(listing.files) >= MIN_FILES


def folders_dir() -> Path:
    return cache_dir() / "folders"


def _entry_name(root: Path, image_size: tuple[int, int] | None) -> str:
    key = hashlib.sha256(f"{root.resolve()}\n{image_size}".encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in root.name)[:40] or "folder"
    return f"{safe}-{key}"


def _file_list(listing: FolderListing) -> list[list]:
    """[relative path, size, mtime in ns] of every image file, in reading order."""
    base = str(listing.root)  # every file was listed under it: its name is a prefix ("." none)
    prefix = 0 if base == "." else len(base) + (not base.endswith(os.sep))
    rows = []
    for file in listing.files:
        status = os.stat(file)
        rows.append([str(file)[prefix:].replace(os.sep, "/"), status.st_size, status.st_mtime_ns])
    return rows


def _signature(listing: FolderListing, files: list[list], image_size, seed: int) -> str:
    facts = [VERSION, list(image_size or ()), seed, listing.class_names, listing.has_splits, files]
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()


def read_cached_folder(
    listing: FolderListing,
    image_size: tuple[int, int] | None,
    seed: int = 0,
    workers: int | None = None,
    progress=None,
    files: list[list] | None = None,
) -> Dataset:
    """The folder of ``listing`` as a Dataset read from the cache, built first if needed.

    ``files``: [name, size, mtime in ns] per entry of ``listing.files``, what the cache is keyed
    by, when the files are not plain files to stat (tar members: ``data.shards``)."""
    files = _file_list(listing) if files is None else files
    signature = _signature(listing, files, image_size, seed)
    root = folders_dir()
    name = _entry_name(listing.root, image_size)
    entry = root / name
    try:
        root.mkdir(parents=True, exist_ok=True)
        with entry_lock(root / f".{name}.lock"):
            meta, reason, previous = _usable(entry, signature, files)
            if meta is None:
                if reason:
                    again = "decoding only what changed" if previous else "decoding it again"
                    log.warning("%s: %s; %s", printable(listing.root), reason, again)
                facts = {
                    "version": VERSION,
                    "source": str(listing.root.resolve()),
                    "signature": signature,
                    "files": files,
                    "class_names": listing.class_names,
                }
                meta = build_entry(listing, image_size, seed, entry, facts, workers, progress, previous)
                _tidy(entry)
            else:
                for note in meta["notes"]:
                    log.warning("%s", note)
            return _open(entry, meta, listing)
    except OSError as exc:
        raise ConvlensError(
            f"{printable(root)}: cannot cache the decoded images of {printable(listing.root)} "
            f"({os_reason(exc)}); free some space or set CONVLENS_CACHE_DIR to another folder"
        ) from None


@contextlib.contextmanager
def entry_lock(path: Path):
    """One builder per entry at a time (torchrun's processes on one machine wait for the first)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, writes are still atomic
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- checking an entry


def _usable(entry: Path, signature: str, files: list[list]) -> tuple[dict | None, str, dict | None]:
    """(meta, "", None) for an entry to trust, else (None, why it is not ("" when there is
    none), the intact entry of a folder that changed, whose unchanged rows a build may copy)."""
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        return None, "", None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != VERSION:
            return None, "its cache was written by another version of convlens", None
        for split in ("train", "test"):
            if not _file_intact(entry, meta[split]):
                return None, f"its cached {split} images are damaged (truncated or modified)", None
        if meta["signature"] != signature:
            return None, _what_changed(meta.get("files", []), files), meta
    except (OSError, ValueError, KeyError, TypeError):
        return None, "its cache entry is damaged", None
    return meta, "", None


def _what_changed(old: list[list], new: list[list]) -> str:
    before = {row[0]: tuple(row[1:]) for row in old if isinstance(row, list) and row}
    after = {row[0]: tuple(row[1:]) for row in new}
    added = len(after.keys() - before.keys())
    removed = len(before.keys() - after.keys())
    changed = sum(1 for key in after.keys() & before.keys() if after[key] != before[key])
    if not added and not removed and not changed:
        return "its cache was made with other settings"
    parts = [
        f"{n} {what}" for n, what in ((added, "added"), (removed, "removed"), (changed, "modified")) if n
    ]
    return f"the folder changed since it was cached ({', '.join(parts)})"


def _file_intact(entry: Path, facts: dict) -> bool:
    """The .npy file is the one written: same size, time and header (a byte edit changes the time)."""
    path = entry / facts["file"]
    status = path.stat()
    if status.st_size != facts["bytes"] or status.st_mtime_ns != facts["mtime_ns"]:
        return False
    with open(path, "rb") as handle:
        if np.lib.format.read_magic(handle) != (1, 0):
            return False
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    return list(shape) == facts["shape"] and not fortran and dtype == np.uint8


def _open(entry: Path, meta: dict, listing: FolderListing) -> Dataset:
    def images(split: str) -> torch.Tensor:
        facts = meta[split]
        if facts["shape"][0] == 0:
            return torch.zeros(facts["shape"], dtype=torch.uint8)
        return open_mapped(entry / facts["file"])

    dataset = Dataset(
        name=listing.root.name,
        train_images=images("train"),
        train_labels=torch.tensor(meta["train"]["labels"], dtype=torch.int64),
        test_images=images("test"),
        test_labels=torch.tensor(meta["test"]["labels"], dtype=torch.int64),
        class_names=list(meta["class_names"]),
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        source=split_description(listing),
    )
    dataset.remember_fingerprint(meta["fingerprint"])
    return dataset


def _tidy(keep: Path) -> None:
    """Remove entries whose folder is gone (a deleted temp folder's images are never read again)
    and what a killed build left behind (``.NAME.*.tmp`` over a day old)."""
    for entry in folders_dir().iterdir():
        if entry == keep or not entry.is_dir():
            continue
        if entry.name.startswith("."):
            with contextlib.suppress(OSError):
                if entry.name.endswith(".tmp") and time.time() - entry.stat().st_mtime > 86_400:
                    shutil.rmtree(entry, ignore_errors=True)
            continue
        with contextlib.suppress(OSError, ValueError, KeyError):
            source = json.loads((entry / "meta.json").read_text())["source"]
            if not Path(source).exists():
                shutil.rmtree(entry, ignore_errors=True)
