"""Training: ``fit()`` and its pieces — fast on a laptop CPU, resumable, guarded, honest about what it kept.

- ``recipe``: ``TrainConfig`` and the defaults chosen from the data (``resolve_defaults``);
- ``validation``: the split every decision is made on;
- ``loop``: one epoch of training, one pass of evaluation;
- ``guard``: roll back and slow down when a run diverges;
- ``diagnostics``: what might be wrong with the trained model, in sentences;
- ``fitting``: ``fit()``, the run itself.
"""

from convlens.train.diagnostics import Diagnostic, diagnose, relu_statistics
from convlens.train.fitting import TrainResult, fit
from convlens.train.guard import TrainingDiverged
from convlens.train.loop import TrainingObserver, evaluate, train_one_epoch
from convlens.train.recipe import TrainConfig, resolve_defaults, resolve_device
from convlens.train.validation import validation_split

__all__ = [
    "Diagnostic",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "TrainingObserver",
    "diagnose",
    "evaluate",
    "fit",
    "relu_statistics",
    "resolve_defaults",
    "resolve_device",
    "train_one_epoch",
    "validation_split",
]
