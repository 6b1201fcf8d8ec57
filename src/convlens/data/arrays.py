"""Readers for arrays of images: MNIST-style IDX files and NPZ files, and the checks they share.

Every reader checks its input where it enters and raises ConvlensError naming the file.
Nothing here unpickles: NPZ files are opened with ``allow_pickle=False``.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convlens.data.bundle import MAX_CLASSES, Dataset
from convlens.data.readers import (
    DEFAULT_TEST_FRACTION,
    count_non_finite,
    non_finite_error,
)
from convlens.data.transforms import check_data_size, resize_images, stratified_split
from convlens.errors import ConvlensError, printable

# ---------------------------------------------------------------- IDX (MNIST format)

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# The most data one IDX file or NPZ array may hold once decompressed (MNIST's largest is 47 MB).
# Checked from the header, in Python ints, before anything is allocated or decompressed.
MAX_ARRAY_BYTES = 2 * 2**30
_CHUNK = 2**24


def _too_large(path: Path, what: str, size: int) -> ConvlensError:
    return ConvlensError(
        f"{printable(path)}: {what} {size:,} bytes, over the limit of {MAX_ARRAY_BYTES:,} bytes for one array"
    )


def _read_exactly(stream, count: int) -> bytes:
    """Up to ``count`` bytes from a stream, read in chunks so a lying length never allocates."""
    parts, left = [], count
    while left > 0:
        chunk = stream.read(min(left, _CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or .gz), the format of MNIST and Fashion-MNIST.

    The header's dimensions are multiplied in Python ints and refused beyond MAX_ARRAY_BYTES
    before the data is read; gzip data is decompressed as a stream and never past that size.
    """
    path = Path(path)
    where = printable(path)
    if not path.is_file():
        raise ConvlensError(f"{where}: no such file")
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as stream:
            magic = _read_exactly(stream, 4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
                raise ConvlensError(f"{where}: not an IDX file (expected magic 0x00 0x00 TYPE NDIM)")
            dtype, ndim = np.dtype(_IDX_DTYPES[magic[2]]), magic[3]
            header = _read_exactly(stream, 4 * ndim)
            if len(header) < 4 * ndim:
                raise ConvlensError(f"{where}: truncated IDX header")
            dims = struct.unpack(f">{ndim}I", header)
            expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
            if expected > MAX_ARRAY_BYTES:
                raise _too_large(path, f"IDX header says {dims}, that is", expected)
            data = _read_exactly(stream, expected + 1)  # one more byte tells padding apart
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ConvlensError(f"{where}: cannot read gzip data ({exc})") from None
    if len(data) != expected:
        found = f"{len(data):,}" if len(data) <= expected else f"more than {expected:,}"
        raise ConvlensError(
            f"{where}: truncated or padded IDX file: header says {dims} ({expected:,} bytes of data), found {found}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, prefixes: tuple[str, ...], kind: str) -> Path | None:
    for file in sorted(folder.iterdir()):
        name = file.name.lower()
        if name.startswith(prefixes) and f"{kind}-idx" in name:
            return file
    return None


def is_idx_folder(folder: Path) -> bool:
    return folder.is_dir() and _find_idx(folder, ("train",), "images") is not None


def _images_to_tensor(images: np.ndarray, source: str) -> torch.Tensor:
    """(N, H, W), (N, C, H, W) or (N, H, W, C) arrays → (N, C, H, W) uint8 or float32 in [0, 1]."""
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1] not in (1, 3) and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ConvlensError(
            f"{source}: expected images shaped N x H x W, N x C x H x W or N x H x W x C with C = 1 or 3, got {images.shape}"
        )
    if images.shape[0] == 0:
        raise ConvlensError(f"{source}: holds no images (shape {images.shape}); expected at least one")
    if min(images.shape[2:]) == 0:
        raise ConvlensError(f"{source}: images of {images.shape[2]}x{images.shape[3]} pixels hold nothing")
    if images.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(images))
    if not np.issubdtype(images.dtype, np.number) or np.issubdtype(images.dtype, np.complexfloating):
        raise ConvlensError(f"{source}: expected numeric pixels, got dtype {images.dtype}")
    bad = count_non_finite(images)  # NaN would pass the range check below (comparisons are False)
    if bad:
        raise non_finite_error(source, bad)
    low, high = images.min(), images.max()  # before the float32 cast, which turns 1e300 into inf
    if low < 0 or high > 255:
        raise ConvlensError(f"{source}: pixel values must be in [0, 1] or [0, 255], got {low}..{high}")
    values = images.astype(np.float32)
    if high > 1:
        values = values / 255.0
    return torch.from_numpy(np.ascontiguousarray(values))


