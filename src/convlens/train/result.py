"""What ``fit()`` returns, and what every checkpoint of a run records about its data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from convlens.data import Dataset


@dataclass
class TrainResult:
    """What fit() returns: final metrics, per-epoch history, the epoch kept and why, findings."""

    test_accuracy: float  # of model.* (the kept epoch), on the test split
    best_accuracy: float  # the best validation accuracy (test accuracy when there is no validation)
    best_epoch: int
    epochs: int  # epochs trained (fewer than planned after early stopping)
    train_seconds: float
    history: list[dict]
    checkpoint: str
    run_dir: str
    class_names: list[str]
    per_class: list[dict]  # {"class", "precision", "recall", "support"} on the test split
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    selected_epoch: int = 0  # the epoch whose weights are model.*
    selection: str = ""  # why that epoch
    stopped: str | None = None  # why training ended before its last epoch, if it did
    validation: dict = field(default_factory=dict)  # the split's sizes and rule
    diagnostics: list[dict] = field(default_factory=list)
    world_size: int = 1  # processes that trained it together (train.distributed)
    init: dict | None = None  # what the weights started from (train.init_weights: InitReport)
    task: str = "classification"  # or segmentation: then test_accuracy counts pixels
    # segmentation only (None for classification), on the test split (convlens.pixel_metrics)
    test_mean_iou: float | None = None
    test_pixel_accuracy: float | None = None
    test_dice: float | None = None
    per_class_iou: list[dict] | None = None  # {"class", "iou", "dice", "pixels", "predicted_pixels"}

    def to_json(self) -> dict:
        data = asdict(self)
        if self.task == "classification":  # a classifier's JSON stays as it always was
            for key in ("task", "test_mean_iou", "test_pixel_accuracy", "test_dice", "per_class_iou"):
                del data[key]
        return data


def dataset_facts(dataset: Dataset) -> dict:
    """What a checkpoint records of the data it was trained on (``resume`` checks the fingerprint)."""
    return {
        "name": dataset.name,
        "spec": dataset.spec,
        "fingerprint": dataset.fingerprint(),
        "source": dataset.source,
        "input_shape": list(dataset.input_shape),
        "train": int(dataset.train_labels.shape[0]),
        "test": int(dataset.test_labels.shape[0]),
    }
