"""Which attribution map can be trusted? Every registered method against two sanity checks.

With ``run`` (a run folder: ``convlens lab faithfulness RUN``) nothing is trained: the numbers are the
run's own, as stored by ``convlens.inspect.run_faithfulness.run_faithfulness`` (blur fill, 16-step
deletion and insertion against random order with 95 % intervals, full randomization; the verdict beside
every map), and the run's default method (``method_choice.default_method``) is named.

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

from dataclasses import dataclass, field

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
    run: str = ""  # the run folder measured ("" : a model trained here)
    verdicts: dict[str, dict] = field(default_factory=dict)  # method -> run_faithfulness's entry
    default: dict = field(default_factory=dict)  # on a run: method_choice.default_method's choice and why

    def verdict(self, method: str) -> str:
        """One line: can ``method``'s maps be trusted on this model?"""
        if method in self.verdicts:
            found = self.verdicts[method]
            deletion, randomization = found["deletion"], found["randomization"]
            insertion = found.get("insertion")
            text = f"{found['verdict']} on this run: deletion {deletion['verdict']} against random order {_interval(deletion)}"
            if insertion:
                text += f", insertion {insertion['verdict']} {_interval(insertion)}"
            text += f", randomization {randomization['verdict']}"
            if self.default.get("key") == method:
                text += f" — the run's default attribution: {self.default['why']}"
            return text
        spearman, auc = self.spearman[method], self.deletion[method]
        random, brightness = self.deletion["random"], self.deletion["brightness"]
        if spearman >= 0.5:
            return "do not trust: the map survives weight randomization (it shows the image, not the model)"
        if auc >= random - CLOSE_TO_RANDOM:
            return "do not trust: depends on the model, but ranks pixels no better than random"
        if auc > brightness:
            return "use with care: depends on the model, beats random, but not plain pixel brightness"
        return "trust: depends on the model and finds the pixels it needs (beats brightness)"


def _interval(curve: dict) -> str:
    """(difference against random order, 95 % interval) of one stored curve result."""
    if curve.get("difference") is None or None in curve["interval"]:
        return "(no map that ranks pixels)"
    low, high = curve["interval"]
    return f"(difference {curve['difference']:+.3f}, 95 % interval {low:+.3f} to {high:+.3f})"


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
    run: str = "",
) -> FaithfulnessResult:
    """Train a model; randomization Spearman and deletion AUC of every attribution method
    (``methods``: all registered ones when empty) on ``images`` test images.

    ``run``: a run folder instead: its stored numbers (``run_faithfulness``, measured on first need
    with its own settings; ``dataset``, ``model_name``, ``epochs``, ``images`` and ``step`` are not used).

    ``progress(methods done, methods, what)`` before each method and at the end.
    """
    import time

    from convlens.inspect.attribution import ATTRIBUTIONS
    from convlens.inspect.faithfulness import attribution_map, deletion_curve, randomization_check

    if run:
        return _on_run(run, methods, seed, progress)
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


def _on_run(run_dir: str, methods: tuple[str, ...], seed: int, progress) -> FaithfulnessResult:
    """The run's own verdicts as a ``FaithfulnessResult`` (the lab's tables and figure)."""
    from convlens.inspect.method_choice import default_method
    from convlens.inspect.run_faithfulness import run_faithfulness
    from convlens.run import Run

    if progress is not None:
        progress(0, 1, f"measuring {run_dir}")
    run = Run.open(run_dir)
    chosen = default_method(run) if not methods and seed == 0 else {}  # the default is chosen at seed 0
    found = run_faithfulness(run, list(methods) or chosen.get("candidates") or None, seed=seed)
    reference, measured = found["reference"], found["methods"]
    curves = {name: entry["deletion"].get("curve", []) for name, entry in measured.items()}
    curves.update(
        {"random": reference.get("random_curve", []), "brightness": reference.get("brightness_curve", [])}
    )
    deletion = {name: entry["deletion"]["auc"] for name, entry in measured.items()}
    deletion.update({"random": reference["random_auc"], "brightness": reference["brightness_auc"]})
    pixels = run.input_shape[1] * run.input_shape[2]
    if progress is not None:
        progress(1, 1, "done")
    return FaithfulnessResult(
        dataset=str(found.get("data") or run.dataset.get("name", "")),
        model=run.model_name,
        epochs=int(run.metrics.get("epochs", run.training.get("epochs", 0)) or 0),
        accuracy=float(run.test_accuracy or 0.0),
        images=int(found["settings"]["images"]),
        step=round(pixels / found["settings"]["steps"]),
        fractions=list(reference.get("fractions", [])),
        curves=curves,
        deletion=deletion,
        spearman={name: entry["randomization"]["spearman"] for name, entry in measured.items()},
        spearman_per_stage={name: {"all": e["randomization"]["spearman"]} for name, e in measured.items()},
        seconds_per_method={},
        run=str(run.folder),
        verdicts=measured,
        default=chosen,
    )


register_experiment(
    "faithfulness",
    run,
    quick={"epochs": 1, "images": 10, "step": 16},
    help="every attribution method: does it survive weight randomization, does it find the pixels that matter?",
)
