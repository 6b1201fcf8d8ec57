"""Class probabilities for images, from a trained model."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from convlens.errors import ConvlensError


@torch.inference_mode()
def predict_probabilities(model: nn.Module, images: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """Softmax probabilities (N, classes) for float images (N, C, H, W) in [0, 1]."""
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for first in range(0, images.shape[0], batch_size):
        batch = images[first : first + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        outputs.append(torch.softmax(model(batch).float(), dim=1).cpu())
    return torch.cat(outputs) if outputs else torch.zeros(0, getattr(model, "num_classes", 0))


def top_predictions(probabilities: torch.Tensor, class_names: list[str], k: int = 3) -> list[list[dict]]:
    """The k most probable classes per image: [[{"class", "index", "probability"}, ...], ...]."""
    k = max(1, min(k, probabilities.shape[1]))
    values, indices = probabilities.topk(k, dim=1)
    return [
        [
            {"class": class_names[int(i)], "index": int(i), "probability": float(v)}
            for v, i in zip(row_values, row_indices, strict=True)
        ]
        for row_values, row_indices in zip(values, indices, strict=True)
    ]


def image_files(paths: list[str | Path]) -> list[Path]:
    """Image files named directly, plus every image inside the named folders (sorted)."""
    from convlens.data.readers import IMAGE_SUFFIXES

    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ConvlensError(f"{path}: no PNG/JPEG/BMP/GIF/TIFF images in this folder")
            files += found
        elif path.exists():
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
) -> list[dict]:
    """Classify image files (or folders of them), each converted to the model's input like training data.

    Returns one ``{"file", "predictions": [{"class", "probability"}, ...]}`` per image, best first.
    """
    from convlens.data import load_image

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConvlensError(f"top_k must be at least 1, got {top_k}", parameter="top_k")
    files = image_files(paths)
    images = torch.stack([load_image(f, tuple(input_shape)) for f in files])  # (N, C, H, W)
    ranked = top_predictions(predict_probabilities(model, images), class_names, top_k)
    return [
        {"file": str(f), "predictions": [{"class": p["class"], "probability": p["probability"]} for p in r]}
        for f, r in zip(files, ranked, strict=True)
    ]
