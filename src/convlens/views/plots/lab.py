"""The lab's figures: one function per built-in experiment, drawn in the one colour convention.

The lab (``convlens.lab``) returns results as data; what they look like is decided here, with
the named series colours of ``colours`` instead of matplotlib's defaults, so a lab plot reads
like every other convlens figure. ``FIGURES`` maps an experiment's name to its function;
``convlens.views.lab.experiment_figure`` picks it (or a plugin's own figure).
"""

from __future__ import annotations

from collections.abc import Callable

from matplotlib.figure import Figure

from convlens.views.plots.colours import FAIL, PASS, REFERENCE, picture, series_colour


def params_figure(result) -> Figure:
    """Parameters of a dense vs a conv first layer (log scale), and of whole models."""
    figure = Figure(figsize=(10, 4))
    left, right = figure.subplots(1, 2)
    c, h, w = result.input_shape
    left.bar(
        [
            f"dense\n{result.dense_units:,} units",
            f"conv\n{result.conv_filters} {result.kernel_size}×{result.kernel_size}",
        ],
        [result.dense_parameters, result.conv_parameters],
        color=[REFERENCE, series_colour(0)],
    )
    left.set_yscale("log")
    left.set_ylabel("parameters (log scale)")
    left.set_title(f"first layer on {h}×{w}×{c}")
    for x, value in enumerate((result.dense_parameters, result.conv_parameters)):
        left.text(x, value, f"{value:,}", ha="center", va="bottom", fontsize=9)
    if result.models:
        names = [m["name"] for m in result.models]
        right.bar(names, [m["parameters"] for m in result.models], color=series_colour(2))
        right.set_yscale("log")
        right.set_title(f"whole models on {result.dataset}")
        for x, model in enumerate(result.models):
            right.text(
                x, model["parameters"], f"{model['parameters']:,}", ha="center", va="bottom", fontsize=9
            )
    else:
        right.axis("off")
    return figure


def locality_figure(result) -> Figure:
    """Test accuracy of each model on original vs pixel-shuffled images."""
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    models = list(result.accuracy)
    width = 0.38
    for offset, key, color in (
        (-width / 2, "original", series_colour(0)),
        (width / 2, "shuffled", series_colour(1)),
    ):
        values = [100 * result.accuracy[m][key] for m in models]
        bars = axis.bar([i + offset for i in range(len(models))], values, width, label=key, color=color)
        axis.bar_label(bars, fmt="%.1f", fontsize=8)
    axis.set_xticks(range(len(models)), models)
    axis.set_ylabel("test accuracy (%)")
    axis.set_ylim(0, 105)
    axis.set_title(f"original vs pixel-shuffled {result.dataset}")
    axis.legend(loc="lower right")
    return figure


def equivariance_figure(result) -> Figure:
    """Relative equivariance error per stage, one line per input shift."""
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    floor = 1e-8  # exact zeros drawn at the floor of the log scale
    for column, shift in enumerate(result.shifts):
        values = [max(errors[column], floor) for errors in result.relative_error]
        axis.plot(result.stages, values, "o-", color=series_colour(column), label=f"shift {shift} px")
    axis.set_yscale("log")
    axis.set_ylabel("relative error (log; 1e-8 = exact)")
    axis.set_title(f"equivariance per stage, {result.model} on {result.dataset}")
    axis.grid(alpha=0.3)
    axis.legend()
    return figure


def invariance_figure(result) -> Figure:
    """Accuracy and agreement with the unshifted prediction, per shift and variant."""
    figure = Figure(figsize=(11, 4))
    left, right = figure.subplots(1, 2)
    for index, variant in enumerate(result.accuracy):
        style = {"color": series_colour(index), "label": variant}
        left.plot(result.shifts, [100 * a for a in result.accuracy[variant]], "o-", **style)
        right.plot(result.shifts, [100 * a for a in result.agreement[variant]], "o-", **style)
    left.set_ylabel("accuracy (%)")
    right.set_ylabel("agrees with unshifted prediction (%)")
    for axis in (left, right):
        axis.set_xlabel(f"{result.axis} shift (pixels)")
        axis.set_ylim(-2, 102)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"translation invariance on {result.dataset}")
    return figure


