"""Results as tables: every face (terminal, HTML report, JSON) lays out the same ``Table``.

Builders here turn the core's result objects into already-formatted cells, so the CLI,
the report and the server show the same rows under the same headings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass
class Table:
    """A result as a table of already-formatted cells: the faces only lay it out."""

    title: str
    columns: list[str]
    rows: list[list[str]]


_NUMBER = re.compile(r"^[-+−(]?[\d.,]+(e[-+]?\d+)?\s?(%|s|ms|px|×)?\)?$|^\d+(x\d+)+$", re.IGNORECASE)


def numeric_columns(rows: list[list[str]]) -> list[bool]:
    """Which columns hold only numbers (``-`` counts as a missing number): the faces right-align
    those and left-align text, so names and verdicts read naturally and digits line up."""
    width = max((len(row) for row in rows), default=0)
    return [
        any(_is_number(row[i]) for row in rows if i < len(row))
        and all(_is_number(row[i]) or row[i].strip() in ("", "-", "—") for row in rows if i < len(row))
        for i in range(width)
    ]


def _is_number(cell) -> bool:
    return bool(_NUMBER.match(str(cell).strip()))


def percent(value: float, digits: int = 2) -> str:
    return f"{100 * value:.{digits}f} %"


def _receptive_field(field) -> str:
    return "whole image" if field.whole_image else f"{field.size[0]}x{field.size[1]}"


def stage_table(fields: list, title: str = "stages", reads: dict | None = None) -> Table:
    """Every stage's output shape, parameters, receptive field and jump (``inspect.receptive_fields``);
    with ``reads`` (``inspect.stage_inputs`` of a graph) also the stages each one reads."""
    columns = ["stage", "kind", "output", "parameters", "receptive field (px)", "jump (px)"]
    rows = [
        [
            f.stage,
            f.kind,
            "x".join(map(str, f.output_shape)),
            f"{f.parameters:,}",
            _receptive_field(f),
            "-" if f.whole_image else "x".join(map(str, f.jump)),
        ]
        for f in fields
    ]
    if reads is not None:
        columns.append("reads")
        for row in rows:
            row.append(", ".join(reads.get(row[0], ())) or "-")
    return Table(title, columns, rows)


def stage_rows(fields: list) -> list[dict]:
    """The same facts as ``stage_table``, as JSON (one key set for the CLI's --json and the server)."""
    return [
        {
            "stage": f.stage,
            "kind": f.kind,
            "output_shape": list(f.output_shape),
            "parameters": f.parameters,
            "receptive_field": None if f.whole_image else list(f.size),
            "jump": None if f.whole_image else list(f.jump),
            "whole_image": f.whole_image,
        }
        for f in fields
    ]


def classification_tables(
    per_class: list[dict], confusion: list[list[int]], class_names: list[str]
) -> list[Table]:
    """Per-class precision/recall and the confusion matrix (rows: true class, columns: predicted)."""
    scores = Table(
        "per class (held-out split)",
        ["class", "precision", "recall", "images"],
        [
            [row["class"], percent(row["precision"]), percent(row["recall"]), str(row["support"])]
            for row in per_class
        ],
    )
    short = [name[:7] for name in class_names]
    matrix = Table(
        "confusion matrix (rows: true class, columns: predicted)",
        ["", *short],
        [[name, *[str(v) if v else "." for v in row]] for name, row in zip(short, confusion, strict=True)],
    )
    return [scores, matrix]


def attack_table(result, data: str = "", class_names: list[str] | None = None) -> Table:
    """Clean vs adversarial numbers of one attack (``attacks.AttackResult``)."""
    target = ""
    if result.target is not None:
        target = f", target {class_names[result.target] if class_names else result.target}"
    summary = result.summary()
    where = f" on {summary['images']:,} {data + ' ' if data else ''}test images"
    rows = [
        ["accuracy", percent(summary["clean_accuracy"]), percent(summary["adversarial_accuracy"])],
        [
            "mean confidence",
            percent(summary["mean_confidence_clean"]),
            percent(summary["mean_confidence_adversarial"]),
        ],
        ["max L∞ of the perturbation", "", f"{summary['max_linf']:.4f}"],
        ["mean L2 of the perturbation", "", f"{summary['mean_l2']:.4f}"],
        ["correct images fooled", "", f"{summary['flipped']:,}"],
    ]
    if summary["target_success_rate"] is not None:
        rows.append(["now predicted as the target", "", percent(summary["target_success_rate"])])
    return Table(
        f"{summary['label']} ε = {summary['eps']:g}{target}{where}", ["", "clean", "adversarial"], rows
    )


def robustness_table(curve) -> Table:
    """Accuracy against ε per attack (``attacks.RobustnessCurve``)."""
    labels = curve.labels()
    return Table(
        f"robustness curve: accuracy vs ε on {curve.images:,} test images",
        ["ε", *labels.values()],
        [[f"{eps:g}", *[percent(curve.accuracy[m][i]) for m in labels]] for i, eps in enumerate(curve.eps)],
    )


def diagnostics_table(diagnostics: list[dict]) -> Table:
    """What training found wrong (``model.json`` "diagnostics"): severity, finding, what to try."""
    return Table(
        "what training found (diagnostics)",
        ["", "finding", "what to try"],
        [[d["severity"], d["message"], d["action"]] for d in diagnostics],
    )


def lab_not_run_table(experiments: list[tuple[str, str]]) -> Table:
    """Registered lab experiments without results: (name, what it tests), and how to run each."""
    return Table(
        "not run yet",
        ["experiment", "what it tests", "command"],
        [[name, help, f"convlens lab {name} --out RUN_DIR/lab/{name}"] for name, help in experiments],
    )


def _number(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def faithfulness_line(label: str, found: dict | None) -> str:
    """One line: ``label``'s verdict on this run and on this image, with the numbers
    (``convlens.inspect.run_faithfulness.attribution_faithfulness``)."""
    if not found:
        return f"{label}: faithfulness not measured"
    run = found.get("run")
    if run:
        d, r = run["deletion"], run["randomization"]
        low, high = d["interval"]
        text = (
            f"{label} {run['verdict']} on this run: deletion AUC {_number(d['auc'])} vs random order "
            f"{_number(d['random_auc'])} (difference {_number(d['difference'])}, 95 % interval {_number(low)} to "
            f"{_number(high)}, {d['images']} test images, {run.get('fill', 'blur')} fill); after weight "
            f"randomization Spearman {_number(r['spearman'], 2)} ({r['verdict']}: a map passes below {r['threshold']})"
        )
    else:
        text = f"{label} not measured on this run ({found.get('run_error') or found.get('error') or 'no test images'})"
    if found.get("verdict"):
        drop = "a blank map" if found.get("drop") is None else f"drop {_number(found['drop'])} against random"
        text += (
            f"; this image: {found['verdict']}, deletion AUC {_number(found.get('deletion_auc'))} vs random "
            f"{_number(found.get('random_deletion_auc'))} ({drop})"
        )
    return text


def faithfulness_table(results: list[tuple[str, dict | None]], title: str = "") -> Table:
    """Each method's verdict on the run and on one image: ``results`` is ``[(label, faithfulness)]``."""
    rows = []
    for label, found in results:
        run = (found or {}).get("run") or {}
        d, r = run.get("deletion", {}), run.get("randomization", {})
        interval = d.get("interval") or [None, None]
        rows.append(
            [
                label,
                run.get("verdict", "not measured"),
                _number(d.get("auc")),
                _number(d.get("random_auc")),
                f"{_number(d.get('difference'))} ({_number(interval[0])} to {_number(interval[1])})"
                if d
                else "-",
                _number(r.get("spearman"), 2),
                (found or {}).get("verdict") or "-",
                _number((found or {}).get("drop")),
            ]
        )
    columns = [
        "method", "on this run", "deletion AUC", "random order", "difference (95 % interval)",
        "Spearman after randomization", "this image", "drop against random",
    ]  # fmt: skip
    return Table(title, columns, rows)
