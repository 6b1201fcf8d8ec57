"""One self-contained HTML report of a trained run (images embedded as base64 PNG, no scripts).

The numbers come from the core (checkpoint metadata, ``convlens.inspect``, ``convlens.attacks``,
lab results written by ``convlens lab``); this package only lays them out with Jinja2.
"""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from convlens.errors import ConvlensError

ROBUSTNESS_EPS = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2]
ATTACK_IMAGES = 200  # enough for a curve, fast enough for a report
MISCLASSIFIED = 10

__all__ = ["Section", "build_report", "render_report", "report_sections"]


@dataclass
class Section:
    id: str
    title: str
    text: str = ""
    tables: list[dict] = field(default_factory=list)  # {"title", "columns", "rows", "css"}
    images: list[dict] = field(default_factory=list)  # {"data" (base64 PNG), "alt", "caption"}


def _image(figure, alt: str, caption: str = "") -> dict:
    from convlens.lab.plots import png_bytes

    return {"data": base64.b64encode(png_bytes(figure)).decode("ascii"), "alt": alt, "caption": caption}


def _overview(meta: dict, model) -> Section:
    from convlens.models import count_parameters

    metrics = meta.get("metrics", {})
    facts = [
        ["model", meta["model"]["name"]],
        ["parameters", f"{count_parameters(model):,}"],
        ["input", "×".join(map(str, meta["input_shape"]))],
        ["classes", ", ".join(meta["class_names"])],
        ["data", meta.get("dataset", {}).get("name", "?")],
    ]
    if "test_accuracy" in metrics:
        facts.append(["held-out accuracy", f"{100 * metrics['test_accuracy']:.2f} %"])
    if "epochs" in metrics or "epoch" in metrics:
        facts.append(["epochs", str(metrics.get("epochs", metrics.get("epoch")))])
    return Section(
        "overview", "Overview", tables=[{"title": "", "columns": [], "rows": facts, "css": "facts"}]
    )


def _training(meta: dict) -> Section:
    from convlens.report import figures

    history = meta.get("history") or []
    if not history:
        return Section("training", "Training curves", text="This checkpoint has no training history.")
    return Section(
        "training",
        "Training curves",
        text=f"{len(history)} epochs; held-out = the data set's test split.",
        images=[_image(figures.training_curves(history), "training curves")],
    )


def _confusion(meta: dict, labels, predictions, spec: str) -> Section:
    """From the predictions the report shows, so it matches the data it was given (--data too)."""
    from convlens.metrics import classification_summary
    from convlens.report import figures

    _, confusion = classification_summary(labels, predictions, meta["class_names"])
    return Section(
        "confusion",
        "Confusion matrix",
        text=f"On the test split of {spec} ({labels.numel():,} images). Rows: true class; "
        "columns: predicted class.",
        images=[_image(figures.confusion_matrix(confusion, meta["class_names"]), "confusion matrix")],
    )


def _misclassified(model, meta: dict, images, labels, probabilities) -> Section:
    from convlens.inspect import grad_cam
    from convlens.report import figures

    confidence, predicted = probabilities.max(dim=1)
    wrong = torch.nonzero(predicted != labels).flatten()
    wrong = wrong[confidence[wrong].argsort(descending=True)][:MISCLASSIFIED]  # most confident mistakes first
    if wrong.numel() == 0:
        return Section("misclassified", "Misclassified test images", text="No test image is misclassified.")
    cams = [grad_cam(model, images[int(i)], target=int(predicted[i])).map for i in wrong]
    figure = figures.misclassified(
        [images[int(i)] for i in wrong],
        cams,
        [int(labels[i]) for i in wrong],
        [int(predicted[i]) for i in wrong],
        [float(confidence[i]) for i in wrong],
        meta["class_names"],
    )
    return Section(
        "misclassified",
        "Misclassified test images with Grad-CAM",
        text=f"{int((predicted != labels).sum())} of {labels.numel()} test images are wrong; the "
        f"{wrong.numel()} most confident mistakes, with Grad-CAM of the (wrong) predicted class: "
        "where the model looked when it decided.",
        images=[_image(figure, "misclassified images with Grad-CAM")],
    )


def _filters(model) -> Section:
    from convlens.inspect import conv_filters
    from convlens.report import figures

    found = conv_filters(model)
    if not found:
        return Section("filters", "Filters", text="This model has no convolution.")
    first = found[0]
    return Section(
        "filters",
        "Filters",
        text=f"The {first.shape[0]} kernels of {first.stage}, shape {tuple(first.shape[1:])}.",
        images=[_image(figures.filters(first.weight, first.stage), "first-layer filters")],
    )


def _feature_maps(model, meta: dict, image, label: int) -> Section:
    from convlens.inspect import activations
    from convlens.report import figures

    inside = activations(model, image)
    spatial = [(s.name, s.output) for s in inside.stages if s.output.ndim == 3 and s.name != "normalize"]
    if not spatial:
        return Section("feature-maps", "Feature maps of a sample", text="This model has no feature maps.")
    predicted = int(inside.prediction)
    return Section(
        "feature-maps",
        "Feature maps of a sample",
        text=f"A test image of class {meta['class_names'][label]} (predicted "
        f"{meta['class_names'][predicted]}, {100 * float(inside.probabilities[predicted]):.1f} %); "
        "the first 8 channels of every spatial stage.",
        images=[_image(figures.feature_maps(image, spatial), "feature maps")],
    )


