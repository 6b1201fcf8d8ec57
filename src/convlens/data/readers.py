"""Readers for the user's own images: one image file, or a folder with one subfolder per class.

MNIST-style IDX files and NPZ arrays are read by ``data.arrays``.

Every reader checks its input where it enters and raises ConvlensError naming the file.
Nothing here unpickles: NPZ files are opened with ``allow_pickle=False``.
"""

from __future__ import annotations

import logging
import os
import stat
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convlens.data.bundle import Dataset
from convlens.data.transforms import check_data_size, resize_images, stratified_split
from convlens.errors import ConvlensError, printable, shown

log = logging.getLogger("convlens")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}
DEFAULT_TEST_FRACTION = 0.2
MAX_DEFAULT_SIDE = 128  # larger photos are resized to 64x64 unless --image-size says otherwise


# ---------------------------------------------------------------- single images


class _NonFinitePixels(Exception):
    """Raised inside decoding when a float image holds NaN or inf; becomes a ConvlensError naming the file."""


class NonFinitePixelsError(ConvlensError):
    """Pixels that are NaN or inf. Unlike an undecodable file, an image folder does not skip it:
    NaN pixels mean the data was made wrong, and training on the rest would hide that."""


def non_finite_error(source: str, count: int) -> ConvlensError:
    """The one message for pixels that are NaN or infinite, wherever they are found."""
    return NonFinitePixelsError(
        f"{source}: {count:,} non-finite pixel value(s) (NaN or inf); "
        "expected finite numbers (replace them first, e.g. with numpy.nan_to_num)"
    )


def count_non_finite(values: np.ndarray) -> int:
    """How many values are NaN or ±inf (0 for integer arrays, which cannot hold either)."""
    if not np.issubdtype(values.dtype, np.inexact):
        return 0
    return int(values.size - np.count_nonzero(np.isfinite(values)))


def check_regular_file(path) -> None:
    """Refuse FIFOs, devices and sockets up front: opening one to read can block forever.

    Anything that is not a path (an in-memory file such as an upload) passes unchecked.
    """
    if not isinstance(path, str | os.PathLike):
        return
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return  # missing or unreadable: the reader's own error says so
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise ConvlensError(
            f"{printable(path)}: not a regular file (a pipe, device or socket); expected an image file"
        )


