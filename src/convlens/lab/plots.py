"""Figures for lab results and attacks (matplotlib, no display needed). Rendering only: no numbers computed here.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state,
safe in a server thread); ``save_png`` writes it, ``png_bytes`` gives the bytes for the report.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from matplotlib.figure import Figure

from convlens.attacks import AttackResult, RobustnessCurve

COLORS = {"fgsm": "tab:orange", "pgd": "tab:red"}


def png_bytes(figure: Figure, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def save_png(figure: Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(figure, dpi))
    return path


def _picture(axis, image: torch.Tensor, cmap: str = "gray", vmin: float = 0.0, vmax: float = 1.0) -> None:
    """Show a (C, H, W) tensor: one channel in ``cmap``, three as RGB."""
    array = image.detach().cpu()
    if array.shape[0] == 1:
        axis.imshow(array[0].numpy(), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    else:
        shown = ((array - vmin) / (vmax - vmin)).clamp(0, 1)
        axis.imshow(shown.permute(1, 2, 0).numpy(), interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])


# ---------------------------------------------------------------------------------------- attacks


def attack_examples(
    result: AttackResult, class_names: list[str], count: int = 8, indices: list[int] | None = None
) -> Figure:
    """Columns of examples: original, perturbation (amplified to fill the grey range), adversarial."""
    if indices is None:
        flipped = torch.nonzero(result.flipped).flatten().tolist()
        others = [i for i in range(result.labels.numel()) if i not in set(flipped)]
        indices = (flipped + others)[:count]  # fooled images first: they are the point
    columns = max(len(indices), 1)
    figure = Figure(figsize=(1.6 * columns, 5.4))
    axes = figure.subplots(3, columns, squeeze=False)
    scale = result.eps if result.eps > 0 else 1.0
    for column, index in enumerate(indices):
        clean = result.clean_images[index]
        delta = result.perturbations[index]
        _picture(axes[0, column], clean)
        # perturbation mapped from [-ε, ε] to [0, 1]: grey = unchanged
        _picture(axes[1, column], (delta / (2 * scale) + 0.5).clamp(0, 1), cmap="RdBu_r")
        _picture(axes[2, column], result.adversarial_images[index])
        before = int(result.clean_predictions[index])
        after = int(result.adversarial_predictions[index])
        axes[0, column].set_title(
            f"{class_names[before]} {100 * float(result.clean_confidences[index]):.0f}%", fontsize=9
        )
        axes[2, column].set_title(
            f"{class_names[after]} {100 * float(result.adversarial_confidences[index]):.0f}%",
            fontsize=9,
            color="tab:red" if after != int(result.labels[index]) else "black",
        )
    for index in range(len(indices), columns):
        for row in range(3):
            axes[row, index].axis("off")
    for row, label in enumerate(
        ("original", f"perturbation ±{result.eps:g}\n(red +, blue −, white 0)", "adversarial")
    ):
        axes[row, 0].set_ylabel(label, fontsize=9)
    target = f", target {class_names[result.target]}" if result.target is not None else ""
    figure.suptitle(
        f"{result.method.upper()} ε = {result.eps:g}{target}: accuracy "
        f"{100 * result.clean_accuracy:.1f}% → {100 * result.adversarial_accuracy:.1f}%",
        fontsize=11,
    )
    return figure


def robustness_curve(curve: RobustnessCurve) -> Figure:
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    for method, accuracy in curve.accuracy.items():
        label = f"PGD-{curve.pgd_steps}" if method == "pgd" else method.upper()
        axis.plot(curve.eps, [100 * a for a in accuracy], "o-", label=label, color=COLORS.get(method))
    axis.axhline(100 * curve.clean_accuracy, color="gray", linestyle=":", label="clean")
    axis.set_xlabel("ε (L∞, pixel units)")
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(-2, 102)
    axis.set_title(f"robustness curve on {curve.images} test images")
    axis.grid(alpha=0.3)
    axis.legend()
    return figure


# ------------------------------------------------------------------------------------------- lab


def params_figure(result) -> Figure:
    figure = Figure(figsize=(10, 4))
    left, right = figure.subplots(1, 2)
    c, h, w = result.input_shape
    left.bar(
        [
            f"dense\n{result.dense_units:,} units",
            f"conv\n{result.conv_filters} {result.kernel_size}×{result.kernel_size}",
        ],
        [result.dense_parameters, result.conv_parameters],
        color=["tab:gray", "tab:blue"],
    )
    left.set_yscale("log")
    left.set_ylabel("parameters (log scale)")
    left.set_title(f"first layer on {h}×{w}×{c}")
    for x, value in enumerate((result.dense_parameters, result.conv_parameters)):
        left.text(x, value, f"{value:,}", ha="center", va="bottom", fontsize=9)
    if result.models:
        names = [m["name"] for m in result.models]
        right.bar(names, [m["parameters"] for m in result.models], color="tab:green")
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
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    models = list(result.accuracy)
    width = 0.38
    for offset, key, color in ((-width / 2, "original", "tab:blue"), (width / 2, "shuffled", "tab:orange")):
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
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    floor = 1e-8  # exact zeros drawn at the floor of the log scale
    for column, shift in enumerate(result.shifts):
        values = [max(errors[column], floor) for errors in result.relative_error]
        axis.plot(result.stages, values, "o-", label=f"shift {shift} px")
    axis.set_yscale("log")
    axis.set_ylabel("relative error (log; 1e-8 = exact)")
    axis.set_title(f"equivariance per stage, {result.model} on {result.dataset}")
    axis.grid(alpha=0.3)
    axis.legend()
    return figure


def invariance_figure(result) -> Figure:
    figure = Figure(figsize=(11, 4))
    left, right = figure.subplots(1, 2)
    for variant in result.accuracy:
        left.plot(result.shifts, [100 * a for a in result.accuracy[variant]], "o-", label=variant)
        right.plot(result.shifts, [100 * a for a in result.agreement[variant]], "o-", label=variant)
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
    stages = result.featureviz_stages
    columns = max([len(result.featureviz_activation[s]) for s in stages] + [4])
    figure = Figure(figsize=(max(1.4 * columns, 9), 4.2 + 1.5 * len(stages)), layout="constrained")
    grid = figure.add_gridspec(1 + len(stages), columns, height_ratios=[2.2] + [1] * len(stages))
    half = columns // 2
    fields = figure.add_subplot(grid[0, :half])
    shown = [f for f in result.receptive_fields if not f["whole_image"]]
    fields.plot([f["stage"] for f in shown], [f["size"][0] for f in shown], "o-")
    fields.set_ylabel("receptive field (px)")
    fields.tick_params(axis="x", rotation=45, labelsize=8)
    fields.set_title("receptive field grows with depth")
    edges = figure.add_subplot(grid[0, half:])
    edges.hist(result.edge_score_trained, bins=10, range=(0, 1), alpha=0.7, density=True, label="trained")
    edges.axvline(result.edge_score_random_mean, color="tab:gray", linestyle="--", label="random mean")
    edges.axvline(result.edge_score_trained_mean, color="tab:blue", label="trained mean")
    edges.set_xlabel(f"{result.first_layer}: best |corr| with an edge kernel")
    edges.legend(fontsize=8)
    for row, stage in enumerate(stages, start=1):
        images = result.featureviz_images.get(stage)
        for column in range(columns):
            axis = figure.add_subplot(grid[row, column])
            if images is not None and column < images.shape[0]:
                _picture(axis, images[column])
                if column == 0:
                    axis.set_ylabel(stage, fontsize=9)
            else:
                axis.axis("off")
    figure.suptitle(f"hierarchy of {result.model} on {result.dataset}")
    return figure


def calibration_figure(result) -> Figure:
    figure = Figure(figsize=(10, 4.2))
    axes = figure.subplots(1, 2)
    for axis, bins, title, ece in (
        (axes[0], result.bins_before, "before", result.ece_before),
        (axes[1], result.bins_after, f"after (T = {result.temperature:.2f})", result.ece_after),
    ):
        centers = [(b.lower + b.upper) / 2 for b in bins]
        width = bins[0].upper - bins[0].lower
        axis.bar(
            centers, [b.accuracy for b in bins], width, edgecolor="black", color="tab:blue", label="accuracy"
        )
        gaps = [b.confidence - b.accuracy if b.count else 0 for b in bins]
        axis.bar(
            centers,
            gaps,
            width,
            bottom=[b.accuracy for b in bins],
            fill=False,
            hatch="//",
            edgecolor="tab:red",
            label="gap to confidence",
        )
        axis.plot([0, 1], [0, 1], "k--", label="perfect")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence")
        axis.set_ylabel("accuracy")
        axis.set_title(f"{title}: ECE {ece:.4f}")
        axis.legend(loc="upper left", fontsize=8)
    figure.suptitle(f"reliability diagram, {result.model} on {result.dataset}")
    return figure


FIGURES = {
    "params": params_figure,
    "locality": locality_figure,
    "equivariance": equivariance_figure,
    "invariance": invariance_figure,
    "hierarchy": hierarchy_figure,
    "calibration": calibration_figure,
}


def experiment_figure(name: str, result) -> Figure:
    """The figure of a lab experiment's result."""
    return FIGURES[name](result)
