"""Lab commands: lab, attack, report."""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import asdict
from pathlib import Path

import typer

from convlens.cli import app
from convlens.cli.render import err, out, percent, print_json
from convlens.errors import ConvlensError

JSON_HELP = "Print one JSON object to stdout instead of tables."


def _print_tables(tables) -> None:
    from rich.table import Table

    for table in tables:
        rich_table = Table(title=table.title, title_justify="left")
        for index, column in enumerate(table.columns):
            rich_table.add_column(column, justify="left" if index == 0 else "right")
        for row in table.rows:
            rich_table.add_row(*row)
        out.print(rich_table)


def _parse_options(pairs: list[str], run_function) -> dict:
    """--option KEY=VALUE pairs, checked against the experiment's keyword arguments."""
    from convlens.cli.core import parse_key_values

    accepted = [p for p in inspect.signature(run_function).parameters if p not in ("dataset", "model")]
    options = parse_key_values(pairs, "--option")
    for key in options:
        if key not in accepted:
            raise ConvlensError(f"--option {key}: unknown; this experiment takes: {', '.join(accepted)}")
    return {key: tuple(value) if isinstance(value, list) else value for key, value in options.items()}


def _write_json(path: Path, value) -> None:
    from convlens.checkpoint import atomic_write

    atomic_write(path, (json.dumps(value, indent=2) + "\n").encode())


def _run_one(name: str, dataset, out_dir: Path, options: dict, as_json: bool) -> dict:
    """Run, write result.json and plot.png, print the tables (unless --json); returns the record."""
    from convlens.lab import run_experiment
    from convlens.lab.plots import experiment_figure, save_png

    err.print(f"lab [bold]{name}[/] on [bold]{dataset.name}[/] …")
    result = run_experiment(name, dataset, **options)
    record = {
        "experiment": name,
        "data": dataset.spec or dataset.name,
        **result.to_json(),
        "tables": [asdict(table) for table in result.tables()],  # what the report shows
    }
    _write_json(out_dir / "result.json", record)
    plot = save_png(experiment_figure(name, result), out_dir / "plot.png")
    if not as_json:
        _print_tables(result.tables())
    err.print(f"{name}: took {result.seconds:.1f} s   result: {out_dir / 'result.json'}   plot: {plot}")
    return record


