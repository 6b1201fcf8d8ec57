"""The divergence guard: a run that blows up rolls back, slows down and goes on — or stops loudly.

After every good epoch the guard keeps a copy of everything training needs (weights,
optimizer, schedule, random generator). An epoch is bad when its training loss or any
weight is not finite, or when its validation loss spikes: above ``SPIKE_FACTOR`` times the
best so far and at least ``SPIKE_MARGIN`` nats above it (the margin keeps a 0.05 → 0.6
wobble on a 12-image validation split from counting). A bad epoch is undone, the whole
learning-rate schedule is multiplied by ``LR_BACKOFF`` and the epoch runs again.

A run that keeps producing NaN after ``MAX_ROLLBACKS`` rollbacks stops with one clear error
(nothing non-finite is ever saved). Spikes are different: the weights are still usable, so
after ``MAX_ROLLBACKS`` spike rollbacks the guard lets later spikes through, and choosing the
epoch on validation (``train.selection``) keeps the damage out of ``model.*``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from convlens.errors import ConvlensError

SPIKE_FACTOR = 5.0
SPIKE_MARGIN = 1.0
LR_BACKOFF = 0.3
MAX_ROLLBACKS = 3
SCHEDULE_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")  # what OneCycleLR computes each step from


class TrainingDiverged(ConvlensError):
    """Training kept diverging although the learning rate was lowered: one line for the user."""


class Problem(NamedTuple):
    """Why an epoch is undone: ``kind`` is "non-finite" or "spike"."""

    kind: str
    reason: str


@dataclass
class Snapshot:
    """Everything needed to continue training exactly from the end of one epoch."""

    epoch: int  # the last completed epoch (0: before training)
    model: dict
    optimizer: dict
    scheduler: dict
    generator: torch.Tensor
    lr_scale: float  # the schedule's multiplier these optimizer groups were saved with


def weights_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


@dataclass
class DivergenceGuard:
    """Judges each epoch, keeps the last good state, and rolls back to it."""

    lr_scale: float = 1.0  # the schedule's multiplier after rollbacks so far
    best_val_loss: float = math.inf
    events: list[dict] = field(default_factory=list)  # one per rollback, stored in the history
    snapshot: Snapshot | None = None

    def keep(self, epoch: int, model, optimizer, scheduler, generator) -> None:
        """Remember the state after a good epoch (or before the first one)."""
        self.snapshot = Snapshot(
            epoch=epoch,
            model={k: v.detach().clone() for k, v in model.state_dict().items()},
            optimizer=copy.deepcopy(optimizer.state_dict()),
            scheduler=copy.deepcopy(scheduler.state_dict()),
            generator=generator.get_state(),
            lr_scale=self.lr_scale,
        )

    def problem(self, train_loss: float, val_loss: float | None, model: nn.Module) -> Problem | None:
        """What went wrong in this epoch, or None when it is fine (or a spike the guard no longer undoes)."""
        if not math.isfinite(train_loss):
            return Problem("non-finite", "the training loss became infinite or NaN")
        if not weights_finite(model):
            return Problem("non-finite", "a weight became infinite or NaN")
        if val_loss is not None:
            if not math.isfinite(val_loss):
                return Problem("non-finite", "the validation loss became infinite or NaN")
            limit = max(SPIKE_FACTOR * self.best_val_loss, self.best_val_loss + SPIKE_MARGIN)
            spikes = sum(1 for event in self.events if event["kind"] == "spike")
            if val_loss > limit and spikes < MAX_ROLLBACKS:
                reason = (
                    f"the validation loss jumped to {val_loss:.3g} (best so far {self.best_val_loss:.3g})"
                )
                return Problem("spike", reason)
        return None

    def accept(self, val_loss: float | None) -> None:
        if val_loss is not None:
            self.best_val_loss = min(self.best_val_loss, val_loss)

    def roll_back(
        self, epoch: int, problem: Problem, model, optimizer, scheduler, generator, peak_lr: float
    ) -> dict:
        """Restore the last good state and lower the learning-rate schedule; returns the event.

        Raises ``TrainingDiverged`` when the run has already been rolled back ``MAX_ROLLBACKS`` times.
        """
        kind, reason = problem
        failures = sum(1 for event in self.events if event["kind"] == kind)
        if kind == "non-finite" and failures >= MAX_ROLLBACKS:
            raise TrainingDiverged(
                f"lr: training diverged at epoch {epoch} ({reason}) {failures + 1} times, even "
                f"with the peak learning rate lowered from {peak_lr:g} to {peak_lr * self.lr_scale:.3g}; "
                f"train again with a lower learning rate, e.g. lr={_suggest(peak_lr * self.lr_scale)}",
                parameter="lr",
            )
        assert self.snapshot is not None, "keep() runs before the first epoch"
        model.load_state_dict(self.snapshot.model)
        optimizer.load_state_dict(copy.deepcopy(self.snapshot.optimizer))
        scheduler.load_state_dict(copy.deepcopy(self.snapshot.scheduler))
        generator.set_state(self.snapshot.generator)
        self.lr_scale *= LR_BACKOFF
        factor = self.lr_scale / self.snapshot.lr_scale
        for group in optimizer.param_groups:  # the restored groups carry the saved schedule: scale it
            for key in SCHEDULE_KEYS:
                if key in group:
                    group[key] *= factor
        event = {
            "epoch": epoch,
            "kind": kind,
            "reason": reason,
            "rolled_back_to": self.snapshot.epoch,
            "lr_scale": self.lr_scale,
            "peak_lr": peak_lr * self.lr_scale,
        }
        self.events.append(event)
        return event


def _suggest(lr: float) -> str:
    """A round learning rate to try next: ten times below the last one tried, and at most 0.01."""
    candidate = min(lr / 10, 0.01)
    return f"{10.0 ** math.floor(math.log10(max(candidate, 1e-12))):g}"


def out_of_memory(error: BaseException, device: torch.device, config, input_shape) -> ConvlensError | None:
    """One line for an allocation failure while training (None: ``error`` is something else).

    CUDA raises its own error class; the CPU allocator a RuntimeError saying it "can't allocate
    memory". Either way the fix is the same: fewer images per step, smaller images or a smaller model.
    """
    if not (isinstance(error, torch.cuda.OutOfMemoryError) or "can't allocate memory" in str(error)):
        return None
    options = f" {config.model_options}" if config.model_options else ""
    where = "GPU" if device.type == "cuda" else device.type.upper()
    return ConvlensError(
        f"batch_size: the {where} ran out of memory training {config.model}{options} on "
        f"{'x'.join(map(str, input_shape))} images in batches of {config.batch_size}; train again with a "
        f"smaller batch (e.g. batch_size={max(1, config.batch_size // 4)}), smaller images or a smaller model",
        parameter="batch_size",
    )