def decode_image(path: Path, target: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file to a uint8 (H, W, 3) array; raise ConvlensError if it cannot be read.

    With ``target`` (height, width), a large JPEG is decoded at a reduced scale (1/2, 1/4 or
    1/8, never below ``target``): a 6000x4000 photo bound for 64x64 never takes 72 MB.
    """
    from PIL import Image, UnidentifiedImageError

    check_regular_file(path)
    where = printable(path)
    try:
        with warnings.catch_warnings():
            # Pillow only warns for images between 1x and 2x its pixel limit; refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if target is not None:
                    img.draft(None, (target[1], target[0]))  # JPEG only; others ignore it
                img.load()
                return _to_rgb_array(img)
    except _NonFinitePixels as exc:
        raise non_finite_error(where, exc.args[0]) from None
    except FileNotFoundError:
        raise ConvlensError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise ConvlensError(f"{where}: is a folder, expected an image file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ConvlensError(
            f"{where}: cannot decode image ({exc.__class__.__name__}: {printable(exc)})"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ConvlensError(f"{where}: refused, image too large ({exc})") from None


def _to_rgb_array(img) -> np.ndarray:
    """Any Pillow mode → uint8 RGB; 16-bit and float images are scaled by their own range."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(img, dtype=np.float64)
        if count_non_finite(values):
            raise _NonFinitePixels(count_non_finite(values))
        low, high = float(values.min()), float(values.max())
        values = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        gray = values.round().astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        from PIL import Image

        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def image_to_tensor(array: np.ndarray, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """An RGB uint8 (H, W, 3) array → a (channels, H, W) uint8 tensor at ``size``."""
    tensor = torch.from_numpy(np.array(array, dtype=np.uint8, copy=True)).permute(2, 0, 1)  # (3, H, W)
    if channels == 1:
        # ITU-R 601 luma, the same weights Pillow's convert("L") uses
        weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        tensor = (tensor.float() * weights).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    elif channels != 3:
        raise ConvlensError(f"cannot make an image with {channels} channels; expected 1 or 3")
    return resize_images(tensor.unsqueeze(0), size)[0]


def array_to_input(array: np.ndarray, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """A decoded RGB uint8 (H, W, 3) image as the model's input: float32 (C, H, W) in [0, 1]."""
    channels, height, width = input_shape
    return image_to_tensor(array, channels, (height, width)).float() / 255.0


def load_image(path: str | Path, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """Read one image file as the model's input: float32 (C, H, W) in [0, 1]."""
    if (
        not isinstance(input_shape, tuple | list)
        or len(input_shape) != 3
        or input_shape[0] not in (1, 3)
        or not all(isinstance(side, int) and not isinstance(side, bool) and side >= 1 for side in input_shape)
    ):
        raise ConvlensError(
            f"input_shape must be (C, H, W) with C = 1 or 3 and positive sides, got {shown(input_shape)}",
            parameter="input_shape",
        )
    if not isinstance(path, str | os.PathLike):
        raise ConvlensError(f"path must be an image file's path, got {type(path).__name__}", parameter="path")
    return array_to_input(decode_image(Path(path), tuple(input_shape[1:])), input_shape)


def is_grayscale(array: np.ndarray) -> bool:
    return bool((array[:, :, 0] == array[:, :, 1]).all() and (array[:, :, 1] == array[:, :, 2]).all())


# ---------------------------------------------------------------- image folder


def _inside(path: Path, root: Path) -> Path:
    """``path`` itself, refused if it resolves (through a link) outside the data folder ``root``."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise ConvlensError(
            f"{printable(path)}: a link to {printable(path.resolve())}, outside the data folder "
            f"{printable(root)}; copy the files in instead"
        )
    return path


def _check_listable(root: Path) -> None:
    """Refuse a data folder with a subfolder that cannot be listed: its images would silently
    vanish (a class dropped, a model trained on fewer classes than the data has)."""

    def refuse(error: OSError) -> None:
        reason = error.strerror or type(error).__name__
        raise ConvlensError(
            f"{printable(error.filename or root)}: cannot be read ({reason}); fix its permissions or "
            f"move it out of the data folder {printable(root)}"
        )

    for _, folders, _ in os.walk(root, onerror=refuse):
        folders[:] = [name for name in folders if not name.startswith(".")]  # skipped as before


def _class_folders(root: Path, data_root: Path | None = None) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [_inside(p, data_root or root) for p in folders]


def image_files_in(folder: Path, data_root: Path | None = None) -> list[Path]:
    """Every image file under ``folder`` (sorted, hidden files skipped).

    With ``data_root`` a file that links outside it is refused (a training folder must hold its
    own data); without, links are followed (``predict`` classifies whatever the user names).
    Only a path with a link on it (the file, a folder below ``folder``, or ``folder`` itself
    outside ``data_root``) is resolved: a folder of 100,000 plain files is listed in a second.
    """
    found, linked = [], set()
    for p in folder.rglob("*"):
        if p.suffix.lower() not in IMAGE_SUFFIXES or p.name.startswith("."):
            continue
        try:
            mode = os.lstat(p).st_mode  # one call tells a plain file (most) from a link
        except OSError:
            continue
        if stat.S_ISLNK(mode):
            if p.is_file():  # what the link points to
                found.append(p)
                linked.add(len(found) - 1)
        elif stat.S_ISREG(mode):
            found.append(p)
    if data_root is not None:
        plain = {str(folder): folder.resolve().is_relative_to(data_root.resolve())}

        def without_links(directory: Path) -> bool:
            key = str(directory)
            if key not in plain:
                plain[key] = not directory.is_symlink() and without_links(directory.parent)
            return plain[key]

        for index, p in enumerate(found):  # in rglob's order: the same first refusal as before
            if index in linked or not without_links(p.parent):
                _inside(p, data_root)
    return sorted(found, key=lambda p: p.parts)  # Path's own order (by parts), compared in C


@dataclass
class FolderListing:
    """What an image folder holds, before any pixel is decoded: the files in reading order
    (the training files class by class, then the test files) with their labels."""

    root: Path
    class_names: list[str]
    has_splits: bool
    files: list[Path]
    labels: list[int]
    test_start: int  # files[test_start:] are the test/ files (len(files) without test/)


def _split_files(root: Path, class_names: list[str], data_root: Path) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for label, name in enumerate(class_names):
        folder = _inside(root / name, data_root)
        if not folder.is_dir():
            continue
        found = image_files_in(folder, data_root)
        files += found
        labels += [label] * len(found)
    return files, labels


def list_image_folder(root: str | Path) -> FolderListing:
    """The class folders and image files of ``root``, checked (see ``read_image_folder``)."""
    root = Path(root)
    where = printable(root)
    if not root.exists():
        raise ConvlensError(f"{where}: no such file or folder")
    if not root.is_dir():
        raise ConvlensError(f"{where}: expected a folder with one subfolder per class")
    _check_listable(root)
    has_splits = (root / "train").is_dir() and (root / "test").is_dir()
    class_root = root / "train" if has_splits else root
    listed = {p.name: image_files_in(p, root) for p in _class_folders(class_root, root)}
    class_names = [name for name, found in listed.items() if found]
    if not class_names:
        raise ConvlensError(
            f"{where}: no images found; expected one subfolder per class holding PNG/JPEG/BMP/GIF/TIFF files"
        )
    if len(class_names) < 2:
        raise ConvlensError(
            f"{where}: only one class ({printable(repr(class_names[0]))}); a classifier needs at least 2 class "
            "subfolders"
        )
    files = [file for name in class_names for file in listed[name]]
    labels = [label for label, name in enumerate(class_names) for _ in listed[name]]
    test_start = len(files)
    if has_splits:
        test_files, test_labels = _split_files(root / "test", class_names, root)
        files, labels = files + test_files, labels + test_labels
    return FolderListing(root, class_names, has_splits, files, labels, test_start)


def decode_target(image_size: tuple[int, int] | None) -> tuple[int, int]:
    """The size large JPEGs are decoded at (reduced scale), never below the size they are resized to."""
    return image_size or (MAX_DEFAULT_SIDE + 1, MAX_DEFAULT_SIDE + 1)


def check_decoded(listing: FolderListing, kept: list[int], skipped: list[str]) -> None:
    """After decoding: warn once about skipped files; refuse a split or class left with no image.

    ``kept`` are the positions in ``listing.files`` that decoded."""
    root, where = listing.root, printable(listing.root)
    if listing.has_splits and not any(i >= listing.test_start for i in kept):
        # else the run would train to the end and fail measuring nothing
        raise ConvlensError(
            f"{printable(root / 'test')}: no readable image; put test images in test/CLASS/ "
            "folders, or remove test/ to hold out a share of the training images"
        )
    if skipped:
        log.warning(
            "%s: skipped %d file(s) that could not be decoded, e.g. %s", where, len(skipped), skipped[0]
        )
    found = {listing.labels[i] for i in kept if i < listing.test_start}
    missing = [name for label, name in enumerate(listing.class_names) if label not in found]
    if missing:
        raise ConvlensError(f"{where}: class {printable(repr(missing[0]))} has no readable image")


def choose_size(shapes: list[tuple[int, int]], root: Path, quiet: bool = False) -> tuple[int, int]:
    """The most common decoded size; 64x64 when that is over MAX_DEFAULT_SIDE (warned unless ``quiet``)."""
    sizes = Counter(shapes)
    (height, width), _ = sizes.most_common(1)[0]
    if height > MAX_DEFAULT_SIDE or width > MAX_DEFAULT_SIDE:
        if not quiet:
            log.warning(
                "%s: images are %dx%d; resizing to 64x64 (choose with image_size)",
                printable(root),
                height,
                width,
            )
        return 64, 64
    if len(sizes) > 1 and not quiet:
        log.warning(
            "%s: images have %d different sizes; resizing all to %dx%d (choose with image_size)",
            printable(root),
            len(sizes),
            height,
            width,
        )
    return int(height), int(width)


def split_description(listing: FolderListing) -> str:
    split = (
        "train/ and test/ subfolders"
        if listing.has_splits
        else f"stratified {int(DEFAULT_TEST_FRACTION * 100)} % test split"
    )
    return f"image folder {listing.root} ({split})"


def read_folder_in_memory(
    listing: FolderListing, image_size: tuple[int, int] | None, seed: int = 0
) -> Dataset:
    """Decode every file of ``listing`` into one uint8 tensor (small folders; ``data.cache`` for large)."""
    root, where = listing.root, printable(listing.root)
    target = decode_target(image_size)
    arrays, kept, skipped = [], [], []
    for position, file in enumerate(listing.files):
        try:
            arrays.append(decode_image(file, target))
            kept.append(position)
        except NonFinitePixelsError:
            raise
        except ConvlensError as exc:
            skipped.append(str(exc))
    check_decoded(listing, kept, skipped)
    size = image_size or choose_size([a.shape[:2] for a in arrays], root)
    channels = 1 if all(is_grayscale(a) for a in arrays) else 3
    if image_size is not None:
        check_data_size(len(arrays), channels, size, 1)
    labels = np.asarray([listing.labels[i] for i in kept], dtype=np.int64)
    images = (
        torch.stack([image_to_tensor(a, channels, size) for a in arrays])
        if arrays
        else torch.zeros((0, channels, *size), dtype=torch.uint8)
    )
    try:
        train_idx, test_idx = folder_rows(listing, kept, labels, seed)
    except ConvlensError as exc:
        raise ConvlensError(f"{where}: {exc}") from None
    return Dataset(
        name=root.name,
        train_images=images[train_idx],
        train_labels=torch.from_numpy(labels[train_idx]),
        test_images=images[test_idx],
        test_labels=torch.from_numpy(labels[test_idx]),
        class_names=listing.class_names,
        source=split_description(listing),
    )


def folder_rows(
    listing: FolderListing, kept: list[int], labels: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Which decoded images (rows, in reading order) are training and which test images:
    test/ files are the test split; otherwise a fixed stratified split of every image."""
    if listing.has_splits:
        is_test = np.asarray([i >= listing.test_start for i in kept], dtype=bool)
        return np.flatnonzero(~is_test), np.flatnonzero(is_test)
    return stratified_split(labels, DEFAULT_TEST_FRACTION, seed)
