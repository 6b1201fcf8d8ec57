"""Which attribution map can be trusted? Every registered method against two sanity checks.

For N test images (the same number per class) of a freshly trained model, each registered
attribution method gets:

- cascading randomization (Adebayo et al. 2018): the mean Spearman rank correlation of its
  maps with the maps of the same model re-initialized stage by stage from the top; a map
  that survives (≥ 0.5) explains the image, not the model;
- a deletion curve (Petsiuk et al. 2018): its highest-ranked pixels turned black 8 at a time,
  the area under the class-probability curve (lower = the map found what the model needs),
  next to a random ranking and to plain pixel brightness (both model-free).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from convlens.data import Dataset, to_float
from convlens.errors import ConvlensError
from convlens.lab._common import LabResult, check_positive, register_experiment, train_quick

CLOSE_TO_RANDOM = 0.05  # a deletion AUC within this of the random ranking's is "no better than random"


@dataclass
class FaithfulnessResult(LabResult):
    dataset: str
    model: str
    epochs: int
    accuracy: float
    images: int  # test images explained
    step: int  # pixels deleted per point of the curves
    fractions: list[float]  # the curves' x: share of the pixels deleted
    curves: dict[str, list[float]]  # method or reference -> mean class probability along the deletion
    deletion: dict[str, float]  # method or reference ("random", "brightness") -> deletion AUC
    spearman: dict[str, float]  # method -> mean Spearman, trained vs randomized maps
    spearman_per_stage: dict[str, dict[str, float]]  # method -> {stage randomized (cumulative): mean}
    seconds_per_method: dict[str, float]
    seconds: float = 0.0

    def verdict(self, method: str) -> str:
        """One line: can ``method``'s maps be trusted on this model?"""
        spearman, auc = self.spearman[method], self.deletion[method]
        random, brightness = self.deletion["random"], self.deletion["brightness"]
        if spearman >= 0.5:
            return "do not trust: the map survives weight randomization (it shows the image, not the model)"
        if auc >= random - CLOSE_TO_RANDOM:
            return "do not trust: depends on the model, but ranks pixels no better than random"
        if auc > brightness:
            return "use with care: depends on the model, beats random, but not plain pixel brightness"
        return "trust: depends on the model and finds the pixels it needs (beats brightness)"


def _balanced(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of ``count`` test images, as many per class as possible, in class order."""
    classes = int(labels.max()) + 1
    per_class = max(1, count // classes)
    chosen = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(classes)])
    if chosen.numel() < count:  # small classes: top up with the first images not chosen yet
        rest = torch.ones(labels.shape[0], dtype=torch.bool)
        rest[chosen] = False
        chosen = torch.cat([chosen, torch.nonzero(rest).flatten()[: count - chosen.numel()]])
    return chosen[:count]


def run(
    dataset: Dataset,
    model_name: str = "convnet",
    epochs: int = 3,
    images: int = 100,
    methods: tuple[str, ...] = (),
    step: int = 8,
    seed: int = 0,
    progress=None,
) -> FaithfulnessResult:
    """Train a model; randomization Spearman and deletion AUC of every attribution method
    (``methods``: all registered ones when empty) on ``images`` test images.

    ``progress(methods done, methods, what)`` before each method and at the end.
    """
    import time

    from convlens.inspect.attribution import ATTRIBUTIONS
    from convlens.inspect.faithfulness import attribution_map, deletion_curve, randomization_check

    check_positive("epochs", epochs)
    check_positive("images", images)
    check_positive("step", step)
    methods = tuple(methods) or tuple(ATTRIBUTIONS.names())
    for method in methods:
        if method not in ATTRIBUTIONS:
            raise ConvlensError(
                f"methods: unknown method {method!r}; choose from {', '.join(ATTRIBUTIONS.names())}",
                parameter="methods",
            )
    if progress is not None:
        progress(0, len(methods) + 1, f"training {model_name}")
    model, accuracy = train_quick(dataset, model_name, epochs, seed)
    chosen = _balanced(dataset.test_labels, images)
    pixels = to_float(dataset.test_images[chosen]).float()
    labels = dataset.test_labels[chosen].long()
    curves, deletion, spearman, per_stage, seconds = {}, {}, {}, {}, {}
    for reference in ("random", "brightness"):
        curve = deletion_curve(model, pixels, labels, reference, step=step, seed=seed)
        curves[reference], deletion[reference] = curve.probabilities.tolist(), curve.auc
    fractions = curve.fractions.tolist()
    for index, method in enumerate(methods):
        if progress is not None:
            progress(index + 1, len(methods) + 1, method)
        start = time.perf_counter()
        maps = torch.stack(
            [
                attribution_map(model, image, method, int(label), seed=seed + i)
                for i, (image, label) in enumerate(zip(pixels, labels, strict=True))
            ]
        )  # fmt: skip  (N, H, W): computed once, for both checks
        curve = deletion_curve(model, pixels, labels, method, step=step, seed=seed, maps=maps)
        check = randomization_check(model, pixels, method, labels=labels, seed=seed, maps=maps)
        curves[method], deletion[method] = curve.probabilities.tolist(), curve.auc
        spearman[method] = check.mean
        per_stage[method] = dict(zip(check.stages, check.per_step.tolist(), strict=True))
        seconds[method] = time.perf_counter() - start
    if progress is not None:
        progress(len(methods) + 1, len(methods) + 1, "done")
    return FaithfulnessResult(
        dataset=dataset.name,
        model=model_name,
        epochs=epochs,
        accuracy=accuracy,
        images=int(chosen.numel()),
        step=step,
        fractions=fractions,
        curves=curves,
        deletion=deletion,
        spearman=spearman,
        spearman_per_stage=per_stage,
        seconds_per_method=seconds,
    )


register_experiment(
    "faithfulness",
    run,
    quick={"epochs": 1, "images": 10, "step": 16},
    help="every attribution method: does it survive weight randomization, does it find the pixels that matter?",
)
