"""The robustness curve: accuracy against ε for each attack, the lab's and the report's view of
how easily a model is fooled."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from convlens.attacks.methods import ATTACKS, Progress, attack, attack_label, check_eps, mean_or_zero
from convlens.errors import ConvlensError


@dataclass
class RobustnessCurve:
    """Accuracy (and mean confidence) against ε for each attack method."""

    eps: list[float]
    clean_accuracy: float
    accuracy: dict[str, list[float]]  # method -> accuracy per eps
    mean_confidence: dict[str, list[float]]  # method -> mean confidence of the prediction per eps
    pgd_steps: int
    images: int

    def labels(self) -> dict[str, str]:
        """method → how tables and plots name it ("PGD-10")."""
        return {method: attack_label(method, self.pgd_steps) for method in self.accuracy}

    def summary(self) -> dict:
        return asdict(self)


def robustness_curve(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps_list: Sequence[float],
    methods: Sequence[str] | None = None,
    steps: int = 10,
    progress: Progress | None = None,
) -> RobustnessCurve:
    """Accuracy against ε for each method (default: every registered attack), untargeted.

    ``progress(done, total, what)`` counts attacked images over every (method, ε) pair.
    """
    eps_list = [check_eps(e, "eps_list") for e in eps_list]
    if not eps_list:
        raise ConvlensError("eps_list needs at least one value, e.g. 0,0.05,0.1", parameter="eps_list")
    methods = [ATTACKS.get(m).name for m in (ATTACKS.names() if methods is None else methods)]
    accuracy: dict[str, list[float]] = {m: [] for m in methods}
    confidence: dict[str, list[float]] = {m: [] for m in methods}
    clean = None
    count, total = images.shape[0], images.shape[0] * len(methods) * len(eps_list)
    for index, (method, eps) in enumerate((m, e) for m in methods for e in eps_list):

        def step(done: int, _: int, what: str, before: int = index * count) -> None:
            progress(before + done, total, what)  # type: ignore[misc]

        result = attack(model, images, labels, method, eps, steps, progress=step if progress else None)
        accuracy[method].append(result.adversarial_accuracy)
        confidence[method].append(mean_or_zero(result.adversarial_confidences))
        clean = result.clean_accuracy
    return RobustnessCurve(
        eps=eps_list,
        clean_accuracy=float(clean),
        accuracy=accuracy,
        mean_confidence=confidence,
        pgd_steps=steps,
        images=int(labels.shape[0]),
    )
