"""An image folder packed into tar shards (the WebDataset layout), to copy to several machines.

A folder of 100,000 small files is slow to copy and to list on a network file system; a few
hundred tar files of ``shard_size`` images are not. ``pack_folder`` writes, per split,
``train-000000.tar``, ``train-000001.tar`` ... and ``test-000000.tar`` ..., each sample two
members with one key (``000123.jpg``, the file's bytes as they were, and ``000123.cls``, its
class index as text), plus ``classes.txt`` (one class name a line, in index order). Training
samples are shuffled (seeded) before packing, so every shard holds every class. Plain
``tarfile``: the ``webdataset`` library and ``tar`` read it too.

``read_shards`` opens such a folder as a Dataset through the decoded-image cache
(``data.cache``), decoding each image straight from its bytes inside the shard: nothing is
unpacked. The cache entry is keyed by every member's shard, name, size and the shard's time,
so a replaced shard decodes only its own images again; several processes of a machine wait
for the first to build it, and under torchrun each rank reads only its share of the entry
(``train.distributed``). Each machine still decodes every shard once: a node that decodes
only the shards its ranks train on needs a sampler per node (docs/distributed.md).
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convlens.data.bundle import Dataset
from convlens.data.cache import read_cached_folder
from convlens.data.readers import DEFAULT_TEST_FRACTION, IMAGE_SUFFIXES, FolderListing, list_image_folder
from convlens.data.tar_members import member_reference
from convlens.data.transforms import stratified_split
from convlens.errors import ConvlensError, printable

CLASSES_FILE = "classes.txt"
SPLITS = ("train", "test")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


@dataclass
class PackResult:
    """What ``pack_folder`` wrote."""

    out: Path
    class_names: list[str]
    shards: dict[str, list[str]] = field(default_factory=dict)  # split → shard file names
    samples: dict[str, int] = field(default_factory=dict)  # split → images packed

    def to_json(self) -> dict:
        return {
            "out": str(self.out),
            "class_names": self.class_names,
            "shards": self.shards,
            "samples": self.samples,
        }


def pack_folder(folder: str | Path, out: str | Path, shard_size: int = 1000, seed: int = 0) -> PackResult:
    """Pack the image folder ``folder`` (one subfolder per class, optionally train/ and test/)
    into tar shards of ``shard_size`` images in the new or empty folder ``out``.

    The test split is test/ when the folder has one, else the same stratified 20 % share of
    the listed files that training on the folder holds out (files that do not decode are
    packed as they are and skipped, with a warning, when read)."""
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ConvlensError(
            f"shard_size must be a whole number of images >= 1, got {shard_size!r}", parameter="shard_size"
        )
    listing = list_image_folder(folder)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConvlensError(f"{printable(out)}: exists and is not an empty folder; pack into a new folder")
    labels = np.asarray(listing.labels, dtype=np.int64)
    if listing.has_splits:
        positions = np.arange(len(listing.files))
        train, test = positions[: listing.test_start], positions[listing.test_start :]
    else:
        try:
            train, test = stratified_split(labels, DEFAULT_TEST_FRACTION, seed)
        except ConvlensError as exc:
            raise ConvlensError(f"{printable(listing.root)}: {exc}") from None
    train = np.random.default_rng(seed).permutation(train)  # every shard holds every class
    out.mkdir(parents=True, exist_ok=True)
    result = PackResult(out, listing.class_names)
    for split, rows in (("train", train), ("test", test)):
        result.shards[split], result.samples[split] = [], len(rows)
        for number, first in enumerate(range(0, len(rows), shard_size)):
            name = shard_name(split, number)
            samples = [
                (first + k, listing.files[row], int(labels[row]))
                for k, row in enumerate(rows[first : first + shard_size])
            ]
            _write_shard(out / name, samples)
            result.shards[split].append(name)
    (out / CLASSES_FILE).write_text("".join(f"{name}\n" for name in listing.class_names), encoding="utf-8")
    return result


def _write_shard(path: Path, samples: list[tuple[int, Path, int]]) -> None:
    """One tar of ``(key, image file, class index)`` samples, written whole or not at all."""
    partial = path.with_name(f".{path.name}.tmp")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as archive:
        for key, file, label in samples:
            suffix = ".jpg" if file.suffix.lower() == ".jpeg" else file.suffix.lower()
            _add(archive, f"{key:06d}{suffix}", file.read_bytes())
            _add(archive, f"{key:06d}.cls", str(label).encode())
    os.replace(partial, path)


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # no owner or time: the same bytes each pack
    archive.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------- reading shards


def is_shard_folder(path: Path) -> bool:
    """A folder ``pack_folder`` wrote: its first training shard is there."""
    return path.is_dir() and (path / shard_name("train", 0)).is_file()


def read_shards(path: str | Path, image_size: tuple[int, int] | None = None, seed: int = 0) -> Dataset:
    """A folder of ``train-NNNNNN.tar`` (and ``test-NNNNNN.tar``) shards with ``classes.txt``, as
    ``convlens pack`` writes it, read through the decoded-image cache straight from the members.

    Listing reads the tar headers and the small ``.cls`` members only; the images are decoded
    from their bytes inside the shards (``data.tar_members``), so no unpacked copy is written.
    Without test shards, ``seed`` picks the stratified test split, as for an image folder."""
    path = Path(path)
    classes = path / CLASSES_FILE
    if not classes.is_file():
        raise ConvlensError(
            f"{printable(path)}: no {CLASSES_FILE}; expected a folder written by convlens pack"
        )
    class_names = [line for line in classes.read_text(encoding="utf-8").splitlines() if line]
    listing, files = list_shard_folder(path, class_names)
    dataset = read_cached_folder(listing, image_size, seed, files=files)
    dataset.name, dataset.source = path.name, f"tar shards {path} (train-*.tar, test-*.tar)"
    return dataset


def list_shard_folder(path: Path, class_names: list[str]) -> tuple[FolderListing, list[list]]:
    """The shards' images as an image folder's listing (member references for files, training
    then test, class by class, by shard and key) and the cache's key facts per image."""
    listing = FolderListing(path, class_names, False, [], [], 0)
    facts: list[list] = []
    for split in SPLITS:
        found = []  # (label, shard, key, reference, facts)
        for shard in sorted(path.glob(f"{split}-[0-9]*.tar")):
            mtime = shard.stat().st_mtime_ns
            for key, label, member in _members(shard, class_names):
                reference = member_reference(shard, member.offset_data, member.size, member.name)
                found.append(
                    (label, shard.name, key, reference, [f"{shard.name}/{member.name}", member.size, mtime])
                )
        found.sort(key=lambda sample: sample[:3])
        if split == "test":
            listing.test_start, listing.has_splits = len(listing.files), bool(found)
        listing.files += [Path(sample[3]) for sample in found]
        listing.labels += [sample[0] for sample in found]
        facts += [sample[4] for sample in found]
    if not listing.files:
        raise ConvlensError(f"{printable(path)}: the shards hold no image")
    return listing, facts


