"""A confidence score is not the truth: reliability, expected calibration error, temperature scaling.

The test split is cut in two (stratified, seeded): on one half a single temperature T is fitted
so that softmax(logits / T) has the lowest negative log-likelihood; the other half measures
ECE and the reliability diagram before and after. Dividing by T never changes the argmax, so
accuracy stays the same — only how sure the model says it is changes. Trained without label
smoothing by default, because smoothing itself pulls confidences down and hides the effect.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from convlens.data import Dataset
from convlens.errors import ConvlensError
from convlens.lab._common import (
    LabResult,
    check_positive,
    predict_logits,
    register_experiment,
    train_quick,
)

BINS = 15


@dataclass
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    accuracy: float  # fraction correct in the bin (0 when empty)
    confidence: float  # mean top-class probability in the bin (0 when empty)


def reliability(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> list[ReliabilityBin]:
    """Equal-width confidence bins over [0, 1]; a confidence c falls in the bin with lower < c ≤ upper."""
    confidence, predicted = probabilities.max(dim=1)  # (N,), (N,)
    return confidence_bins(confidence, predicted == labels, bins)


def confidence_bins(
    confidence: torch.Tensor, correct: torch.Tensor, bins: int = BINS
) -> list[ReliabilityBin]:
    """``reliability`` from each answer's confidence and whether it was right, so answers that are
    not one per image (a segmentation model's pixels) are binned by the same rule."""
    correct = correct.float()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    # bucketize(right=False) gives the i with edges[i-1] < c <= edges[i]; clamp puts c = 0 in the first bin
    which = (torch.bucketize(confidence.double(), edges) - 1).clamp(0, bins - 1)
    table = []
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        table.append(
            ReliabilityBin(
                lower=float(edges[b]),
                upper=float(edges[b + 1]),
                count=count,
                accuracy=float(correct[members].mean()) if count else 0.0,
                confidence=float(confidence[members].double().mean()) if count else 0.0,
            )
        )
    return table


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> float:
    """ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b| over equal-width confidence bins."""
    return calibration_error(reliability(probabilities, labels, bins))


def calibration_error(table: list[ReliabilityBin]) -> float:
    """ECE of binned answers: Σ_b (n_b / N) · |accuracy_b − confidence_b| (0 with no answer)."""
    total = sum(b.count for b in table)
    if total == 0:
        return 0.0
    return sum(b.count / total * abs(b.accuracy - b.confidence) for b in table)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 minimizing the mean NLL of softmax(logits / T), by bounded search on log T."""
    from scipy.optimize import minimize_scalar

    logits = logits.double()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / torch.exp(torch.tensor(log_t, dtype=torch.float64)), labels))

    best = minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded", options={"xatol": 1e-6})
    return float(torch.exp(torch.tensor(best.x)))


def split_halves(labels: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of two stratified halves: every class split as evenly as possible."""
    generator = torch.Generator().manual_seed(seed)
    first, second = [], []
    for cls in labels.unique():
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        half = members.numel() // 2
        first.append(members[:half])
        second.append(members[half:])
    return torch.cat(first).sort().values, torch.cat(second).sort().values


@dataclass
class CalibrationResult(LabResult):
    dataset: str
    model: str
    epochs: int
    label_smoothing: float
    fit_images: int  # held-out half used to fit T
    eval_images: int  # other half, where ECE is measured
    accuracy: float  # on the evaluation half; the same before and after
    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    mean_confidence_before: float
    mean_confidence_after: float
    bins_before: list[ReliabilityBin]
    bins_after: list[ReliabilityBin]
    seconds: float = 0.0


def run(
    dataset: Dataset,
    model_name: str = "convnet",
    epochs: int = 10,
    label_smoothing: float = 0.0,
    seed: int = 0,
) -> CalibrationResult:
    """Train, fit a temperature on one half of the test split, compare calibration on the other."""
    check_positive("epochs", epochs)
    if not 0 <= label_smoothing < 1:
        raise ConvlensError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if dataset.test_labels.shape[0] < 20:
        raise ConvlensError(f"{dataset.name}: calibration needs at least 20 test images")
    model, _ = train_quick(dataset, model_name, epochs, seed, label_smoothing=label_smoothing)
    logits = predict_logits(model, dataset.test_images).double()  # (N, classes)
    fit_index, eval_index = split_halves(dataset.test_labels, seed)
    temperature = fit_temperature(logits[fit_index], dataset.test_labels[fit_index])
    eval_logits, eval_labels = logits[eval_index], dataset.test_labels[eval_index]
    before, after = torch.softmax(eval_logits, 1), torch.softmax(eval_logits / temperature, 1)
    return CalibrationResult(
        dataset=dataset.name,
        model=model_name,
        epochs=epochs,
        label_smoothing=label_smoothing,
        fit_images=int(fit_index.numel()),
        eval_images=int(eval_index.numel()),
        accuracy=float((before.argmax(1) == eval_labels).double().mean()),
        temperature=temperature,
        ece_before=expected_calibration_error(before, eval_labels),
        ece_after=expected_calibration_error(after, eval_labels),
        nll_before=float(F.cross_entropy(eval_logits, eval_labels)),
        nll_after=float(F.cross_entropy(eval_logits / temperature, eval_labels)),
        mean_confidence_before=float(before.max(1).values.mean()),
        mean_confidence_after=float(after.max(1).values.mean()),
        bins_before=reliability(before, eval_labels),
        bins_after=reliability(after, eval_labels),
    )


register_experiment(
    "calibration",
    run,
    quick={"epochs": 1},
    help="reliability diagram, ECE and temperature scaling",
)