@app.command()
def lab(
    name: str = typer.Argument(
        ..., help="Experiment: params, locality, equivariance, invariance, hierarchy, calibration, or all."
    ),
    data: str = typer.Option("mnist5k", "--data", "-d", help="Built-in name or a path."),
    out_dir: Path = typer.Option(
        None, "--out", "-o", help="Folder for result.json and plot.png (default: runs/lab/NAME)."
    ),
    option: list[str] = typer.Option([], "--option", help="Experiment option KEY=VALUE, e.g. epochs=2."),
    quick: bool = typer.Option(
        False, "--quick", help="Tiny settings: a smoke test in seconds, not a result."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Run a lab experiment that tests a claim about CNNs; prints a table, writes result.json and a plot.

    Examples:

      convlens lab locality --data mnist5k

      convlens lab all --out runs/lab
    """
    import importlib

    from convlens.data import load_dataset
    from convlens.lab import QUICK, check_experiment, list_experiments

    names = list_experiments() if name == "all" else [check_experiment(name)]
    options = {}
    if name != "all":
        options = _parse_options(option, importlib.import_module(f"convlens.lab.{name}").run)
    elif option:
        raise ConvlensError("--option applies to one experiment, not to all (use --quick for tiny settings)")
    dataset = load_dataset(data)
    out_dir = out_dir or Path("runs") / "lab" / name
    start = time.perf_counter()
    index, records = [], []
    for experiment in names:
        folder = out_dir / experiment if name == "all" else out_dir
        chosen = {**(QUICK[experiment] if quick else {}), **options}
        records.append(_run_one(experiment, dataset, folder, chosen, as_json))
        index.append(
            {
                "experiment": experiment,
                "seconds": records[-1]["seconds"],
                "result": f"{experiment}/result.json",
                "plot": f"{experiment}/plot.png",
            }
        )
    if name != "all":
        if as_json:
            print_json(records[0])
        return
    total = time.perf_counter() - start
    if as_json:
        print_json({"data": data, "seconds": total, "experiments": records})
    _write_json(out_dir / "index.json", {"data": data, "seconds": total, "experiments": index})
    lines = [f"# convlens lab on {data}", "", f"All experiments took {total:.1f} s.", ""]
    lines += [
        f"- **{e['experiment']}** ({e['seconds']:.1f} s): [result]({e['result']}) · ![plot]({e['plot']})"
        for e in index
    ]
    (out_dir / "index.md").write_text("\n".join(lines) + "\n")
    err.print(f"all experiments took {total:.1f} s   index: {out_dir / 'index.json'}, {out_dir / 'index.md'}")


def _parse_sweep(text: str) -> list[float]:
    from convlens.attacks import check_eps

    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConvlensError(
            f"--eps-sweep: expected numbers separated by commas, e.g. 0,0.05,0.1; got {text!r}"
        ) from None
    if not values:
        raise ConvlensError("--eps-sweep: expected at least one value, e.g. 0,0.05,0.1")
    return [check_eps(v, "--eps-sweep value") for v in values]


def _target_index(target: str | None, class_names: list[str]) -> int | None:
    """A class given by index (0..K-1) or by name."""
    if target is None:
        return None
    if target in class_names:
        return class_names.index(target)
    try:
        index = int(target)
    except ValueError:
        index = -1
    if not 0 <= index < len(class_names):
        raise ConvlensError(
            f"--target must be a class index 0..{len(class_names) - 1} or a class name, got {target!r}"
        )
    return index


@app.command()
def attack(
    run_dir: Path = typer.Argument(..., help="Run folder (or checkpoint .json) written by `convlens train`."),
    method: str = typer.Option(
        "fgsm", "--method", "-m", help="fgsm (one step) or pgd (iterated, projected)."
    ),
    eps: float = typer.Option(0.1, "--eps", help="L∞ budget in pixel units [0, 1] (0.1 ≈ 25 grey levels)."),
    eps_sweep: str = typer.Option(
        None, "--eps-sweep", help="Comma-separated ε values: the robustness curve of FGSM and PGD."
    ),
    steps: int = typer.Option(10, "--steps", help="PGD steps."),
    target: str = typer.Option(
        None, "--target", help="Targeted attack: push every image towards this class."
    ),
    data: str = typer.Option(None, "--data", "-d", help="Data set (default: the training data)."),
    images: int = typer.Option(1000, "--images", help="How many test images to attack (seeded sample)."),
    out_dir: Path = typer.Option(
        None, "--out", "-o", help="Folder for result.json and PNGs (default: RUN_DIR/attack)."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Fool a trained model with an (almost) invisible perturbation: FGSM or PGD, untargeted or targeted.

    Examples:

      convlens attack runs/mnist --eps 0.1

      convlens attack runs/mnist --method pgd --eps 0.2 --target 3

      convlens attack runs/mnist --eps-sweep 0,0.02,0.05,0.1,0.2
    """
    from convlens import attacks
    from convlens.checkpoint import load_checkpoint
    from convlens.lab._common import model_test_data
    from convlens.lab.plots import attack_examples, robustness_curve, save_png

    # every flag is checked before anything heavy is loaded
    if method not in attacks.METHODS:
        raise ConvlensError(f"--method must be one of {', '.join(attacks.METHODS)}, got {method!r}")
    attacks.check_eps(eps)
    sweep = _parse_sweep(eps_sweep) if eps_sweep is not None else None
    if steps < 1:
        raise ConvlensError(f"--steps must be a positive integer, got {steps}")
    if images < 1:
        raise ConvlensError(f"--images must be a positive integer, got {images}")
    model, meta = load_checkpoint(run_dir)  # a few milliseconds: small models
    target_index = _target_index(target, meta["class_names"])
    pixels, labels, spec = model_test_data(meta, data, images)
    out_dir = out_dir or (Path(meta["_path"]).parent / "attack")
    start = time.perf_counter()
    result = attacks.attack(model, pixels, labels, method, eps, steps, target_index)
    summary = {"run": str(run_dir), "data": spec, **result.summary()}
    save_png(attack_examples(result, meta["class_names"]), out_dir / "examples.png")
    files = {"examples": str(out_dir / "examples.png")}
    if sweep is not None:
        curve = attacks.robustness_curve(model, pixels, labels, sweep, steps=steps)
        summary["robustness_curve"] = curve.summary()
        save_png(robustness_curve(curve), out_dir / "robustness.png")
        files["robustness_curve"] = str(out_dir / "robustness.png")
    summary["seconds"] = time.perf_counter() - start
    summary["files"] = files
    _write_json(out_dir / "result.json", summary)
    if as_json:
        return print_json(summary)
    _attack_tables(summary, meta["class_names"])
    err.print(f"took {summary['seconds']:.1f} s   " + "   ".join(f"{k}: {v}" for k, v in files.items()))


def _attack_tables(summary: dict, class_names: list[str]) -> None:
    from rich.table import Table

    name = summary["method"].upper() + (f"-{summary['steps']}" if summary["method"] == "pgd" else "")
    target = f", target {class_names[summary['target']]}" if summary["target"] is not None else ""
    table = Table(
        title=f"{name} ε = {summary['eps']:g}{target} on {summary['images']:,} {summary['data']} test images",
        title_justify="left",
    )
    for column in ("", "clean", "adversarial"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row("accuracy", percent(summary["clean_accuracy"]), percent(summary["adversarial_accuracy"]))
    table.add_row(
        "mean confidence",
        percent(summary["mean_confidence_clean"]),
        percent(summary["mean_confidence_adversarial"]),
    )
    table.add_row("max L∞ of the perturbation", "", f"{summary['max_linf']:.4f}")
    table.add_row("mean L2 of the perturbation", "", f"{summary['mean_l2']:.4f}")
    table.add_row("correct images fooled", "", f"{summary['flipped']:,}")
    if summary["target_success_rate"] is not None:
        table.add_row("now predicted as the target", "", percent(summary["target_success_rate"]))
    out.print(table)
    curve = summary.get("robustness_curve")
    if curve:
        sweep = Table(title="robustness curve: accuracy vs ε", title_justify="left")
        sweep.add_column("ε")
        for method in curve["accuracy"]:
            sweep.add_column(
                method.upper() if method == "fgsm" else f"PGD-{curve['pgd_steps']}", justify="right"
            )
        for i, value in enumerate(curve["eps"]):
            sweep.add_row(f"{value:g}", *[percent(curve["accuracy"][m][i]) for m in curve["accuracy"]])
        out.print(sweep)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="Run folder (or checkpoint .json) written by `convlens train`."),
    out_file: Path = typer.Option(
        None, "--out", "-o", help="HTML file to write (default: RUN_DIR/report.html)."
    ),
    data: str = typer.Option(None, "--data", "-d", help="Data set (default: the training data)."),
    eps: float = typer.Option(0.1, "--eps", help="ε of the attack examples in the report."),
    lab_dir: Path = typer.Option(
        None, "--lab", help="Folder of `convlens lab` results to include (default: RUN_DIR/lab)."
    ),
) -> None:
    """Write one self-contained HTML report of a run: curves, confusion, errors with Grad-CAM, filters, attacks, lab."""
    from convlens.report import build_report

    start = time.perf_counter()
    path = build_report(run_dir, out_file, data=data, eps=eps, lab_dir=lab_dir)
    err.print(f"took {time.perf_counter() - start:.1f} s")
    out.print(f"report: {path}")
