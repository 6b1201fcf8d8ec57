"""Which attribution map can be trusted? Every registered method against two sanity checks.

The numbers and verdicts are the run path's (``convlens.inspect.run_faithfulness.measure_methods``,
verdicts in ``convlens.inspect.verdicts``): for each test image, the model's prediction explained,
deletion and insertion curves (blur fill, 16 steps) against random order and pixel brightness, a
verdict that passes only when the 95 % t interval of the difference lies below 0, and the Spearman
correlation with the maps of the fully re-initialized model (passes when its interval lies below 0.5).

With ``run`` (a run folder: ``convlens lab faithfulness RUN``) nothing is trained: the numbers are the
run's own, as stored in ``RUN_DIR/faithfulness.json``, and the run's default method
(``method_choice.default_method``) is named. Without it a model is trained here, and N of its
test images (the same number per class) are measured the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from convlens.data import Dataset, to_float
from convlens.errors import ConvlensError
from convlens.lab._common import LabResult, check_positive, register_experiment, train_quick


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
        """One line: can ``method``'s maps be trusted on this model? The run's noise-aware verdict
        (``verdicts.method_faithfulness``): deletion against random order with its 95 % interval,
        randomization, and insertion beside them."""
        found = self.verdicts[method]
        deletion, randomization = found["deletion"], found["randomization"]
        insertion = found.get("insertion")
        where = "this run" if self.run else "this model"
        text = f"{found['verdict']} on {where}: deletion {deletion['verdict']} against random order {_interval(deletion)}"
        if insertion:
            text += f", insertion {insertion['verdict']} {_interval(insertion)}"
        text += f", randomization {randomization['verdict']}"
        if self.default.get("key") == method:
            text += f" — the run's default attribution: {self.default['why']}"
        return text


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
    seed: int = 0,
    progress=None,
    run: str = "",
) -> FaithfulnessResult:
    """Train a model; every attribution method's (``methods``: all registered ones when empty)
    noise-aware verdict on ``images`` test images, measured as on a run (``measure_methods``).

    ``run``: a run folder instead: its stored numbers (``run_faithfulness``, measured on first need
    with its own settings; ``dataset``, ``model_name``, ``epochs`` and ``images`` are not used).

    ``progress(methods done, methods, what)`` before each method and at the end.
    """
    from convlens.inspect.attribution import ATTRIBUTIONS
    from convlens.inspect.run_faithfulness import measure_methods
    from convlens.inspect.verdicts import CURVE_STEPS
    from convlens.predict import predict_probabilities

    if run:
        return _on_run(run, methods, seed, progress)
    check_positive("epochs", epochs)
    check_positive("images", images)
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
    targets = predict_probabilities(model, pixels).argmax(dim=1)  # the prediction is explained, as on a run
    # the run's measurement and verdicts (run_faithfulness.measure_methods), on this model
    reference, measured = measure_methods(
        model,
        pixels,
        targets,
        list(methods),
        steps=CURVE_STEPS,
        seed=seed,
        randomization_images=min(16, pixels.shape[0]),
        progress=None if progress is None else lambda done, total, what: progress(done + 1, total + 1, what),
    )
    return _result(
        dataset.name,
        model_name,
        epochs,
        accuracy,
        pixels.shape[0],
        round(pixels[0, 0].numel() / CURVE_STEPS),
        reference,
        measured,
        "",
        {},
    )


def _result(
    dataset, model, epochs, accuracy, images, step, reference, measured, run, chosen
) -> FaithfulnessResult:
    """The lab's result from ``measure_methods``'s numbers (a run's stored ones or a model's here)."""
    curves = {name: entry["deletion"].get("curve", []) for name, entry in measured.items()}
    curves.update(
        {"random": reference.get("random_curve", []), "brightness": reference.get("brightness_curve", [])}
    )
    deletion = {name: entry["deletion"]["auc"] for name, entry in measured.items()}
    deletion.update({"random": reference["random_auc"], "brightness": reference["brightness_auc"]})
    return FaithfulnessResult(
        dataset=dataset,
        model=model,
        epochs=epochs,
        accuracy=accuracy,
        images=images,
        step=step,
        fractions=list(reference.get("fractions", [])),
        curves=curves,
        deletion=deletion,
        spearman={name: entry["randomization"]["spearman"] for name, entry in measured.items()},
        spearman_per_stage={name: {"all": e["randomization"]["spearman"]} for name, e in measured.items()},
        seconds_per_method={},
        run=run,
        verdicts=measured,
        default=chosen,
    )


def _on_run(run_dir: str, methods: tuple[str, ...], seed: int, progress) -> FaithfulnessResult:
    """The run's own verdicts as a ``FaithfulnessResult`` (the lab's tables and figure)."""
    from convlens.inspect.method_choice import default_method
    from convlens.inspect.run_faithfulness import run_faithfulness
    from convlens.run import Run

    if progress is not None:
        progress(0, 1, f"measuring {run_dir}")
    run = Run.open(run_dir)
    chosen = (
        default_method(run, progress=progress) if not methods and seed == 0 else {}
    )  # the default is chosen at seed 0
    found = run_faithfulness(
        run, list(methods) or chosen.get("candidates") or None, seed=seed, progress=progress
    )
    pixels = run.input_shape[1] * run.input_shape[2]
    if progress is not None:
        progress(1, 1, "done")
    return _result(
        str(found.get("data") or run.dataset.get("name", "")),
        run.model_name,
        int(run.metrics.get("epochs", run.training.get("epochs", 0)) or 0),
        float(run.test_accuracy or 0.0),
        int(found["settings"]["images"]),
        round(pixels / found["settings"]["steps"]),
        found["reference"],
        found["methods"],
        str(run.folder),
        chosen,
    )


register_experiment(
    "faithfulness",
    run,
    quick={"epochs": 1, "images": 10},
    help="every attribution method: does it survive weight randomization, does it find the pixels that matter?",
)
