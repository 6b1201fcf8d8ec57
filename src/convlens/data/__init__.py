"""Data: the Dataset bundle, built-in data sets and readers for the user's own images.

``load_dataset(spec)`` is the one way in: a built-in name, an image folder, a folder of
IDX files, or an .npz file.
"""

from __future__ import annotations

from pathlib import Path

from convlens.data.arrays import apply_image_size, is_idx_folder, read_idx, read_idx_folder, read_npz
from convlens.data.builtins import BUILTINS, builtin_available, cache_dir, load_builtin
from convlens.data.bundle import Dataset, channel_stats, to_float
from convlens.data.readers import load_image, read_image_folder
from convlens.data.transforms import parse_image_size, random_affine, resize_images
from convlens.errors import ConvlensError, refuse_pickle

__all__ = [
    "BUILTINS",
    "Dataset",
    "cache_dir",
    "channel_stats",
    "list_datasets",
    "load_dataset",
    "load_image",
    "parse_image_size",
    "random_affine",
    "read_idx",
    "read_idx_folder",
    "read_image_folder",
    "read_npz",
    "resize_images",
    "to_float",
]


def list_datasets() -> list[dict]:
    """Facts about every built-in, without loading the pixels."""
    return [
        {
            "name": info.name,
            "description": info.description,
            "input_shape": list(info.input_shape),
            "classes": len(info.class_names),
            "train": info.train,
            "test": info.test,
            "available": builtin_available(info),
            "hint": "" if builtin_available(info) else info.missing_hint,
        }
        for info in BUILTINS.values()
    ]


def load_dataset(spec: str | Path, image_size: int | str | tuple[int, int] | None = None) -> Dataset:
    """Resolve a built-in name or a path (image folder, IDX folder, .npz) to a Dataset bundle."""
    dataset = _resolve(spec, parse_image_size(image_size))
    dataset.spec = str(spec) if str(spec) in BUILTINS else str(Path(spec).expanduser().resolve())
    return dataset


def _resolve(spec: str | Path, size: tuple[int, int] | None) -> Dataset:
    text = str(spec)
    if text in BUILTINS:
        return apply_image_size(load_builtin(text), size)
    path = Path(text).expanduser()
    if not path.exists():
        if "/" not in text and "." not in text:
            raise ConvlensError(
                f"unknown data set {text!r}; built-ins are {', '.join(BUILTINS)}, or give a path"
            )
        raise ConvlensError(f"{text}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return apply_image_size(read_npz(path), size)
        refuse_pickle(text, "give images as an .npz file (arrays x and y), an image folder or IDX files")
        raise ConvlensError(f"{text}: expected an image folder, a folder of IDX files or an .npz file")
    if is_idx_folder(path):
        return apply_image_size(read_idx_folder(path), size)
    return read_image_folder(path, image_size=size)
