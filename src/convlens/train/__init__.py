"""Training: ``fit()`` and its pieces — fast on a laptop CPU, resumable, guarded, honest about what it kept.

- ``recipe``: ``TrainConfig`` and the defaults chosen from the data (``resolve_defaults``);
- ``validation``: the split every decision is made on;
- ``loop``: one epoch of training, one pass of evaluation;
- ``guard``: roll back and slow down when a run diverges;
- ``diagnostics``: what might be wrong with the trained model, in sentences;
- ``fitting``: ``fit()``, the run itself;
- ``jobs``: a training as a job in a child process (``TrainJob``, ``start``, stop, outcome), as the
  explorer starts them;
- ``follow``: any run folder followed epoch by epoch while something trains into it.
"""

from convlens.train.diagnostics import Diagnostic, diagnose, relu_statistics
from convlens.train.fitting import TrainResult, fit
from convlens.train.follow import Ended, EpochEvent, Restart, follow
from convlens.train.guard import TrainingDiverged
from convlens.train.jobs import JobOutcome, TrainingJob, TrainJob
from convlens.train.loop import TrainingObserver, evaluate, train_one_epoch
from convlens.train.recipe import TrainConfig, resolve_defaults, resolve_device
from convlens.train.validation import validation_split

__all__ = [
    "Diagnostic",
    "Ended",
    "EpochEvent",
    "JobOutcome",
    "Restart",
    "TrainConfig",
    "TrainJob",
    "TrainResult",
    "TrainingDiverged",
    "TrainingJob",
    "TrainingObserver",
    "diagnose",
    "evaluate",
    "fit",
    "follow",
    "relu_statistics",
    "resolve_defaults",
    "resolve_device",
    "train_one_epoch",
    "validation_split",
]
