"""Data formats: which reader opens a path given to ``load_dataset`` (``--data PATH``).

Each format is one entry of ``DATA_FORMATS``: a reader ``(path, image_size) -> Dataset``, a
``matches(path)`` test that looks at the path (a suffix, a marker file) without reading the
images, and ``what`` it is in a sentence ("an .npz file"). Formats are tried in registration
order; the image folder, which takes any folder, is a ``fallback`` tried after all others, so
a format registered later (a plugin's folder with a marker file) is still found first. The
listing in errors, ``convlens datasets`` and the catalog comes from here, so a new format is
one ``register_format(...)`` call with no other edit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from convlens.data.arrays import apply_image_size, is_idx_folder, read_idx_folder, read_npz
from convlens.data.bundle import Dataset
from convlens.data.cache import read_image_folder
from convlens.data.masks import is_mask_folder, is_mask_npz, read_mask_folder, read_mask_npz
from convlens.data.shards import is_shard_folder, read_shards
from convlens.errors import ConvlensError, refuse_pickle
from convlens.registry import Entry, Registry

# name → reader; extras: matches(path) -> bool, what (for "expected ..."), fallback
DATA_FORMATS = Registry("data format", shared_inputs=("path", "image_size"))

Reader = Callable[[Path, tuple[int, int] | None], Dataset]  # (path, image_size) -> Dataset


def register_format(
    name: str,
    read: Reader,
    matches: Callable[[Path], bool],
    what: str,
    *,
    help: str | None = None,
    fallback: bool = False,
    task: str = "classification",
) -> Reader:
    """Add a data format: ``read(path, image_size)`` opens every path ``matches(path)`` accepts.

    ``what`` names the format in one phrase ("an .npz file") for the error listing every format;
    ``help`` (default: ``read``'s docstring) says what the reader expects. ``fallback``: try
    this format only when no other matches (the image folder, which takes any folder).
    ``task``: what its labels are (``segmentation``: masks), known before any image is read.
    """
    return DATA_FORMATS.register(
        name, read, help=help, matches=matches, what=what, fallback=fallback, task=task
    )


def format_for(path: Path) -> Entry:
    """The registered format that opens ``path``; a path no format takes is an error listing them."""
    ordered = sorted(DATA_FORMATS, key=lambda entry: entry.extras["fallback"])  # stable: keeps order
    for entry in ordered:
        if entry.extras["matches"](path):
            return entry
    expected = formats_listing()
    refuse_pickle(path, f"give images as {expected}")
    raise ConvlensError(f"{path}: expected {expected}")


def formats_listing() -> str:
    """Every format in one phrase: "an image folder, a folder of IDX files or an .npz file"."""
    phrases = [entry.extras["what"] for entry in DATA_FORMATS]
    return phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} or {phrases[-1]}"


def read_path(path: Path, image_size: tuple[int, int] | None) -> Dataset:
    """Open ``path`` (which exists) with the format that matches it."""
    return format_for(path).function(path, image_size)


def _image_folder(path: Path, image_size: tuple[int, int] | None) -> Dataset:
    """A folder with one subfolder per class (PNG/JPEG/BMP/GIF/TIFF), optionally under train/ and test/."""
    return read_image_folder(path, image_size=image_size)


def _idx_folder(path: Path, image_size: tuple[int, int] | None) -> Dataset:
    """A folder of MNIST-style IDX files: train-images-idx3-ubyte[.gz], train-labels-…, optional t10k-/test-."""
    return apply_image_size(read_idx_folder(path), image_size)


def _npz(path: Path, image_size: tuple[int, int] | None) -> Dataset:
    """An .npz with arrays x and y (and optionally x_test, y_test, class_names)."""
    return apply_image_size(read_npz(path), image_size)


def _mask_folder(path: Path, image_size: tuple[int, int] | None) -> Dataset:
    """Segmentation: images/ and masks/ (PNG class ids, same names), optional train/ test/ and classes.txt."""
    return read_mask_folder(path, image_size=image_size)


def _shards(path: Path, image_size: tuple[int, int] | None) -> Dataset:
    """Tar shards as `convlens pack` writes them: train-NNNNNN.tar, test-NNNNNN.tar (KEY.jpg + KEY.cls), classes.txt."""
    return read_shards(path, image_size=image_size)


def _mask_npz(path: Path, image_size: tuple[int, int] | None) -> Dataset:
    """Segmentation: an .npz with images and masks (N x H x W class ids; optional *_test, class_names)."""
    return apply_image_size(read_mask_npz(path), image_size)


register_format("image-folder", _image_folder, Path.is_dir, "an image folder", fallback=True)
register_format(
    "mask-folder", _mask_folder, is_mask_folder, "a folder of images/ and masks/", task="segmentation"
)
register_format("idx-folder", _idx_folder, is_idx_folder, "a folder of IDX files")
register_format("mask-npz", _mask_npz, is_mask_npz, "an .npz file of images and masks", task="segmentation")
register_format("npz", _npz, lambda p: p.is_file() and p.suffix.lower() == ".npz", "an .npz file")
register_format("tar-shards", _shards, is_shard_folder, "a folder of tar shards")
