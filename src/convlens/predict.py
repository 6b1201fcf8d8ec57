"""Class probabilities for images, from a trained model: per image, or per pixel for segmentation."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
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

    if getattr(model, "task", "classification") == "segmentation":
        raise ConvlensError(
            "model: a segmentation model gives a class per pixel, not a class per image; "
            "use segment for its masks",
            parameter="model",
        )
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


@dataclass
class SegmentationMaps:
    """What a segmentation model says about every pixel of one image.

    ``probabilities`` is the full answer; the rest are the views people ask for: the mask
    (argmax), how sure the model is (``confidence``, the winning probability) and how torn it
    is between all classes (``uncertainty``, the entropy scaled to [0, 1] by log K, so 0 is
    certain and 1 is every class equally likely, whatever the number of classes).
    """

    probabilities: torch.Tensor  # (K, H, W) softmax over classes at every pixel
    mask: torch.Tensor  # (H, W) int64 argmax class id
    confidence: torch.Tensor  # (H, W) the argmax's probability
    uncertainty: torch.Tensor  # (H, W) entropy / log(K) in [0, 1]
    shares: list[dict]  # one {"class", "index", "pixels", "share"} per class, in class order


def check_segmentation_model(model: nn.Module) -> None:
    """Refuse a classifier where a class per pixel is asked for, naming what to use instead."""
    if getattr(model, "task", "classification") != "segmentation":
        raise ConvlensError(
            "model: this is a classification model (a class per image); per-pixel maps need a "
            "segmentation model such as unet or fcn (classify images with predict_probabilities)",
            parameter="model",
        )


def check_pixels(model: nn.Module, pixels, parameter: str = "pixels") -> torch.Tensor:
    """One image (C, H, W) of float pixels in [0, 1] at the model's input size, or a ConvlensError."""
    if isinstance(pixels, torch.Tensor) and pixels.ndim != 3:
        raise ConvlensError(
            f"{parameter} must be one image C x H x W, got shape {tuple(pixels.shape)}", parameter=parameter
        )
    batch = check_images(
        model, pixels.unsqueeze(0) if isinstance(pixels, torch.Tensor) else pixels, parameter
    )
    if batch.numel() and (float(batch.min()) < 0 or float(batch.max()) > 1):
        raise ConvlensError(
            f"{parameter} must be pixels in [0, 1], got values {float(batch.min()):.3g}..{float(batch.max()):.3g}",
            parameter=parameter,
        )
    return batch[0]


def class_labels(class_names: list[str] | None, count: int) -> list:
    """What a share row calls each class: its name when the names are known, else its index."""
    if class_names is None:
        return list(range(count))
    if not isinstance(class_names, list | tuple) or len(class_names) != count:
        raise ConvlensError(
            f"class_names must be a list of {count} names, one per class of the model",
            parameter="class_names",
        )
    return [str(name) for name in class_names]


def pixel_shares(mask: torch.Tensor, class_names: list | None, count: int) -> list[dict]:
    """How much of the image each class covers: {"class", "index", "pixels", "share"} per class."""
    labels = class_labels(class_names, count)
    counts = torch.bincount(mask.reshape(-1).long().cpu(), minlength=count)[:count]
    total = max(int(mask.numel()), 1)
    return [
        {"class": labels[i], "index": i, "pixels": int(counts[i]), "share": int(counts[i]) / total}
        for i in range(count)
    ]


@torch.inference_mode()
def segment(model: nn.Module, pixels: torch.Tensor, class_names: list[str] | None = None) -> SegmentationMaps:
    """Per-pixel class probabilities, mask, confidence and uncertainty of one image (C, H, W) in [0, 1].

    ``class_names`` (optional) names the classes in ``shares``; without it they are indices.
    """
    check_segmentation_model(model)
    image = check_pixels(model, pixels)
    count = int(getattr(model, "num_classes", 0)) or None
    labels = class_labels(class_names, count) if count else None
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        logits = model(image.unsqueeze(0).to(device))[0].float().cpu()  # (K, H, W)
    finally:
        model.train(was_training)
    probabilities = torch.softmax(logits, dim=0)
    classes = probabilities.shape[0]
    confidence, mask = probabilities.max(dim=0)
    entropy = torch.special.entr(probabilities).sum(dim=0)  # 0 log 0 = 0
    uncertainty = (entropy / math.log(classes)).clamp(0, 1) if classes > 1 else torch.zeros_like(entropy)
    return SegmentationMaps(
        probabilities=probabilities,
        mask=mask.long(),
        confidence=confidence,
        uncertainty=uncertainty,
        shares=pixel_shares(mask, labels, classes),
    )