def _attacks(model, meta: dict, images, labels, eps: float) -> Section:
    from convlens import attacks
    from convlens.lab import plots

    images, labels = images[:ATTACK_IMAGES], labels[:ATTACK_IMAGES]
    result = attacks.fgsm(model, images, labels, eps)
    curve = attacks.robustness_curve(model, images, labels, ROBUSTNESS_EPS)
    summary = result.summary()
    rows = [
        [
            "accuracy",
            f"{100 * summary['clean_accuracy']:.1f} %",
            f"{100 * summary['adversarial_accuracy']:.1f} %",
        ],
        [
            "mean confidence",
            f"{100 * summary['mean_confidence_clean']:.1f} %",
            f"{100 * summary['mean_confidence_adversarial']:.1f} %",
        ],
        ["max L∞ / mean L2", "", f"{summary['max_linf']:.4f} / {summary['mean_l2']:.4f}"],
    ]
    sweep = [
        [f"{e:g}", *[f"{100 * curve.accuracy[m][i]:.1f} %" for m in curve.accuracy]]
        for i, e in enumerate(curve.eps)
    ]
    return Section(
        "attacks",
        "Adversarial attacks",
        text=f"FGSM with ε = {eps:g} (pixel units) on {labels.numel()} test images, and the robustness "
        f"curve of FGSM and PGD-{curve.pgd_steps}.",
        tables=[
            {"title": f"FGSM ε = {eps:g}", "columns": ["", "clean", "adversarial"], "rows": rows},
            {
                "title": "accuracy vs ε",
                "columns": [
                    "ε",
                    *[f"PGD-{curve.pgd_steps}" if m == "pgd" else m.upper() for m in curve.accuracy],
                ],
                "rows": sweep,
            },
        ],
        images=[
            _image(plots.attack_examples(result, meta["class_names"]), "attack examples"),
            _image(plots.robustness_curve(curve), "robustness curve"),
        ],
    )


def _lab(lab_dir: Path | None) -> Section:
    results = sorted(lab_dir.glob("*/result.json")) if lab_dir is not None and lab_dir.is_dir() else []
    if not results:
        return Section(
            "lab",
            "Lab results",
            text="No lab results for this run. Write them with: convlens lab all --out RUN_DIR/lab",
        )
    section = Section("lab", "Lab results", text=f"From {len(results)} experiment(s) in {lab_dir.name}/.")
    for path in results:
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConvlensError(f"{path}: not a lab result ({exc})") from None
        name = record.get("experiment", path.parent.name)
        for table in record.get("tables", []):
            section.tables.append({**table, "title": f"{name}: {table['title']}"})
        plot = path.parent / "plot.png"
        if plot.is_file():
            section.images.append(
                {
                    "data": base64.b64encode(plot.read_bytes()).decode("ascii"),
                    "alt": f"{name} plot",
                    "caption": f"{name} ({record.get('seconds', 0):.1f} s)",
                }
            )
    return section


def report_sections(
    run_dir: str | Path, data: str | None = None, eps: float = 0.1, lab_dir: str | Path | None = None
) -> tuple[dict, list[Section]]:
    """(checkpoint metadata, the report's sections) for a run."""
    from convlens.attacks import check_eps
    from convlens.checkpoint import load_checkpoint
    from convlens.lab._common import model_test_data
    from convlens.predict import predict_probabilities

    check_eps(eps)
    model, meta = load_checkpoint(run_dir)
    images, labels, spec = model_test_data(meta, data)  # whole test split, seeded order
    probabilities = predict_probabilities(model, images)  # (N, classes)
    run_folder = Path(meta["_path"]).parent
    lab_dir = Path(lab_dir) if lab_dir is not None else run_folder / "lab"
    sample = int(torch.nonzero(probabilities.argmax(1) == labels).flatten()[0]) if labels.numel() else 0
    sections = [
        _overview(meta, model),
        _training(meta),
        _confusion(meta, labels, probabilities.argmax(1), spec),
        _misclassified(model, meta, images, labels, probabilities),
        _filters(model),
        _feature_maps(model, meta, images[sample], int(labels[sample])),
        _attacks(model, meta, images, labels, eps),
        _lab(lab_dir),
    ]
    return meta, sections


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
        sections=sections,
        version=__version__,
        written=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


def build_report(
    run_dir: str | Path,
    out_file: str | Path | None = None,
    data: str | None = None,
    eps: float = 0.1,
    lab_dir: str | Path | None = None,
) -> Path:
    """Write the report of ``run_dir`` to ``out_file`` (default RUN_DIR/report.html); returns its path."""
    from convlens.checkpoint import atomic_write

    meta, sections = report_sections(run_dir, data, eps, lab_dir)
    out_path = Path(out_file) if out_file is not None else Path(meta["_path"]).parent / "report.html"
    if out_path.is_dir():
        raise ConvlensError(f"--out {out_path}: is a folder; give a file name such as report.html")
    title = f"{meta['model']['name']} on {meta.get('dataset', {}).get('name', 'its data')}"
    atomic_write(out_path, render_report(title, sections).encode("utf-8"))
    return out_path
