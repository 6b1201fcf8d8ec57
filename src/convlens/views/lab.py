"""The lab's tables, and the one place a lab result becomes what faces show: tables, figure, record.

The lab (``convlens.lab``) returns results as data and stays below the views; this module lays
each built-in experiment's result out as ``Table``s (``TABLES``) and picks its figure
(``views.plots.lab.FIGURES``). An experiment registered from outside brings its own: the
``tables`` and ``figure`` functions given to ``register_experiment``. ``experiment_record``
bundles both with the numbers into the ``LabRecord`` that `convlens lab` saves and the report
loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

from matplotlib.figure import Figure

from convlens.lab import EXPERIMENTS, LabResult, check_experiment
from convlens.lab.calibration import BINS
from convlens.lab.records import LabRecord
from convlens.views.tables import Table


def experiment_tables(name: str, result: LabResult) -> list[Table]:
    """The tables of experiment ``name``'s ``result``: the built-in's, or the ``tables`` function a
    plugin registered. A plugin whose result has its own ``tables()`` (the contract before results
    were plain data) keeps working; one with neither has no table."""
    entry = EXPERIMENTS.get(check_experiment(name))
    build = entry.extras.get("tables") or TABLES.get(entry.name)
    if build is None and callable(getattr(result, "tables", None)):
        build = type(result).tables
    return list(build(result)) if build is not None else []


def experiment_figure(name: str, result: LabResult) -> Figure | None:
    """The plot of experiment ``name``'s ``result`` (None if a plugin registered no ``figure``)."""
    from convlens.views.plots.lab import FIGURES

    entry = EXPERIMENTS.get(check_experiment(name))
    draw = entry.extras.get("figure") or FIGURES.get(entry.name)
    return draw(result) if draw is not None else None


def experiment_record(name: str, data: str, result: LabResult) -> LabRecord:
    """What `convlens lab` saves (``convlens.lab.save_record``): numbers, tables and the plot as PNG."""
    from convlens.views.plots import png_bytes

    figure = experiment_figure(name, result)
    return LabRecord(
        experiment=check_experiment(name),
        data=data,
        result=result.to_json(),
        tables=[asdict(table) for table in experiment_tables(name, result)],
        plot=None if figure is None else png_bytes(figure),
    )


def params_tables(result) -> list[Table]:
    """The tables of a ``ParamsResult`` (convlens.lab.params)."""
    c, h, w = result.input_shape
    first = Table(
        f"first layer on a {h}×{w}×{c} input",
        ["layer", "parameters", "formula"],
        [
            [f"dense, {result.dense_units:,} units", f"{result.dense_parameters:,}", result.dense_formula],
            [
                f"conv, {result.conv_filters} {result.kernel_size}×{result.kernel_size} filters",
                f"{result.conv_parameters:,}",
                result.conv_formula,
            ],
            ["dense / conv", f"{result.ratio:,.0f}×", ""],
        ],
    )
    c, h, w = result.dataset_input
    models = Table(
        f"whole models on {result.dataset} ({h}×{w}×{c})",
        ["model", "parameters", "first layer", "largest stage"],
        [
            [
                m["name"],
                f"{m['parameters']:,}",
                f"{m['first_layer']:,}",
                "{stage} ({parameters:,})".format(**max(m["stages"], key=lambda s: s["parameters"])),
            ]
            for m in result.models
        ],
    )
    return [first, models]


def locality_tables(result) -> list[Table]:
    """The tables of a ``LocalityResult`` (convlens.lab.locality)."""
    rows = [
        [
            model,
            f"{100 * scores['original']:.1f} %",
            f"{100 * scores['shuffled']:.1f} %",
            f"{-100 * result.drop(model):+.1f}",
        ]
        for model, scores in result.accuracy.items()
    ]
    return [
        Table(
            f"test accuracy on {result.dataset}, original vs pixels shuffled by one fixed permutation "
            f"({result.epochs} epochs, {result.train_images:,} train / {result.test_images:,} test)",
            ["model", "original", "shuffled", "change (points)"],
            rows,
        )
    ]


def equivariance_tables(result) -> list[Table]:
    """The tables of a ``EquivarianceResult`` (convlens.lab.equivariance)."""
    rows = []
    for stage, stride, errors in zip(result.stages, result.strides, result.relative_error, strict=True):
        cells = []
        for shift, error in zip(result.shifts, errors, strict=True):
            note = "" if shift % stride == 0 else " *"
            cells.append(f"{error:.2e}{note}")
        rows.append([stage, str(stride), *cells])
    return [
        Table(
            f"relative error ||f(shift x) − shift f(x)|| / ||shift f(x)||, {result.model} on "
            f"{result.images} {result.dataset} images (* shift is not a multiple of the stride)",
            ["stage", "stride", *[f"shift {s} px" for s in result.shifts]],
            rows,
        )
    ]


def invariance_tables(result) -> list[Table]:
    """The tables of a ``InvarianceResult`` (convlens.lab.invariance)."""
    shown = [s for s in result.shifts if s >= 0]
    columns = ["model", *[f"{s:+d} px" if s else "0 px" for s in shown]]
    accuracy = [
        [v, *[f"{100 * result.accuracy[v][result.shifts.index(s)]:.1f}" for s in shown]]
        for v in result.accuracy
    ]
    agreement = [
        [v, *[f"{100 * result.agreement[v][result.shifts.index(s)]:.1f}" for s in shown]]
        for v in result.agreement
    ]
    where = f"{result.test_images:,} {result.dataset} test images shifted {result.axis}ly"
    return [
        Table(f"accuracy (%) on {where} (negative shifts in result.json)", columns, accuracy),
        Table(f"agreement with the unshifted prediction (%), {where}", columns, agreement),
    ]


