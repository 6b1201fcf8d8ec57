"""Class probabilities for images, from a trained model."""

from __future__ import annotations

import torch
from torch import nn


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