def _members(shard: Path, class_names: list[str]) -> list[tuple[str, int, tarfile.TarInfo]]:
    """(key, class index, image member) of every sample of ``shard``, checked as ``pack_folder``
    writes them; the image bytes are not read (tarfile seeks over them)."""
    where = printable(shard)
    images: dict[str, tarfile.TarInfo] = {}
    labels: dict[str, int] = {}
    try:
        with tarfile.open(shard, "r:") as archive:
            for member in archive:
                key, dot, suffix = member.name.partition(".")
                if not member.isfile() or not dot or "/" in member.name or not key.isalnum():
                    raise ConvlensError(f"{where}: unexpected member {printable(member.name)!r}")
                if suffix == "cls":
                    text = archive.extractfile(member).read(32).decode("ascii", "replace").strip()
                    if not text.isdigit() or int(text) >= len(class_names):
                        raise ConvlensError(
                            f"{where}: {printable(member.name)} holds {printable(text)!r}; expected a "
                            f"class index 0..{len(class_names) - 1}"
                        )
                    labels[key] = int(text)
                elif f".{suffix.lower()}" in IMAGE_SUFFIXES:
                    images[key] = member
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ConvlensError(f"{where}: cannot read the shard ({exc})") from None
    for key in images:
        if key not in labels:
            raise ConvlensError(f"{where}: sample {key} has no .cls member")
    return [(key, labels[key], member) for key, member in images.items()]