def hierarchy_tables(result) -> list[Table]:
    """The tables of a ``HierarchyResult`` (convlens.lab.hierarchy)."""
    fields_table = Table(
        f"receptive field per stage, {result.model} on {result.dataset} "
        f"(test accuracy {100 * result.test_accuracy:.1f} %)",
        ["stage", "output", "receptive field (px)", "jump (px)"],
        [
            [
                f["stage"],
                "×".join(map(str, f["output_shape"])),
                "whole image" if f["whole_image"] else "×".join(map(str, f["receptive_field"])),
                "" if f["whole_image"] else str(f["jump"][0]),
            ]
            for f in result.receptive_fields
        ],
    )
    edges = Table(
        f"how edge-like are the {len(result.edge_score_trained)} {result.first_layer} kernels? "
        "best |correlation| with an oriented edge kernel",
        ["kernels", "mean score", "spread"],
        [
            [
                f"trained {result.first_layer}",
                f"{result.edge_score_trained_mean:.3f}",
                f"min {min(result.edge_score_trained):.3f} / max {max(result.edge_score_trained):.3f}",
            ],
            [
                f"random ({result.random_kernels:,}, like the untrained layer)",
                f"{result.edge_score_random_mean:.3f}",
                f"std {result.edge_score_random_std:.3f}",
            ],
            [
                "random kernels scoring below the trained mean",
                f"{100 * result.fraction_random_below_trained_mean:.1f} %",
                "",
            ],
        ],
    )
    viz = Table(
        "feature visualization: mean activation reached by the optimized image, per channel",
        ["stage", "channels", "activation (mean)", "activation (max)"],
        [
            [
                stage,
                str(len(values)),
                f"{sum(values) / len(values):.3f}",
                f"{max(values):.3f}",
            ]
            for stage, values in result.featureviz_activation.items()
        ],
    )
    return [fields_table, edges, viz]


def calibration_tables(result) -> list[Table]:
    """The tables of a ``CalibrationResult`` (convlens.lab.calibration)."""
    summary = Table(
        f"calibration of {result.model} on {result.dataset}: T fitted on {result.fit_images} held-out "
        f"images, measured on {result.eval_images} others ({BINS} bins)",
        ["", "accuracy", "mean confidence", "ECE", "NLL"],
        [
            [
                "before",
                f"{100 * result.accuracy:.1f} %",
                f"{100 * result.mean_confidence_before:.1f} %",
                f"{result.ece_before:.4f}",
                f"{result.nll_before:.4f}",
            ],
            [
                f"after (T = {result.temperature:.3f})",
                f"{100 * result.accuracy:.1f} %",
                f"{100 * result.mean_confidence_after:.1f} %",
                f"{result.ece_after:.4f}",
                f"{result.nll_after:.4f}",
            ],
        ],
    )
    rows = [
        [
            f"{b.lower:.2f}–{b.upper:.2f}",
            str(b.count),
            f"{100 * b.accuracy:.1f}" if b.count else "",
            f"{100 * b.confidence:.1f}" if b.count else "",
            str(a.count),
            f"{100 * a.accuracy:.1f}" if a.count else "",
            f"{100 * a.confidence:.1f}" if a.count else "",
        ]
        for b, a in zip(result.bins_before, result.bins_after, strict=True)
        if b.count or a.count
    ]
    diagram = Table(
        "reliability diagram (non-empty bins): accuracy vs confidence, %",
        ["confidence", "n before", "acc", "conf", "n after", "acc", "conf"],
        rows,
    )
    return [summary, diagram]


def faithfulness_tables(result) -> list[Table]:
    """The tables of a ``FaithfulnessResult`` (convlens.lab.faithfulness)."""
    random, brightness = result.deletion["random"], result.deletion["brightness"]
    rows = [
        [
            method,
            f"{result.spearman[method]:.2f}",
            f"{result.deletion[method]:.3f}",
            f"{result.deletion[method] - random:+.3f}",
            f"{result.deletion[method] - brightness:+.3f}",
            result.verdict(method),
        ]
        for method in result.spearman
    ]
    rows += [
        [name, "1 (model-free)", f"{result.deletion[name]:.3f}", f"{result.deletion[name] - random:+.3f}",
         f"{result.deletion[name] - brightness:+.3f}", "reference"]
        for name in ("random", "brightness")
    ]  # fmt: skip
    return [
        Table(
            f"faithfulness of each attribution method: {result.model} on {result.dataset} "
            f"({result.epochs} epochs, {100 * result.accuracy:.1f} % test accuracy), {result.images} test images; "
            f"Spearman < 0.5 passes randomization; deletion AUC: {result.step} pixels at a time, deleted pixels filled with a blur of the image, lower is better",
            ["method", "randomization Spearman", "deletion AUC", "vs random", "vs brightness", "verdict"],
            rows,
        )
    ]


TABLES: dict[str, Callable[..., list[Table]]] = {
    "params": params_tables,
    "locality": locality_tables,
    "equivariance": equivariance_tables,
    "invariance": invariance_tables,
    "hierarchy": hierarchy_tables,
    "calibration": calibration_tables,
    "faithfulness": faithfulness_tables,
}
