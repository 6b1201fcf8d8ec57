"""Class probabilities for images, from a trained model."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from convlens.errors import ConvlensError, shown


def check_images(model: nn.Module, images, parameter: str = "images") -> torch.Tensor:
    """``images`` as the model takes them: a float tensor (N, C, H, W) of its input size.

    Refused, naming ``parameter``: anything but a tensor (a NumPy array: ``torch.from_numpy``),
    another rank or size, and integer pixels, which would be read as 255 times too bright (uint8
    0..255: ``convlens.data.to_float`` makes them pixels in [0, 1]). Other float types are
    converted to float32, the weights' type.
    """
    expected = tuple(getattr(model, "in_shape", ()))
    wanted = (
        f"N x {'x'.join(map(str, expected))} (N images of the model's C x H x W)"
        if expected
        else "N x C x H x W"
    )
    if not isinstance(images, torch.Tensor):
        raise ConvlensError(
            f"{parameter} must be a torch.Tensor of {wanted}, got {type(images).__name__}",
            parameter=parameter,
        )
    if images.ndim != 4 or (expected and tuple(images.shape[1:]) != expected):
        raise ConvlensError(
            f"{parameter} must be {wanted}, got shape {tuple(images.shape)}", parameter=parameter
        )
    if not images.is_floating_point():
        raise ConvlensError(
            f"{parameter} must be float pixels in [0, 1], got {images.dtype} (8-bit images: "
            "convlens.data.to_float divides by 255)",
            parameter=parameter,
        )
    if images.numel() and not bool(torch.isfinite(images).all()):
        raise ConvlensError(f"{parameter} must be finite pixels, got NaN or infinity", parameter=parameter)
    return images if images.dtype == torch.float32 else images.float()


def check_count(value, parameter: str, low: int = 1) -> int:
    """A whole number ``>= low`` (a batch size, a k), named by ``parameter`` when it is not."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConvlensError(
            f"{parameter} must be a whole number >= {low}, got {shown(value)}", parameter=parameter
        )
    return value


@torch.inference_mode()
def predict_probabilities(model: nn.Module, images: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """Softmax probabilities (N, classes) for float images (N, C, H, W) in [0, 1]."""
    images = check_images(model, images)
    batch_size = check_count(batch_size, "batch_size")
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for first in range(0, images.shape[0], batch_size):
        batch = images[first : first + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        outputs.append(torch.softmax(model(batch).float(), dim=1).cpu())
    return torch.cat(outputs) if outputs else torch.zeros(0, getattr(model, "num_classes", 0))


def top_predictions(probabilities: torch.Tensor, class_names: list[str], k: int = 3) -> list[list[dict]]:
    """The k most probable classes per image: [[{"class", "index", "probability"}, ...], ...]."""
    if not isinstance(probabilities, torch.Tensor) or probabilities.ndim != 2:
        raise ConvlensError(
            "probabilities must be a tensor (N, classes), as predict_probabilities returns",
            parameter="probabilities",
        )
    if not isinstance(class_names, list | tuple) or len(class_names) != probabilities.shape[1]:
        raise ConvlensError(
            f"class_names must be a list of {probabilities.shape[1]} names, one per column of probabilities",
            parameter="class_names",
        )
    k = max(1, min(check_count(k, "k"), probabilities.shape[1]))
    values, indices = probabilities.topk(k, dim=1)
    return [
        [
            {"class": class_names[int(i)], "index": int(i), "probability": float(v)}
            for v, i in zip(row_values, row_indices, strict=True)
        ]
        for row_values, row_indices in zip(values, indices, strict=True)
    ]


def image_files(paths: list[str | Path]) -> list[Path]:
    """Image files named directly, plus every image inside the named folders (sorted).

    A pipe, device or socket is refused up front: reading one could wait forever.
    """
    from convlens.data.readers import check_regular_file, image_files_in

    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = image_files_in(path)
            if not found:
                raise ConvlensError(f"{path}: no PNG/JPEG/BMP/GIF/TIFF images in this folder")
            files += found
        elif path.exists():
            check_regular_file(path)
            files.append(path)
        else:
            raise ConvlensError(f"{path}: no such file or folder")
    return files


def predict_files(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    class_names: list[str],
    paths: list[str | Path],
    top_k: int = 3,
    invert: bool = False,
    check=None,
) -> list[dict]:
    """Classify image files (or folders of them), each read by the one input pipeline (``convlens.inputs``).

    Returns one ``{"file", "predictions": [{"class", "probability"}, ...]}`` per image, best first.
    A file that cannot be read is skipped with one warning (logger ``convlens``) and gets the
    row ``{"file", "error", "predictions": []}`` in its place; only when no file can be read
    is that a ConvlensError.
    ``invert``: classify ``1 − pixels`` (dark-on-light images for a light-on-dark model).
    ``check``: a function image → ``ShiftCheck`` or None (``Run.check_shift``); its result joins
    each row as ``"shift"`` (a dict, or None).
    """
    from convlens.inputs import read_input

    if isinstance(paths, str | Path):  # one path, not its characters
        paths = [paths]
    if not isinstance(paths, list | tuple) or not all(isinstance(p, str | Path) for p in paths):
        raise ConvlensError("paths must be a path or a list of paths", parameter="paths")
    top_k = check_count(top_k, "top_k")

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConvlensError(f"top_k must be at least 1, got {top_k}", parameter="top_k")
    everything = image_files(paths)
    if not everything:
        raise ConvlensError("paths: no image files given", parameter="paths")
    files, loaded, errors = [], [], {}  # errors: index in ``everything`` → message
    for index, file in enumerate(everything):
        try:
            loaded.append(read_input(file, tuple(input_shape), invert=invert, check=check))
            files.append(file)
        except ConvlensError as exc:
            errors[index] = str(exc)
    if not loaded:
        if len(everything) == 1:
            raise ConvlensError(errors[0])
        raise ConvlensError(f"none of the {len(everything)} files could be read, e.g. {errors[0]}")
    for message in errors.values():
        logging.getLogger("convlens").warning("%s; skipped", message)
    images = torch.stack([item.pixels for item in loaded])  # (N, C, H, W)
    ranked = top_predictions(predict_probabilities(model, images), class_names, top_k)
    rows = [
        {
            "file": str(file),
            "predictions": [{"class": p["class"], "probability": p["probability"]} for p in r],
        }
        for file, r in zip(files, ranked, strict=True)
    ]
    if check is not None:
        for row, item in zip(rows, loaded, strict=True):
            row["shift"] = item.shift_json()
    return _in_order(everything, rows, errors)


def _in_order(everything: list[Path], rows: list[dict], errors: dict[int, str]) -> list[dict]:
    """The rows of the readable files and an error row per unreadable one, in the files' order."""
    readable = iter(rows)
    return [
        {"file": str(file), "error": errors[index], "predictions": []} if index in errors else next(readable)
        for index, file in enumerate(everything)
    ]
