"""One self-contained HTML report of a trained run (images embedded as base64 PNG, no scripts).

The numbers come from the core (checkpoint metadata, ``convlens.inspect``, ``convlens.attacks``,
lab results written by ``convlens lab``); this package only lays them out with Jinja2.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from convlens.errors import ConvlensError
from convlens.report.attributions import attributions_section as _attributions
from convlens.report.parts import Section
from convlens.report.parts import figure_image as _image
from convlens.report.parts import table_dict as _table
from convlens.run import Run

ROBUSTNESS_EPS = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2]
ATTACK_IMAGES = 200  # enough for a curve, fast enough for a report
MISCLASSIFIED = 10

__all__ = ["Section", "build_report", "render_report", "report_sections"]


def _aligned(table: dict) -> dict:
    """The table with ``numeric``: one flag per column, so the template right-aligns numbers only."""
    from convlens.views.tables import numeric_columns

    return {**table, "numeric": numeric_columns(table.get("rows", []))}


def _model_label(run: Run) -> str:
    """The model's name; for a model brought in (``convlens import``, ``Run.from_model``), what it
    was: a graph run's registered name alone ("graph") says nothing of the model."""
    imported = run.metadata.get("imported")
    if not isinstance(imported, dict):
        return run.model_name
    arch, source = imported.get("arch"), imported.get("weights") or imported.get("class")
    name = str(arch) if arch and arch != "graph" else str(imported.get("class") or run.model_name)
    return f"{name} (imported from {source})" if source and source != name else f"{name} (imported)"


def _overview(run: Run) -> Section:
    from convlens.models import count_parameters

    metrics = run.metrics
    facts = [
        ["model", _model_label(run)],
        ["parameters", f"{count_parameters(run.model):,}"],
        ["input", "×".join(map(str, run.input_shape))],
        ["classes", ", ".join(run.class_names)],
        ["data", run.dataset.get("name", "?")],
    ]
    if "test_accuracy" in metrics and run.task != "segmentation":  # its scores have their own section
        facts.append(["held-out accuracy", f"{100 * metrics['test_accuracy']:.2f} %"])
    if "epochs" in metrics or "epoch" in metrics:
        facts.append(["epochs", str(metrics.get("epochs", metrics.get("epoch")))])
    return Section(
        "overview", "Overview", tables=[{"title": "", "columns": [], "rows": facts, "css": "facts"}]
    )


def _training(run: Run) -> Section:
    from convlens.views import plots
    from convlens.views.tables import diagnostics_table

    history = run.history
    if not history:
        return Section("training", "Training curves", text="This checkpoint has no training history.")
    return Section(
        "training",
        "Training curves",
        text=_training_text(run),
        images=[_image(plots.training_curves(history), "training curves")],
        tables=[_table(diagnostics_table(run.diagnostics))] if run.diagnostics else [],
    )


def _training_text(run: Run) -> str:
    """Which split every curve is of, which epoch is the model and why, and what ended training
    (as the CLI says it: a run that ran every epoch did not stop early)."""
    from convlens.train.selection import stopping_text

    text = f"{len(run.history)} epochs. "
    if run.validation.get("validation"):
        text += (
            f"Validation: {run.validation['validation']} images held out of the training split; it chose the "
            "kept epoch and watched for divergence. Test: the data set's test split, only "
            "reported. "
        )
    else:
        text += "Held-out = the data set's test split. "
    if run.metrics.get("selection"):
        text += f"The model is epoch {run.metrics['selected_epoch']}: {run.metrics['selection']}."
    validation = run.validation.get("validation") or 0
    text += f" Training {stopping_text(len(run.history), run.metrics.get('stopped'), validation)}."
    return text


def _confusion(run: Run, labels, predictions, spec: str) -> Section:
    """From the predictions the report shows, so it matches the data it was given (--data too)."""
    from convlens.metrics import classification_summary
    from convlens.views import plots

    _, confusion = classification_summary(labels, predictions, run.class_names)
    return Section(
        "confusion",
        "Confusion matrix",
        text=f"On the test split of {spec} ({labels.numel():,} images). Rows: true class; "
        "columns: predicted class.",
        images=[_image(plots.confusion_matrix(confusion, run.class_names), "confusion matrix")],
    )


