"""Where a run stands between epochs: what ``last.*`` saves and ``resume`` restores.

Besides the weights, optimizer, schedule and random generator (saved as tensors and plain
values by ``fitting``), a run carries its history, its best epoch on validation, how long it
has gone without a better one, why it stopped early, and the divergence guard's state.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from convlens.storage import atomic_write
from convlens.train.guard import DivergenceGuard

NO_SCORE = (-1.0, -1e300)  # below every real (accuracy, -loss); JSON has no infinity


@dataclass
class Progress:
    """Where a run stands between epochs: what ``last.*`` saves and ``resume`` restores."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0  # the best epoch on validation so far (0: none yet)
    best_score: tuple = NO_SCORE
    stale: int = 0  # epochs since the best one
    stopped: str | None = None  # why the run ended early

    @property
    def next_epoch(self) -> int:
        return self.history[-1]["epoch"] + 1 if self.history else 1

    def write_metrics(self, run_dir: Path) -> None:
        """``metrics.jsonl``: one JSON line per epoch of the history so far."""
        text = "".join(json.dumps(row) + "\n" for row in self.history)
        atomic_write(run_dir / "metrics.jsonl", text.encode())

    @property
    def train_seconds(self) -> float:
        return self.history[-1]["train_seconds"] if self.history else 0.0

    def saved(self, guard: DivergenceGuard) -> dict:
        return {
            "epoch": self.history[-1]["epoch"],
            "best_epoch": self.best_epoch,
            "best_score": list(self.best_score),
            "stale": self.stale,
            "stopped": self.stopped,
            "lr_scale": guard.lr_scale,
            "best_val_loss": guard.best_val_loss if math.isfinite(guard.best_val_loss) else None,
            "rollbacks": guard.events,
        }

    @classmethod
    def restored(cls, meta: dict, guard: DivergenceGuard) -> Progress:
        saved = meta["resume"]
        guard.lr_scale = saved.get("lr_scale", 1.0)
        if saved.get("best_val_loss") is not None:
            guard.best_val_loss = saved["best_val_loss"]
        guard.events = list(saved.get("rollbacks", []))
        return cls(
            history=meta["history"],
            best_epoch=saved.get("best_epoch", 0),
            best_score=tuple(saved.get("best_score", NO_SCORE)),
            stale=saved.get("stale", 0),
            stopped=saved.get("stopped"),
        )


def epoch_metrics(row: dict) -> dict:
    """The "metrics" a checkpoint saved during training carries: one history row's numbers."""
    keys = (
        "epoch",
        "test_accuracy",
        "test_loss",
        "train_accuracy",
        "train_seconds",
        "val_accuracy",
        "val_loss",
    )
    return {key: row[key] for key in keys if key in row}
