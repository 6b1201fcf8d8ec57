"""One epoch of training and one pass of evaluation: the inner loops of ``fit``."""

from __future__ import annotations

import math
import time
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from convlens.data import to_float
from convlens.data.bundle import IGNORE_INDEX
from convlens.data.rows import Rows, take
from convlens.errors import ConvlensError, shown
from convlens.pixel_metrics import pixel_confusion
from convlens.train.distributed import SINGLE_PROCESS, World
from convlens.train.recipe import TrainConfig
from convlens.train.tasks import Classification

# Steps between progress reports: each report reads the running loss, which makes the host wait
# for the device. Free on the CPU; on a GPU it would drain the queue of kernels every 10 steps.
# Counted in steps, not seconds, so that every process of a distributed run reports together.
REPORT_EVERY = {"cpu": 10, "cuda": 100}


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
    images: torch.Tensor | Rows,
    labels: torch.Tensor,
    optimizer,
    scheduler,
    config: TrainConfig,
    generator: torch.Generator,
    observer: TrainingObserver,
    world: World = SINGLE_PROCESS,
    task=None,
) -> dict:
    """One pass over the shuffled training tensor; returns loss, accuracy and the seconds it took.

    ``task`` (``train.tasks``) says what a batch's targets are and how they are scored: by
    default a class per image; a segmentation task's accuracy counts pixels.

    With several processes (``train.distributed``) each trains on its shard of every batch and
    the returned numbers are those of all of them together. Each batch is read on its own
    (``data.rows.take``: from memory, or from the folder cache on disk) and made float there:
    memory holds one batch of floats, whatever the data set's size.
    """
    task = task or Classification(config.label_smoothing)
    model.train()
    device = next(model.parameters()).device
    order = torch.randperm(images.shape[0], generator=generator)
    order, batch_size, generator = world.shard(order, config.batch_size, generator)
    order = order.to(images.device)  # fit() keeps the data set on the device: batches are indexed there
    report_every = REPORT_EVERY.get(device.type, 10)
    total_loss = torch.zeros((), device=device)  # summed on the device: no sync per batch
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    start = time.perf_counter()
    for step, first in enumerate(range(0, order.shape[0], batch_size)):
        index = order[first : first + batch_size]
        batch = _to_device(take(images, index), device)  # (B, C, H, W) float in [0, 1]
        target = labels[index].to(device).long()
        batch, target = task.augment(batch, target, generator, config.augment)
        batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, torch.bfloat16, enabled=config.precision == "bf16"):
            logits = model(batch)  # (B, classes), or (B, classes, H, W) for segmentation
            loss = task.loss(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        right, scored = task.counts(logits, target)
        total_loss += loss.detach() * scored
        correct += right
        seen += scored
        if step % report_every == report_every - 1:
            running = float(total_loss) / seen  # the loop syncs here anyway, for the progress bar
            if not world.all_finite(running):  # every process stops, or none
                break  # diverged: the rest of the epoch would only compute NaNs
            done = (step + 1) * batch_size * world.size  # images, not pixels
            observer.batch_done(running, int(correct) / seen, done / (time.perf_counter() - start))
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the host ran ahead of the GPU: time the work, not the queueing
    seconds = time.perf_counter() - start
    world.sync_buffers(model)
    loss_sum, correct, seen, seconds = world.epoch_totals(float(total_loss), int(correct), seen, seconds)
    images_per_second = images.shape[0] / seconds  # every process's share: the whole split
    if math.isfinite(loss_sum):
        observer.batch_done(loss_sum / seen, correct / seen, images_per_second)
    return {
        "train_loss": loss_sum / seen,
        "train_accuracy": correct / seen,
        "epoch_seconds": seconds,
        "images_per_second": images_per_second,
    }


def _check_split(model: nn.Module, images, labels) -> None:
    """A split as ``evaluate`` reads it: images (N, C, H, W) of the model's input, uint8 or
    float, and one class index of the model per image."""
    expected = tuple(getattr(model, "in_shape", ()))
    if (
        not isinstance(images, torch.Tensor | Rows)
        or images.ndim != 4
        or (expected and tuple(images.shape[1:]) != expected)
        or not (images.dtype.is_floating_point or images.dtype == torch.uint8)
    ):
        raise ConvlensError(
            f"images must be a uint8 or float tensor N x {'x'.join(map(str, expected)) or 'C x H x W'}, got "
            f"{shown(images)}",
            parameter="images",
        )
    classes = getattr(model, "num_classes", None)
    if getattr(model, "task", "classification") == "segmentation":
        _check_masks(images, labels, classes)
        return
    if (
        not isinstance(labels, torch.Tensor)
        or labels.ndim != 1
        or labels.shape[0] != images.shape[0]
        or labels.is_floating_point()
        or labels.dtype == torch.bool
        or (labels.numel() and (int(labels.min()) < 0 or (classes and int(labels.max()) >= classes)))
    ):
        raise ConvlensError(
            f"labels must be {images.shape[0]} class indices 0..{(classes or 1) - 1} (an int tensor, one per "
            f"image), got {shown(labels)}",
            parameter="labels",
        )


def _check_masks(images, labels, classes: int | None) -> None:
    """Masks as a segmentation model is scored on: one H x W mask of class ids per image."""
    ok = (
        isinstance(labels, torch.Tensor)
        and labels.ndim == 3
        and tuple(labels.shape) == (images.shape[0], *images.shape[2:])
        and not labels.is_floating_point()
        and labels.dtype != torch.bool
    )
    if ok and labels.numel():
        scored = labels[labels != IGNORE_INDEX]
        ok = not scored.numel() or (int(scored.min()) >= 0 and (not classes or int(scored.max()) < classes))
    if not ok:
        raise ConvlensError(
            f"labels must be {images.shape[0]} masks of {images.shape[2]} x {images.shape[3]} class ids "
            f"0..{(classes or 1) - 1} (or {IGNORE_INDEX}: no class), got {shown(labels)}",
            parameter="labels",
        )


@torch.inference_mode()
def evaluate(
    model: nn.Module, images: torch.Tensor | Rows, labels: torch.Tensor, batch_size: int = 100
) -> dict:
    """Accuracy, mean loss and every prediction on a held-out split (model put in eval mode).

    The keys name no split (``accuracy``, ``loss``, ``predictions``): the same function scores the
    validation and the test split, and the caller says which it asked for. ``images`` may be
    uint8 (0..255, as data sets hold them) or float pixels in [0, 1], in memory or read from
    the folder cache a batch at a time."""
    _check_split(model, images, labels)
    if images.shape[0] == 0:  # no images have no accuracy: 0.0 would read as a model always wrong
        raise ConvlensError("images: no images to evaluate (the split is empty)", parameter="images")
    return evaluate_share(model, images, labels, batch_size)


@torch.inference_mode()
def evaluate_share(
    model: nn.Module, images: torch.Tensor | Rows, labels: torch.Tensor, batch_size: int = 100
) -> dict:
    """``evaluate`` on one process's share of a split, which may be empty when a split is smaller
    than the number of processes (its counts then add nothing when the shares are combined).

    In inference mode, as ``evaluate``: with gradients on, the summed loss would keep every
    batch's activations alive to the end (17 GiB for 4,000 test images at 128x128,
    bench/large_folder.py); without, memory holds one batch however large the split."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConvlensError(
            f"batch_size must be a whole number >= 1, got {batch_size!r}", parameter="batch_size"
        )
    model.eval()
    if getattr(model, "task", "classification") == "segmentation":
        return _evaluate_masks(model, images, labels, batch_size)
    device = next(model.parameters()).device
    predictions, total_loss = [], torch.zeros((), device=device)  # summed on the device: one sync
    for first in range(0, images.shape[0], batch_size):
        batch = _to_device(take(images, slice(first, first + batch_size)), device)
        logits = model(batch)
        target = labels[first : first + batch_size].to(device)
        total_loss += F.cross_entropy(logits, target, reduction="sum")
        predictions.append(logits.argmax(1))
    predicted = torch.cat(predictions).cpu() if predictions else torch.zeros(0, dtype=torch.int64)
    count = max(int(labels.shape[0]), 1)
    return {
        "accuracy": float((predicted == labels.cpu()).sum()) / count,
        "loss": float(total_loss) / count,
        "predictions": predicted,
    }


def _evaluate_masks(model: nn.Module, images, masks: torch.Tensor, batch_size: int) -> dict:
    """``evaluate_share`` of a segmentation model: pixel accuracy, the mean cross-entropy per
    scored pixel (unweighted: the split's own likelihood), every predicted mask (uint8), and the
    pixel confusion matrix every IoU and Dice is computed from (``convlens.pixel_metrics``)."""
    device = next(model.parameters()).device
    classes = model.num_classes
    confusion = torch.zeros(classes, classes, dtype=torch.int64)
    predictions = torch.zeros(tuple(masks.shape), dtype=torch.uint8)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    for first in range(0, images.shape[0], batch_size):
        batch = _to_device(take(images, slice(first, first + batch_size)), device)
        logits = model(batch)  # (B, classes, H, W)
        target = masks[first : first + batch_size].to(device).long()
        total_loss += F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum").double()
        predicted = logits.argmax(1).cpu()
        predictions[first : first + batch_size] = predicted.to(torch.uint8)
        confusion += pixel_confusion(target.cpu(), predicted, classes)
    scored = int(confusion.sum())
    return {
        "accuracy": float(confusion.diagonal().sum()) / max(scored, 1),
        "loss": float(total_loss) / max(scored, 1),
        "predictions": predictions,
        "confusion": confusion,
        "pixels": scored,
    }