def _labels_to_tensor(labels: np.ndarray, source: str) -> torch.Tensor:
    """Class indices 0..K-1 as int64, checked before anything is sized by a label."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise ConvlensError(
            f"{source}: labels are shaped {labels.shape}, like one-hot rows; expected one class index "
            "per image (e.g. y.argmax(axis=1))"
        )
    labels = labels.reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ConvlensError(
            f"{source}: labels must be integer class indices 0..K-1, got dtype {labels.dtype}"
        )
    if labels.size == 0:
        raise ConvlensError(f"{source}: holds no labels; expected one per image")
    low, high = int(labels.min()), int(labels.max())  # Python ints: uint64 values cannot wrap
    if low < 0:
        raise ConvlensError(f"{source}: labels must be >= 0 (class indices 0..K-1), got {low}")
    if high >= MAX_CLASSES:
        raise ConvlensError(
            f"{source}: labels must be class indices 0..K-1 with at most {MAX_CLASSES:,} classes, "
            f"got label {high}; renumber the classes 0..K-1"
        )
    return torch.from_numpy(labels.astype(np.int64))


def _split_if_needed(name, x, y, x_test, y_test, class_names, source, seed=0) -> Dataset:
    if x.shape[0] != y.shape[0]:
        raise ConvlensError(
            f"{source}: {x.shape[0]} images but {y.shape[0]} labels; expected one label per image"
        )
    if class_names is not None:  # labels are bounded by the class list before anything is sized by them
        top = int(max(y.max(), y_test.max() if y_test is not None and len(y_test) else 0))
        if top >= len(class_names):
            raise ConvlensError(
                f"{source}: label {top} but only {len(class_names)} class names; "
                f"expected labels 0..{len(class_names) - 1}"
            )
    if x_test is None:
        try:
            train_idx, test_idx = stratified_split(y.numpy(), DEFAULT_TEST_FRACTION, seed)
        except ConvlensError as exc:
            raise ConvlensError(f"{source}: {exc}") from None
        x, y, x_test, y_test = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
        source += f" (stratified {int(DEFAULT_TEST_FRACTION * 100)} % test split)"
    elif x_test.shape[0] != y_test.shape[0]:
        raise ConvlensError(f"{source}: {x_test.shape[0]} test images but {y_test.shape[0]} test labels")
    top = int(max(y.max(), y_test.max())) if len(y_test) else int(y.max())
    unseen = sorted(set(y_test.tolist()) - set(y.tolist()))
    if unseen:  # a class with no training image cannot be learnt: its test images are all wrong
        raise ConvlensError(
            f"{source}: test label {unseen[0]} has no training image ({len(unseen)} such label(s)); "
            "every class in the test split needs training images"
        )
    class_names = class_names or [str(i) for i in range(top + 1)]
    if len(class_names) < 2:
        raise ConvlensError(f"{source}: only one class; a classifier needs at least 2")
    return Dataset(
        name=name,
        train_images=x,
        train_labels=y,
        test_images=x_test,
        test_labels=y_test,
        class_names=list(class_names),
        source=source,
    )


def read_idx_folder(
    folder: str | Path, class_names: list[str] | None = None, name: str | None = None
) -> Dataset:
    """A folder with ``train-images-idx3-ubyte[.gz]``, ``train-labels-…`` and optional ``t10k-``/``test-`` files."""
    folder = Path(folder)
    found = {
        (split, kind): _find_idx(folder, prefixes, kind)
        for split, prefixes in (("train", ("train",)), ("test", ("t10k", "test")))
        for kind in ("images", "labels")
    }
    if found["train", "images"] is None or found["train", "labels"] is None:
        raise ConvlensError(
            f"{folder}: expected train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]"
        )
    arrays = {key: read_idx(path) for key, path in found.items() if path is not None}
    x = _images_to_tensor(arrays["train", "images"], str(found["train", "images"]))
    y = _labels_to_tensor(arrays["train", "labels"], str(found["train", "labels"]))
    x_test = y_test = None
    if ("test", "images") in arrays and ("test", "labels") in arrays:
        x_test = _images_to_tensor(arrays["test", "images"], str(found["test", "images"]))
        y_test = _labels_to_tensor(arrays["test", "labels"], str(found["test", "labels"]))
    return _split_if_needed(name or folder.name, x, y, x_test, y_test, class_names, f"IDX files in {folder}")


# ---------------------------------------------------------------- NPZ


_NPY_MAGIC, _ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


def _check_npz_members(archive, path: Path) -> None:
    """Every member's size from its .npy header, in Python ints, before numpy allocates it."""
    total = 0
    for name in archive.files:
        with archive.zip.open(name + ".npy" if name + ".npy" in archive.zip.namelist() else name) as member:
            version = np.lib.format.read_magic(member)
            fmt = np.lib.format
            header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = header(member)
            total += math.prod(shape) * dtype.itemsize
            if total > MAX_ARRAY_BYTES:
                raise _too_large(
                    path, f"array {printable(name)!r} of shape {shape} brings the archive to", total
                )


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz, told apart: not an .npz at all, object arrays (need pickle), too large."""
    where = printable(path)
    with path.open("rb") as file:
        magic = file.read(6)
    if magic.startswith(_NPY_MAGIC):
        raise ConvlensError(f"{where}: a single .npy array; expected an .npz archive with arrays 'x' and 'y'")
    if not magic.startswith(_ZIP_MAGIC):
        raise ConvlensError(
            f"{where}: not a valid .npz file (not a zip archive); expected arrays 'x' and 'y'"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            _check_npz_members(archive, path)
            return {key: archive[key] for key in archive.files}
    except ConvlensError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise ConvlensError(
                f"{where}: refused: holds object arrays, which need pickle to load (unpickling can run "
                "arbitrary code); expected plain numeric arrays"
            ) from None
        raise ConvlensError(f"{where}: not a valid .npz file ({exc})") from None
    except Exception as exc:  # zipfile.BadZipFile, OSError, EOFError
        raise ConvlensError(f"{where}: cannot read NPZ archive ({exc.__class__.__name__}: {exc})") from None


def read_npz(path: str | Path) -> Dataset:
    """An .npz with ``x`` and ``y`` (and optional ``x_test``, ``y_test``, ``class_names``)."""
    path = Path(path)
    if not path.is_file():
        raise ConvlensError(f"{printable(path)}: no such file")
    arrays = _load_npz(path)
    if "x" not in arrays or "y" not in arrays:
        raise ConvlensError(f"{path}: expected arrays 'x' (images) and 'y' (labels), found {sorted(arrays)}")
    x = _images_to_tensor(arrays["x"], f"{path}:x")
    y = _labels_to_tensor(arrays["y"], f"{path}:y")
    x_test = y_test = None
    if "x_test" in arrays and "y_test" in arrays:
        x_test = _images_to_tensor(arrays["x_test"], f"{path}:x_test")
        y_test = _labels_to_tensor(arrays["y_test"], f"{path}:y_test")
    names = None
    if "class_names" in arrays:
        if arrays["class_names"].ndim != 1:
            raise ConvlensError(
                f"{printable(path)}:class_names: expected a 1-D array of names, got shape "
                f"{arrays['class_names'].shape}"
            )
        names = [str(n) for n in arrays["class_names"]]
    return _split_if_needed(path.stem, x, y, x_test, y_test, names, f"NPZ file {path}")


def apply_image_size(dataset: Dataset, size: tuple[int, int] | None) -> Dataset:
    """Resize both splits of a bundle (no-op when ``size`` is None or already right); a
    segmentation bundle's masks are resized with them, nearest-neighbour (class ids stay ids)."""
    if size is None or tuple(dataset.input_shape[1:]) == tuple(size):
        return dataset
    count = int(dataset.train_images.shape[0] + dataset.test_images.shape[0])
    check_data_size(count, dataset.input_shape[0], size, dataset.train_images.element_size())
    dataset.train_images = resize_images(dataset.train_images, size)
    dataset.test_images = resize_images(dataset.test_images, size)
    if dataset.is_segmentation:
        dataset.train_labels = resize_masks(dataset.train_labels, size)
        dataset.test_labels = resize_masks(dataset.test_labels, size)
    return dataset


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) class-id masks at ``size``, nearest-neighbour: every value is one of the input's
    (interpolating ids would invent classes at borders). Pixel centres line up as in the
    bilinear resize of the images, so a mask stays on its object."""
    if tuple(masks.shape[-2:]) == tuple(size) or masks.shape[0] == 0:
        return masks.new_zeros((0, *size)) if masks.shape[0] == 0 else masks
    step = max(1, 2**24 // max(masks.shape[1] * masks.shape[2], size[0] * size[1]))  # 64 MiB of floats
    chunks = [
        F.interpolate(masks[start : start + step, None].float(), size=size, mode="nearest-exact")[:, 0]
        for start in range(0, masks.shape[0], step)
    ]
    return torch.cat(chunks).round_().to(masks.dtype)
