"""Readers for the user's own data: an image folder, MNIST-style IDX files, NPZ arrays, one image.

Every reader checks its input where it enters and raises ConvlensError naming the file.
Nothing here unpickles: NPZ files are opened with ``allow_pickle=False``.
"""

from __future__ import annotations

import gzip
import logging
import os
import stat
import struct
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from convlens.data.bundle import MAX_CLASSES, Dataset
from convlens.data.transforms import check_data_size, resize_images, stratified_split
from convlens.errors import ConvlensError

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
        raise ConvlensError(f"{path}: not a regular file (a pipe, device or socket); expected an image file")


def decode_image(path: Path) -> np.ndarray:
    """Decode an image file to a uint8 (H, W, 3) array; raise ConvlensError if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    check_regular_file(path)
    try:
        with warnings.catch_warnings():
            # Pillow only warns for images between 1x and 2x its pixel limit; refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return _to_rgb_array(img)
    except _NonFinitePixels as exc:
        raise non_finite_error(str(path), exc.args[0]) from None
    except FileNotFoundError:
        raise ConvlensError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConvlensError(f"{path}: is a folder, expected an image file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ConvlensError(f"{path}: cannot decode image ({exc.__class__.__name__}: {exc})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ConvlensError(f"{path}: refused, image too large ({exc})") from None


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
    return array_to_input(decode_image(Path(path)), input_shape)


def is_grayscale(array: np.ndarray) -> bool:
    return bool((array[:, :, 0] == array[:, :, 1]).all() and (array[:, :, 1] == array[:, :, 2]).all())


# ---------------------------------------------------------------- image folder


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _read_split(root: Path, class_names: list[str]) -> tuple[list[np.ndarray], list[int], list[str]]:
    arrays, labels, skipped = [], [], []
    for label, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            continue
        for file in _image_files(folder):
            try:
                arrays.append(decode_image(file))
                labels.append(label)
            except NonFinitePixelsError:
                raise
            except ConvlensError as exc:
                skipped.append(str(exc))
    return arrays, labels, skipped


def _choose_size(arrays: list[np.ndarray], root: Path) -> tuple[int, int]:
    sizes = Counter(a.shape[:2] for a in arrays)
    (height, width), _ = sizes.most_common(1)[0]
    if height > MAX_DEFAULT_SIDE or width > MAX_DEFAULT_SIDE:
        log.warning("%s: images are %dx%d; resizing to 64x64 (choose with image_size)", root, height, width)
        return 64, 64
    if len(sizes) > 1:
        log.warning(
            "%s: images have %d different sizes; resizing all to %dx%d (choose with image_size)",
            root,
            len(sizes),
            height,
            width,
        )
    return int(height), int(width)


def read_image_folder(root: str | Path, image_size: tuple[int, int] | None = None, seed: int = 0) -> Dataset:
    """One subfolder per class (optionally under ``train/`` and ``test/``); PNG/JPEG/BMP/GIF/TIFF.

    Undecodable files are skipped with one warning and a count, because one bad file in a
    folder of thousands should not stop training; a class left with no image is an error.
    """
    root = Path(root)
    if not root.exists():
        raise ConvlensError(f"{root}: no such file or folder")
    if not root.is_dir():
        raise ConvlensError(f"{root}: expected a folder with one subfolder per class")
    has_splits = (root / "train").is_dir() and (root / "test").is_dir()
    class_root = root / "train" if has_splits else root
    class_names = [p.name for p in _class_folders(class_root) if _image_files(p)]
    if not class_names:
        raise ConvlensError(
            f"{root}: no images found; expected one subfolder per class holding PNG/JPEG/BMP/GIF/TIFF files"
        )
    if len(class_names) < 2:
        raise ConvlensError(
            f"{root}: only one class ({class_names[0]!r}); a classifier needs at least 2 class subfolders"
        )

    train_arrays, train_labels, skipped = _read_split(class_root, class_names)
    if has_splits:
        test_arrays, test_labels, skipped_test = _read_split(root / "test", class_names)
        skipped += skipped_test
    if skipped:
        log.warning(
            "%s: skipped %d file(s) that could not be decoded, e.g. %s", root, len(skipped), skipped[0]
        )
    missing = sorted(set(class_names) - {class_names[i] for i in train_labels})
    if missing:
        raise ConvlensError(f"{root}: class {missing[0]!r} has no readable image")

    all_arrays = train_arrays + (test_arrays if has_splits else [])
    size = image_size or _choose_size(all_arrays, root)
    channels = 1 if all(is_grayscale(a) for a in all_arrays) else 3
    if image_size is not None:
        check_data_size(len(all_arrays), channels, size, 1)

    def stack(arrays: list[np.ndarray]) -> torch.Tensor:
        if not arrays:
            return torch.zeros((0, channels, *size), dtype=torch.uint8)
        return torch.stack([image_to_tensor(a, channels, size) for a in arrays])

    if has_splits:
        train_x, train_y = stack(train_arrays), torch.tensor(train_labels, dtype=torch.int64)
        test_x, test_y = stack(test_arrays), torch.tensor(test_labels, dtype=torch.int64)
    else:
        images, labels = stack(train_arrays), np.asarray(train_labels, dtype=np.int64)
        try:
            train_idx, test_idx = stratified_split(labels, DEFAULT_TEST_FRACTION, seed)
        except ConvlensError as exc:
            raise ConvlensError(f"{root}: {exc}") from None
        train_x, train_y = images[train_idx], torch.from_numpy(labels[train_idx])
        test_x, test_y = images[test_idx], torch.from_numpy(labels[test_idx])
    split = (
        "train/ and test/ subfolders"
        if has_splits
        else f"stratified {int(DEFAULT_TEST_FRACTION * 100)} % test split"
    )
    return Dataset(
        name=root.name,
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        class_names=class_names,
        source=f"image folder {root} ({split})",
    )


# ---------------------------------------------------------------- IDX (MNIST format)

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or .gz), the format of MNIST and Fashion-MNIST."""
    path = Path(path)
    if not path.is_file():
        raise ConvlensError(f"{path}: no such file")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ConvlensError(f"{path}: cannot read gzip data ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ConvlensError(f"{path}: not an IDX file (expected magic 0x00 0x00 TYPE NDIM)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ConvlensError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ConvlensError(
            f"{path}: truncated or padded IDX file: header says {dims} ({expected} bytes of data), found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


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


def read_npz(path: str | Path) -> Dataset:
    """An .npz with ``x`` and ``y`` (and optional ``x_test``, ``y_test``, ``class_names``)."""
    path = Path(path)
    if not path.is_file():
        raise ConvlensError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as exc:
        raise ConvlensError(
            f"{path}: refused: holds pickled objects ({exc}); expected plain numeric arrays"
        ) from None
    except Exception as exc:  # zipfile.BadZipFile, OSError, EOFError
        raise ConvlensError(f"{path}: cannot read NPZ archive ({exc.__class__.__name__}: {exc})") from None
    if "x" not in arrays or "y" not in arrays:
        raise ConvlensError(f"{path}: expected arrays 'x' (images) and 'y' (labels), found {sorted(arrays)}")
    x = _images_to_tensor(arrays["x"], f"{path}:x")
    y = _labels_to_tensor(arrays["y"], f"{path}:y")
    x_test = y_test = None
    if "x_test" in arrays and "y_test" in arrays:
        x_test = _images_to_tensor(arrays["x_test"], f"{path}:x_test")
        y_test = _labels_to_tensor(arrays["y_test"], f"{path}:y_test")
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else None
    return _split_if_needed(path.stem, x, y, x_test, y_test, names, f"NPZ file {path}")


def apply_image_size(dataset: Dataset, size: tuple[int, int] | None) -> Dataset:
    """Resize both splits of a bundle (no-op when ``size`` is None or already right)."""
    if size is None or tuple(dataset.input_shape[1:]) == tuple(size):
        return dataset
    count = int(dataset.train_images.shape[0] + dataset.test_images.shape[0])
    check_data_size(count, dataset.input_shape[0], size, dataset.train_images.element_size())
    dataset.train_images = resize_images(dataset.train_images, size)
    dataset.test_images = resize_images(dataset.test_images, size)
    return dataset
