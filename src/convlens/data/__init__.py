"""Data: the Dataset bundle, built-in data sets and readers for the user's own images.

``load_dataset(spec)`` is the one way in: a built-in name (``DATASETS``) or a path opened by
the data format that matches it (``DATA_FORMATS``: an image folder, a folder of IDX files, an
.npz file, segmentation images with masks as a folder or an .npz, or whatever a plugin
registers with ``register_format``).
"""

from __future__ import annotations

from pathlib import Path

from convlens.data.arrays import apply_image_size, read_idx, read_idx_folder, read_npz
from convlens.data.builtins import (
    DATASETS,
    BuiltinInfo,
    builtin_available,
    builtin_info,
    cache_dir,
    is_builtin,
    load_builtin,
    register_dataset,
)
from convlens.data.bundle import Dataset, channel_stats, to_float
from convlens.data.cache import read_image_folder
from convlens.data.formats import DATA_FORMATS, format_for, formats_listing, read_path, register_format
from convlens.data.readers import load_image
from convlens.data.transforms import parse_image_size, random_affine, resize_images
from convlens.errors import ConvlensError

__all__ = [
    "DATASETS",
    "DATA_FORMATS",
    "BuiltinInfo",
    "Dataset",
    "cache_dir",
    "channel_stats",
    "formats_listing",
    "list_datasets",
    "load_dataset",
    "load_image",
    "parse_image_size",
    "random_affine",
    "read_idx",
    "read_idx_folder",
    "read_image_folder",
    "read_npz",
    "register_dataset",
    "register_format",
    "resize_images",
    "spec_task",
    "to_float",
]


def list_datasets() -> list[dict]:
    """Facts about every built-in, without loading the pixels."""
    rows = []
    for entry in DATASETS:
        info = entry.extras["info"]
        rows.append(
            {
                "name": info.name,
                "description": info.description,
                "input_shape": list(info.input_shape),
                "classes": len(info.class_names),
                "train": info.train,
                "test": info.test,
                "task": info.task,
                "available": builtin_available(info),
                "hint": "" if builtin_available(info) else info.missing_hint,
            }
        )
    return rows


def spec_task(spec: str | Path) -> str:
    """What a data spec's labels are (``classification`` or ``segmentation``), found without
    reading its images: a built-in says, a path's format says (``train`` names its default model
    and run folder before minutes of loading). A spec that does not resolve is classification:
    loading it gives the error."""
    if isinstance(spec, str) and is_builtin(spec):
        return builtin_info(spec).task
    path = Path(spec)
    try:
        if path.exists():
            return format_for(path).extras.get("task", "classification")
    except (ConvlensError, OSError):
        pass
    return "classification"


def load_dataset(spec: str | Path, image_size: int | str | tuple[int, int] | None = None) -> Dataset:
    """Resolve a built-in name or a path (any registered data format) to a Dataset bundle."""
    dataset = _resolve(spec, parse_image_size(image_size))
    dataset.spec = str(spec) if is_builtin(str(spec)) else str(Path(spec).expanduser().resolve())
    return dataset


def _resolve(spec: str | Path, size: tuple[int, int] | None) -> Dataset:
    text = str(spec)
    if is_builtin(text):
        return apply_image_size(load_builtin(text), size)
    path = Path(text).expanduser()
    if not path.exists():
        if "/" not in text and "." not in text:
            raise ConvlensError(
                f"unknown data set {text!r}; built-ins are {', '.join(DATASETS.names())}, or give a path"
            )
        raise ConvlensError(f"{text}: no such file or folder")
    return read_path(path, size)