def hierarchy_figure(result) -> Figure:
    """Receptive field per stage, edge scores of the first layer, feature visualizations by depth."""
    stages = result.featureviz_stages
    columns = max([len(result.featureviz_activation[s]) for s in stages] + [4])
    figure = Figure(figsize=(max(1.4 * columns, 9), 4.2 + 1.5 * len(stages)), layout="constrained")
    grid = figure.add_gridspec(1 + len(stages), columns, height_ratios=[2.2] + [1] * len(stages))
    half = columns // 2
    fields = figure.add_subplot(grid[0, :half])
    shown = [f for f in result.receptive_fields if not f["whole_image"]]
    fields.plot(
        [f["stage"] for f in shown], [f["receptive_field"][0] for f in shown], "o-", color=series_colour(0)
    )
    fields.set_ylabel("receptive field (px)")
    fields.tick_params(axis="x", rotation=45, labelsize=8)
    fields.set_title("receptive field grows with depth")
    edges = figure.add_subplot(grid[0, half:])
    edges.hist(
        result.edge_score_trained,
        bins=10,
        range=(0, 1),
        alpha=0.7,
        density=True,
        color=series_colour(0),
        label="trained",
    )
    edges.axvline(result.edge_score_random_mean, color=REFERENCE, linestyle="--", label="random mean")
    edges.axvline(result.edge_score_trained_mean, color=series_colour(0), label="trained mean")
    edges.set_xlabel(f"{result.first_layer}: best |corr| with an edge kernel")
    edges.legend(fontsize=8)
    for row, stage in enumerate(stages, start=1):
        images = result.featureviz_images.get(stage)
        for column in range(columns):
            axis = figure.add_subplot(grid[row, column])
            if images is not None and column < images.shape[0]:
                picture(axis, images[column])
                if column == 0:
                    axis.set_ylabel(stage, fontsize=9)
            else:
                axis.axis("off")
    figure.suptitle(f"hierarchy of {result.model} on {result.dataset}")
    return figure


def reliability_axis(axis, bins, title: str) -> None:
    """One reliability diagram: accuracy per confidence bin, its gap to the bin's confidence, the diagonal."""
    centers = [(b.lower + b.upper) / 2 for b in bins]
    width = bins[0].upper - bins[0].lower
    axis.bar(
        centers,
        [b.accuracy for b in bins],
        width,
        edgecolor="black",
        color=series_colour(0),
        label="accuracy",
    )
    gaps = [b.confidence - b.accuracy if b.count else 0 for b in bins]
    axis.bar(
        centers,
        gaps,
        width,
        bottom=[b.accuracy for b in bins],
        fill=False,
        hatch="//",
        edgecolor=FAIL,
        label="gap to confidence",
    )
    axis.plot([0, 1], [0, 1], "--", color=REFERENCE, label="perfect")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_title(title)
    axis.legend(loc="upper left", fontsize=8)


def calibration_figure(result) -> Figure:
    """Reliability diagrams before and after temperature scaling."""
    figure = Figure(figsize=(10, 4.2))
    axes = figure.subplots(1, 2)
    for axis, bins, title, ece in (
        (axes[0], result.bins_before, "before", result.ece_before),
        (axes[1], result.bins_after, f"after (T = {result.temperature:.2f})", result.ece_after),
    ):
        reliability_axis(axis, bins, f"{title}: ECE {ece:.4f}")
    figure.suptitle(f"reliability diagram, {result.model} on {result.dataset}")
    return figure


def faithfulness_figure(result) -> Figure:
    """Left: deletion curves of every method and the references; right: randomization Spearman."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    curves, bars = figure.subplots(1, 2)
    for index, (name, values) in enumerate(result.curves.items()):
        style = "--" if name in ("random", "brightness") else "-"  # the model-free references dashed
        label = f"{name} ({result.deletion[name]:.3f})"
        curves.plot(result.fractions, values, style, color=series_colour(index), label=label)
    curves.set_xlabel("share of pixels deleted (highest-ranked first)")
    curves.set_ylabel("mean probability of the true class")
    curves.set_title("deletion: lower area = more faithful")
    curves.legend(fontsize=8)
    methods = list(result.spearman)
    values = [result.spearman[m] for m in methods]
    colours = [FAIL if v >= 0.5 else PASS for v in values]
    drawn = bars.bar(range(len(methods)), values, color=colours)
    bars.bar_label(drawn, fmt="%.2f", fontsize=8)
    bars.axhline(0.5, color=REFERENCE, linestyle=":", label="pass below 0.5")
    bars.set_xticks(range(len(methods)), methods, rotation=20, fontsize=8)
    bars.set_ylim(min(0.0, *values) - 0.05, 1.05)
    bars.set_ylabel("Spearman, trained vs randomized maps")
    bars.set_title("cascading randomization: lower = depends on the model")
    bars.legend(fontsize=8)
    figure.suptitle(f"faithfulness of attribution maps: {result.model} on {result.dataset}", fontsize=10)
    return figure


FIGURES: dict[str, Callable[..., Figure]] = {
    "params": params_figure,
    "locality": locality_figure,
    "equivariance": equivariance_figure,
    "invariance": invariance_figure,
    "hierarchy": hierarchy_figure,
    "calibration": calibration_figure,
    "faithfulness": faithfulness_figure,
}
