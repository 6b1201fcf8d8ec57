"""Training: fit(), train_one_epoch(), evaluate() — fast on a laptop CPU, resumable, reproducible.

The recipe (measured in bench/train_speed.py): the whole data set lives in one tensor and
is shuffled with a seeded generator (no per-sample DataLoader), a random affine per image
is applied to each batch in one grid_sample call, channels_last memory, SGD with Nesterov
momentum under a OneCycle schedule, and cross-entropy with label smoothing.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from convlens.data import Dataset, to_float
from convlens.data.transforms import AUGMENTATIONS, augment
from convlens.errors import ConvlensError
from convlens.metrics import classification_summary


@dataclass
class TrainConfig:
    """Everything that decides a training run; stored in every checkpoint."""

    model: str = "convnet"  # a registered model name
    model_options: dict = field(default_factory=dict)  # extra constructor options, e.g. {"width": 32}
    epochs: int | None = None  # None: chosen by data set size (see resolve_defaults)
    batch_size: int = 64  # small batches give more updates per second on 2 cores
    lr: float = 0.1  # OneCycle peak learning rate for SGD
    momentum: float = 0.9  # Nesterov momentum
    weight_decay: float = 0.0  # not needed at this scale; label smoothing and augmentation regularize
    label_smoothing: float = 0.1  # +0.6 points on mnist5k
    augment: str = "auto"  # auto | affine | flip-shift | shift | none (see data.transforms.AUGMENTATIONS)
    pct_start: float = 0.25  # fraction of steps spent warming the learning rate up
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    eval_batch_size: int = 100  # batch 100 evaluates 2-5x faster than one big batch on CPU

    def check(self) -> None:
        """Reject values training cannot use, naming the option."""
        from convlens.models import list_models

        if self.model not in list_models():
            raise ConvlensError(f"unknown model {self.model!r}; choose one of: {', '.join(list_models())}")
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise ConvlensError(f"epochs must be a positive integer, got {self.epochs}", parameter="epochs")
        if self.batch_size < 1:
            raise ConvlensError(
                f"batch_size must be at least 1, got {self.batch_size}", parameter="batch_size"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConvlensError(f"lr must be a positive number, got {self.lr}", parameter="lr")
        if self.augment != "auto" and self.augment not in AUGMENTATIONS:
            raise ConvlensError(
                f"augment must be auto or one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}",
                parameter="augment",
            )
        if not 0 <= self.label_smoothing < 1:
            raise ConvlensError(
                f"label_smoothing must be in [0, 1), got {self.label_smoothing}", parameter="label_smoothing"
            )
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConvlensError(f"device must be auto, cpu or cuda, got {self.device!r}", parameter="device")


LARGE_DATASET = 20_000  # training images above which the big-data recipe applies
MIN_STEPS = 460  # optimizer steps a small data set gets at least (digits: 23 steps x 20 epochs)


def resolve_defaults(config: TrainConfig, dataset: Dataset) -> TrainConfig:
    """Fill the settings left on "auto" with the recipe measured fastest for this data set's size.

    Small sets (digits, mnist5k, a clinic's folder): many cheap epochs with augmentation.
    Large sets (Fashion-MNIST's 60k): fewer epochs, a deeper convnet with BatchNorm and no
    augmentation — at 60k images a 10-epoch schedule underfits, and augmentation cost
    1-2 points of accuracy in every configuration measured (bench/README.md).
    """
    size = int(dataset.train_labels.shape[0])
    large = size > LARGE_DATASET
    if config.epochs is None:
        steps_per_epoch = math.ceil(size / config.batch_size)
        # a small folder still needs a few hundred optimizer steps: 48 images at batch 64 is one
        # step an epoch, so count epochs from steps there (digits: 23 steps x 20 epochs)
        small = min(max(20, math.ceil(MIN_STEPS / steps_per_epoch)), 300)
        config.epochs = small if size <= 2_000 else 10 if large else 5
    if config.augment == "auto":
        config.augment = "none" if large else (dataset.augmentation or "shift")
    if config.model == "convnet" and large and not config.model_options:
        config.model_options = {"blocks": 3, "batchnorm": True}
    return config


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConvlensError(f"device {name}: CUDA is not available on this machine", parameter="device")
    return torch.device(name)


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


@dataclass
class TrainResult:
    """What fit() returns: final metrics, per-epoch history and where the checkpoints are."""

    test_accuracy: float
    best_accuracy: float
    best_epoch: int
    epochs: int
    train_seconds: float
    history: list[dict]
    checkpoint: str
    run_dir: str
    class_names: list[str]
    per_class: list[dict]  # {"class", "precision", "recall", "support"}
    confusion: list[list[int]]  # rows: true class, columns: predicted class

    def to_json(self) -> dict:
        return asdict(self)


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
            observer.batch_done(
                float(total_loss) / seen, int(correct) / seen, seen / (time.perf_counter() - start)
            )
    seconds = time.perf_counter() - start
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


def _write_metrics(run_dir: Path, history: list[dict]) -> None:
    from convlens.checkpoint import atomic_write

    atomic_write(run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history).encode())


def _dataset_facts(dataset: Dataset) -> dict:
    return {
        "name": dataset.name,
        "spec": dataset.spec,
        "fingerprint": dataset.fingerprint(),
        "source": dataset.source,
        "input_shape": list(dataset.input_shape),
        "train": int(dataset.train_labels.shape[0]),
        "test": int(dataset.test_labels.shape[0]),
    }


def fit(
    dataset: Dataset,
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    observer: TrainingObserver | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``dataset``; write checkpoints and metrics.jsonl to ``run_dir``.

    ``run_dir/model.*`` is the final model, ``best.*`` the epoch with the best held-out accuracy
    (chosen on the test split, so its accuracy is optimistic) and ``last.*`` everything
    ``resume=True`` needs to continue exactly where an interrupted run stopped.
    """
    from convlens.checkpoint import (
        read_checkpoint,
        restore_optimizer_state,
        save_checkpoint,
        split_optimizer_state,
    )
    from convlens.models import create_model

    config.check()
    observer = observer or _Silent()
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConvlensError(f"run_dir {run_dir}: exists and is not a folder", parameter="run_dir")
    facts = _dataset_facts(dataset)
    if resume:
        if not (run_dir / "last.json").is_file():
            raise ConvlensError(f"resume: {run_dir} has no last.json to resume from", parameter="resume")
        _, model, meta, state = read_checkpoint(run_dir / "last.json")
        saved = TrainConfig(**meta["training"])
        if config.epochs is not None and config.epochs != saved.epochs:
            raise ConvlensError(
                f"resume continues the saved {saved.epochs}-epoch schedule; got epochs={config.epochs}",
                parameter="resume",
            )
        if meta["dataset"]["fingerprint"] != facts["fingerprint"]:
            raise ConvlensError(
                f"resume: {run_dir} was trained on different data ({meta['dataset']['name']})",
                parameter="resume",
            )
        config = saved
    else:
        if ((run_dir / "model.json").exists() or (run_dir / "last.json").exists()) and not overwrite:
            raise ConvlensError(
                f"run_dir {run_dir}: already holds a run; pass resume=True to continue it or "
                "overwrite=True to replace it",
                parameter="run_dir",
            )
        config = resolve_defaults(config, dataset)
        torch.manual_seed(config.seed)  # weight initialization
        model = create_model(
            config.model,
            dataset.input_shape,
            dataset.num_classes,
            dataset.mean,
            dataset.std,
            **config.model_options,
        )
    device = resolve_device(config.device)
    model = model.to(device).to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(config.seed)  # shuffling and augmentation
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=True,
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = math.ceil(dataset.train_labels.shape[0] / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, pct_start=config.pct_start, total_steps=config.epochs * steps_per_epoch
    )
    history: list[dict] = []
    first_epoch, best = 1, (-1.0, 0)
    if resume:
        restore_optimizer_state(
            optimizer, {k: v.to(device) for k, v in state.items()}, meta["resume"]["optimizer"]
        )
        scheduler.load_state_dict(meta["resume"]["scheduler"])
        generator.set_state(state["rng.generator"])
        history = meta["history"]
        first_epoch = meta["resume"]["epoch"] + 1
        best = (meta["resume"]["best_accuracy"], meta["resume"]["best_epoch"])
    common = {
        "class_names": dataset.class_names,
        "training": asdict(config),
        "dataset": facts,
        "normalization": {
            "mean": list(dataset.mean),
            "std": list(dataset.std),
            "source": dataset.normalization_source,
        },
    }
    train_seconds = history[-1]["train_seconds"] if history else 0.0
    for epoch in range(first_epoch, config.epochs + 1):
        observer.start_epoch(epoch, config.epochs, steps_per_epoch)
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        row.update(
            train_one_epoch(
                model,
                dataset.train_images,
                dataset.train_labels,
                optimizer,
                scheduler,
                config,
                generator,
                observer,
            )
        )
        train_seconds += row["epoch_seconds"]
        evaluation = evaluate(model, dataset.test_images, dataset.test_labels, config.eval_batch_size)
        row.update(
            test_accuracy=evaluation["test_accuracy"],
            test_loss=evaluation["test_loss"],
            train_seconds=train_seconds,
        )
        history.append(row)
        metrics = {
            k: row[k] for k in ("epoch", "test_accuracy", "test_loss", "train_accuracy", "train_seconds")
        }
        if row["test_accuracy"] > best[0]:
            best = (row["test_accuracy"], epoch)
            save_checkpoint(run_dir / "best", model, {**common, "metrics": metrics, "history": history})
        optimizer_tensors, optimizer_plain = split_optimizer_state(optimizer)
        save_checkpoint(
            run_dir / "last",
            model,
            {
                **common,
                "metrics": metrics,
                "history": history,
                "resume": {
                    "epoch": epoch,
                    "optimizer": optimizer_plain,
                    "scheduler": scheduler.state_dict(),
                    "best_accuracy": best[0],
                    "best_epoch": best[1],
                },
            },
            state_tensors={**optimizer_tensors, "rng.generator": generator.get_state()},
        )
        _write_metrics(run_dir, history)
        observer.end_epoch(row)
    if first_epoch > config.epochs:  # resumed a run whose epochs were all done: nothing was evaluated
        evaluation = evaluate(model, dataset.test_images, dataset.test_labels, config.eval_batch_size)
    final = evaluation  # the last epoch's evaluation is of the final weights already
    per_class, confusion = classification_summary(
        dataset.test_labels, final["predictions"], dataset.class_names
    )
    summary = {
        "test_accuracy": final["test_accuracy"],
        "test_loss": final["test_loss"],
        "epochs": config.epochs,
        "train_seconds": train_seconds,
        "best_accuracy": best[0],
        "best_epoch": best[1],
        "per_class": per_class,
        "confusion": confusion,
    }
    checkpoint = save_checkpoint(run_dir / "model", model, {**common, "metrics": summary, "history": history})
    return TrainResult(
        test_accuracy=final["test_accuracy"],
        best_accuracy=best[0],
        best_epoch=best[1],
        epochs=config.epochs,
        train_seconds=train_seconds,
        history=history,
        checkpoint=str(checkpoint),
        run_dir=str(run_dir),
        class_names=dataset.class_names,
        per_class=per_class,
        confusion=confusion,
    )