def _misclassified(run: Run, images, labels, probabilities) -> Section:
    from convlens.inspect.analyses import misclassified
    from convlens.views import plots

    mistakes = misclassified(run.model, images, labels, probabilities, limit=MISCLASSIFIED)
    if mistakes.wrong == 0:
        return Section("misclassified", "Misclassified test images", text="No test image is misclassified.")
    figure = plots.misclassified(
        [images[int(i)] for i in mistakes.indices],
        [cam.map for cam in mistakes.cams],
        mistakes.labels.tolist(),
        mistakes.predicted.tolist(),
        mistakes.confidence.tolist(),
        run.class_names,
    )
    return Section(
        "misclassified",
        "Misclassified test images with Grad-CAM",
        text=f"{mistakes.wrong} of {mistakes.total} test images are wrong; the "
        f"{mistakes.indices.numel()} most confident mistakes, with Grad-CAM of the (wrong) predicted class: "
        "where the model looked when it decided.",
        images=[_image(figure, "misclassified images with Grad-CAM")],
    )


def _filters(model) -> Section:
    from convlens.inspect import conv_filters
    from convlens.views import plots

    found = conv_filters(model)
    if not found:
        return Section("filters", "Filters", text="This model has no convolution.")
    first = found[0]
    return Section(
        "filters",
        "Filters",
        text=f"The {first.shape[0]} kernels of {first.stage}, shape {tuple(first.shape[1:])}.",
        images=[_image(plots.filters(first.weight, first.stage, out_limit=32), "first-layer filters")],
    )


def _feature_maps(run: Run, image, label: int) -> Section:
    from convlens.inspect import activations
    from convlens.views import plots

    inside = activations(run.model, image)
    spatial = [
        (s.name, s.kind, s.output) for s in inside.stages if s.output.ndim == 3 and s.name != "normalize"
    ]
    if not spatial:
        return Section("feature-maps", "Feature maps of a sample", text="This model has no feature maps.")
    predicted = int(inside.prediction)
    return Section(
        "feature-maps",
        "Feature maps of a sample",
        text=f"A test image of class {run.class_names[label]} (predicted "
        f"{run.class_names[predicted]}, {100 * float(inside.probabilities[predicted]):.1f} %); "
        "the first 8 channels of every spatial stage.",
        tables=_stage_tables(run),
        images=[_image(plots.feature_maps(spatial, limit=8, image=image), "feature maps")],
    )


def _stage_tables(run: Run) -> list[dict]:
    """Every stage by name, in order, with what it reads where the model is a graph (branches)."""
    from convlens.inspect import receptive_fields, stage_inputs
    from convlens.views.tables import stage_table

    try:
        fields = receptive_fields(run.model)
    except ConvlensError:  # a model seen through hooks: no graph to walk
        return []
    return [_table(stage_table(fields, "every stage, in order", reads=stage_inputs(run.model)))]


def _attacks(run: Run, images, labels, eps: float) -> Section:
    from convlens import attacks
    from convlens.views import plots
    from convlens.views.tables import attack_table, robustness_table

    images, labels = images[:ATTACK_IMAGES], labels[:ATTACK_IMAGES]
    result = attacks.fgsm(run.model, images, labels, eps)
    curve = attacks.robustness_curve(run.model, images, labels, ROBUSTNESS_EPS)
    labels_shown = ", ".join(curve.labels().values())
    return Section(
        "attacks",
        "Adversarial attacks",
        text=f"FGSM with ε = {eps:g} (pixel units) on {labels.numel()} test images, and the robustness "
        f"curve of every registered attack ({labels_shown}).",
        tables=[_table(attack_table(result, class_names=run.class_names)), _table(robustness_table(curve))],
        images=[
            _image(plots.attack_examples(result, run.class_names), "attack examples"),
            _image(plots.robustness_curve(curve), "robustness curve"),
        ],
    )


def _lab(lab_dir: Path) -> Section:
    """Every registered experiment: its tables and plot where ``convlens lab`` saved them, else how to."""
    from convlens.lab import EXPERIMENTS, has_record, load_record
    from convlens.views.tables import lab_not_run_table

    section = Section("lab", "Lab results")
    missing = []
    for entry in EXPERIMENTS:
        folder = lab_dir / entry.name
        if not has_record(folder):
            missing.append(entry.name)
            continue
        record = load_record(folder)
        for table in record.tables:
            section.tables.append({**table, "title": f"{entry.name}: {table['title']}"})
        if record.plot is not None:
            section.images.append(
                {
                    "data": base64.b64encode(record.plot).decode("ascii"),
                    "alt": f"{entry.name} plot",
                    "caption": f"{entry.name} ({record.seconds:.1f} s)",
                }
            )
    found = len(EXPERIMENTS) - len(missing)
    section.text = (
        f"{found} of the {len(EXPERIMENTS)} registered experiments have results in {lab_dir.name}/."
    )
    if missing:
        section.text += " Write the others with: convlens lab all --out RUN_DIR/lab"
        section.tables.append(_table(lab_not_run_table([(n, EXPERIMENTS.get(n).help) for n in missing])))
    return section


