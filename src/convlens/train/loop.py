"""One epoch of training and one pass of evaluation: the inner loops of ``fit``."""

from __future__ import annotations

import math
import time
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from convlens.data import to_float
from convlens.data.transforms import augment
from convlens.train.recipe import TrainConfig


class TrainingObserver(Protocol):
    """What a face implements to show progress (the CLI draws a Rich progress bar)."""

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None: ...
    def batch_done(self, loss: float, accuracy: float, images_per_second: float) -> None: ...
    def end_epoch(self, metrics: dict) -> None: ...


class _Silent:
    def start_epoch(self, epoch, epochs, batches):
        pass

    def batch_done(self, loss, accuracy, images_per_second):
        pass

    def end_epoch(self, metrics):
        pass


def _to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return to_float(images).to(device).contiguous(memory_format=torch.channels_last)


def train_one_epoch(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer,
    scheduler,
    config: TrainConfig,
    generator: torch.Generator,
    observer: TrainingObserver,
) -> dict:
    """One pass over the shuffled training tensor; returns loss, accuracy and the seconds it took."""
    model.train()
    device = next(model.parameters()).device
    order = torch.randperm(images.shape[0], generator=generator)
    total_loss = torch.zeros((), device=device)  # summed on the device: no sync per batch
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    start = time.perf_counter()
    for step, first in enumerate(range(0, images.shape[0], config.batch_size)):
        index = order[first : first + config.batch_size]
        batch = _to_device(images[index], device)  # (B, C, H, W) float in [0, 1]
        target = labels[index].to(device)
        batch = augment(batch, generator, config.augment).contiguous(memory_format=torch.channels_last)
        logits = model(batch)  # (B, classes)
        loss = F.cross_entropy(logits, target, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.detach() * target.shape[0]
        correct += (logits.detach().argmax(1) == target).sum()
        seen += target.shape[0]
        if step % 10 == 9:
            running = float(total_loss) / seen  # the loop syncs here anyway, for the progress bar
            if not math.isfinite(running):
                break  # diverged: the rest of the epoch would only compute NaNs
            observer.batch_done(running, int(correct) / seen, seen / (time.perf_counter() - start))
    seconds = time.perf_counter() - start
    if math.isfinite(float(total_loss)):
        observer.batch_done(float(total_loss) / seen, int(correct) / seen, seen / seconds)
    return {
        "train_loss": float(total_loss) / seen,
        "train_accuracy": int(correct) / seen,
        "epoch_seconds": seconds,
        "images_per_second": seen / seconds,
    }


@torch.inference_mode()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 100) -> dict:
    """Accuracy, mean loss and every prediction on a held-out split (model put in eval mode)."""
    model.eval()
    device = next(model.parameters()).device
    predictions, total_loss = [], 0.0
    for first in range(0, images.shape[0], batch_size):
        batch = _to_device(images[first : first + batch_size], device)
        logits = model(batch)
        target = labels[first : first + batch_size].to(device)
        total_loss += float(F.cross_entropy(logits, target, reduction="sum"))
        predictions.append(logits.argmax(1).cpu())
    predicted = torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.int64)
    count = max(int(labels.shape[0]), 1)
    return {
        "test_accuracy": float((predicted == labels).sum()) / count,
        "test_loss": total_loss / count,
        "predictions": predicted,
    }