def _classification_builders(
    run: Run, images, labels, spec: str, eps: float, lab_dir: Path, progress=None
) -> list:
    """(what, build) for each section of a classifier's report, in order; ``progress`` also follows the
    attribution section's first measurement of the run (its own count, labelled)."""
    from convlens.inspect.analyses import correct_sample
    from convlens.report.neurons import important_channels

    probabilities = run.predict(images)  # (N, classes)
    sample = correct_sample(labels, probabilities)

    def measuring(done: int, total: int, what: str) -> None:
        """The first measurement's own steps, told as the attribution section's: one total, never back."""
        if progress is not None:
            at = [name for name, _ in builders].index("attributions")
            progress(at, len(builders), f"attributions: {what} ({done}/{total})")

    builders = [
        ("overview", lambda: _overview(run)),
        ("training curves", lambda: _training(run)),
        ("confusion matrix", lambda: _confusion(run, labels, probabilities.argmax(1), spec)),
        ("misclassified images", lambda: _misclassified(run, images, labels, probabilities)),
        ("filters", lambda: _filters(run.model)),
        ("feature maps", lambda: _feature_maps(run, images[sample], int(labels[sample]))),
        ("important channels", lambda: important_channels(run, images, labels)),
        ("attributions", lambda: _attributions(run, images[sample], int(labels[sample]), measuring)),
        ("attacks", lambda: _attacks(run, images, labels, eps)),
        ("lab results", lambda: _lab(lab_dir)),
    ]
    return builders


def report_sections(
    run_dir: str | Path,
    data: str | None = None,
    eps: float = 0.1,
    lab_dir: str | Path | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> tuple[Run, list[Section]]:
    """(the run, the report's sections).

    ``progress(sections done, sections, what)`` is called before each section and once at the end.
    """
    from convlens.attacks import check_eps

    check_eps(eps)
    if lab_dir is not None and not Path(lab_dir).is_dir():  # asked for: its absence is no "no results"
        raise ConvlensError(
            f"lab_dir {lab_dir}: no such folder (expected a folder of `convlens lab` results)",
            parameter="lab_dir",
        )
    run = Run.open(run_dir)
    # the whole test split in its seeded order, read and made float a batch at a time: a
    # section takes the few images it shows, and predictions come batch by batch (Run.predict)
    images, labels, spec = run.test_split(data)
    lab_dir = Path(lab_dir) if lab_dir is not None else run.folder / "lab"
    if run.task == "segmentation":  # a class per pixel: its own sections, none that needs one per image
        from convlens.report.segmentation import segmentation_builders

        builders = [
            ("overview", lambda: _overview(run)),
            ("training curves", lambda: _training(run)),
            *segmentation_builders(run, images, labels, spec),
            ("filters", lambda: _filters(run.model)),
        ]
    else:
        builders = _classification_builders(run, images, labels, spec, eps, lab_dir, progress)
    sections = []
    for done, (what, build) in enumerate(builders):
        if progress is not None:
            progress(done, len(builders), what)
        sections.append(build())
    if progress is not None:
        progress(len(builders), len(builders), "done")
    return run, sections


def render_report(title: str, sections: list[Section]) -> str:
    """The HTML text: one Jinja2 template, autoescaped, with the PNGs inline."""
    from importlib.resources import files

    import jinja2

    from convlens import __version__

    template = jinja2.Environment(autoescape=True).from_string(
        files("convlens.report").joinpath("template.html").read_text(encoding="utf-8")
    )
    return template.render(
        title=title,
        sections=[replace(section, tables=[_aligned(t) for t in section.tables]) for section in sections],
        version=__version__,
        written=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


def _check_out_file(path: Path) -> None:
    if path.is_dir():
        raise ConvlensError(
            f"out_file {path}: is a folder; give a file name such as report.html", parameter="out_file"
        )


def build_report(
    run_dir: str | Path,
    out_file: str | Path | None = None,
    data: str | None = None,
    eps: float = 0.1,
    lab_dir: str | Path | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> Path:
    """Write the report of ``run_dir`` to ``out_file`` (default RUN_DIR/report.html); returns its path.

    ``progress(sections done, sections, what)``: see ``report_sections``.
    """
    from convlens.storage import atomic_write

    if out_file is not None:  # before minutes of attacks and attributions, not after
        _check_out_file(Path(out_file))
    run, sections = report_sections(run_dir, data, eps, lab_dir, progress)
    out_path = Path(out_file) if out_file is not None else run.folder / "report.html"
    _check_out_file(out_path)
    title = f"{_model_label(run)} on {run.dataset.get('name', 'its data')}"
    atomic_write(out_path, render_report(title, sections).encode("utf-8"))
    return out_path
