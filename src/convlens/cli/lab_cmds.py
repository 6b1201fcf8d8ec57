"""Lab commands: lab, attack, report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from convlens.cli.app import app
from convlens.cli.render import StepProgress, err, help_from, out, print_json, print_tables
from convlens.errors import ConvlensError
from convlens.views.tables import Table

JSON_HELP = "Print one JSON object to stdout instead of tables."


def _write_json(path: Path, value) -> None:
    from convlens.storage import atomic_write

    atomic_write(path, (json.dumps(value, indent=2) + "\n").encode())


def _experiment_help() -> str:
    """The experiments `convlens lab` runs, from the lab's registry (a registered plugin too)."""
    from convlens.lab import list_experiments

    return f"Experiment: {', '.join(list_experiments())} (see `convlens methods`), or all."


def _run_one(name: str, dataset, out_dir: Path, options: dict, as_json: bool):
    """Run, save the record (result.json, plot.png), print the tables (unless --json); returns the record.
    ``dataset`` None: the experiment measures a run folder (``options["run"]``), on its own data."""
    from convlens.lab import run_experiment, save_record
    from convlens.views.lab import experiment_record

    source = f"the run {options['run']}" if dataset is None else dataset.name
    err.print(f"lab {name} on {source} …", markup=False)
    with StepProgress(f"lab {name}") as bar:
        result = run_experiment(name, dataset, progress=bar, **options)
    data = getattr(result, "dataset", "") if dataset is None else dataset.spec or dataset.name
    record = experiment_record(name, data, result)
    written = save_record(record, out_dir)
    if not as_json:
        print_tables([Table(**table) for table in record.tables])
    files = "   ".join(f"{what}: {path}" for what, path in written.items())
    err.print(f"{name}: took {record.seconds:.1f} s   {files}")
    return record


@app.command(cls=help_from(name=_experiment_help))
def lab(
    name: str = typer.Argument(..., help="Experiment (see `convlens methods`), or all."),
    run_dir: str = typer.Argument(
        None,
        metavar="[RUN]",
        help="faithfulness only: a run folder to measure instead of training a model here; prints the "
        "numbers stored with the run (RUN/faithfulness.json, measured on first need). Same as --option run=RUN.",
    ),
    data: str = typer.Option("mnist5k", "--data", "-d", help="Built-in name or a path (not used with RUN)."),
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

      convlens lab faithfulness runs/mnist          (the run's own attribution verdicts)

      convlens lab all --out runs/lab
    """
    from convlens.cli.core import parse_key_values
    from convlens.data import load_dataset
    from convlens.lab import check_experiment, check_options, list_experiments, quick_options, save_index

    names = list_experiments() if name == "all" else [check_experiment(name)]
    options = {}
    if name != "all":
        options = check_options(name, parse_key_values(option, "--option"))
    elif option:
        raise ConvlensError("--option applies to one experiment, not to all (use --quick for tiny settings)")
    if run_dir is not None:
        if name != "faithfulness":
            raise ConvlensError(
                f"RUN: only `convlens lab faithfulness RUN` measures a run folder, not {name}"
            )
        if options.get("run") not in (None, run_dir):
            raise ConvlensError(f"--option run={options['run']} and RUN {run_dir}: name the run once")
        options["run"] = run_dir
    if options.get("run"):  # faithfulness of a run's maps: class maps only
        from convlens.cli.segment_cmds import refuse_segmentation
        from convlens.run import Run

        refuse_segmentation(
            Run.open(options["run"]),
            "faithfulness scores class maps of whole images; see a pixel's Grad-CAM with "
            "`convlens explain RUN IMAGE --pixel ROW,COL`",
        )
    dataset = None if options.get("run") else load_dataset(data)  # a run is measured on its own data
    out_dir = out_dir or Path("runs") / "lab" / name
    start = time.perf_counter()
    records = []
    for experiment in names:
        folder = out_dir / experiment if name == "all" else out_dir
        chosen = {**(quick_options(experiment) if quick else {}), **options}
        records.append(_run_one(experiment, dataset, folder, chosen, as_json))
    if name != "all":
        if as_json:
            print_json(records[0].to_json())
        return
    total = time.perf_counter() - start
    if as_json:
        print_json({"data": data, "seconds": total, "experiments": [r.to_json() for r in records]})
    index = save_index(out_dir, data, total, records)
    err.print(f"all experiments took {total:.1f} s   index: {index['json']}, {index['markdown']}")


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
    return [check_eps(v, "eps_list") for v in values]


@app.command()
def attack(
    run_dir: Path = typer.Argument(..., help="Run folder (or checkpoint .json) written by `convlens train`."),
    method: str = typer.Option(
        "fgsm",
        "--method",
        help="fgsm (one step), pgd (iterated, projected), or any registered attack (see `convlens methods`).",
    ),
    eps: float = typer.Option(0.1, "--eps", help="L∞ budget in pixel units [0, 1] (0.1 ≈ 25 grey levels)."),
    eps_sweep: str = typer.Option(
        None, "--eps-sweep", help="Comma-separated ε values: the robustness curve of FGSM and PGD."
    ),
    steps: int = typer.Option(10, "--steps", help="PGD steps (1..1,000)."),
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
    from convlens.run import Run
    from convlens.views.plots import attack_examples, robustness_curve, save_png
    from convlens.views.tables import attack_table, robustness_table

    # every flag is checked before anything heavy is loaded
    attacks.ATTACKS.get(method)
    attacks.check_eps(eps)
    sweep = _parse_sweep(eps_sweep) if eps_sweep is not None else None
    if steps < 1:
        raise ConvlensError(f"--steps must be a positive integer, got {steps}")
    if images < 1:
        raise ConvlensError(f"--images must be a positive integer, got {images}")
    run = Run.open(run_dir)  # a few milliseconds: small models
    from convlens.cli.segment_cmds import refuse_segmentation

    refuse_segmentation(
        run,
        "attacks flip a class per image; look at its pixels with `convlens explain RUN IMAGE --pixel ROW,COL`",
    )
    target_index = run.class_index(target)
    pixels, labels, spec = run.test_data(data, images)
    out_dir = out_dir or (run.folder / "attack")
    start = time.perf_counter()
    with StepProgress("attack") as bar:
        result = attacks.attack(run.model, pixels, labels, method, eps, steps, target_index, progress=bar)
    summary = {"run": str(run_dir), "data": spec, **result.summary()}
    tables = [attack_table(result, spec, run.class_names)]
    save_png(attack_examples(result, run.class_names), out_dir / "examples.png")
    files = {"examples": str(out_dir / "examples.png")}
    if sweep is not None:
        with StepProgress("robustness curve") as bar:
            curve = attacks.robustness_curve(run.model, pixels, labels, sweep, steps=steps, progress=bar)
        summary["robustness_curve"] = curve.summary()
        tables.append(robustness_table(curve))
        save_png(robustness_curve(curve), out_dir / "robustness.png")
        files["robustness_curve"] = str(out_dir / "robustness.png")
    else:
        # a curve from an earlier sweep would sit beside a result.json that no longer has it
        (out_dir / "robustness.png").unlink(missing_ok=True)
    summary["seconds"] = time.perf_counter() - start
    summary["files"] = files
    _write_json(out_dir / "result.json", summary)
    if as_json:
        return print_json(summary)
    print_tables(tables)
    err.print(f"took {summary['seconds']:.1f} s   " + "   ".join(f"{k}: {v}" for k, v in files.items()))


def _check_run(run_dir: Path) -> None:
    """A folder with no checkpoint is one error naming the folder given (the checkpoint loader
    names the RUN_DIR/model.json it looked for, a file the user never mentioned)."""
    from convlens.checkpoint import resolve_checkpoint

    try:
        resolve_checkpoint(run_dir)
    except ConvlensError as exc:
        if Path(run_dir).is_dir() and "no checkpoint here" in str(exc):
            raise ConvlensError(
                f"{run_dir}: no checkpoint here (expected a run folder or a .json written by convlens train)"
            ) from None
        raise


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
    as_json: bool = typer.Option(
        False, "--json", help='Print {"report": PATH, "bytes": N, "seconds": S, "run": RUN_DIR}.'
    ),
) -> None:
    """Write one self-contained HTML report of a run: curves, confusion, errors with Grad-CAM, filters, attacks, lab.

    Example:  convlens report runs/mnist          (writes runs/mnist/report.html)
    """
    from convlens.report import build_report

    _check_run(run_dir)  # before the progress bar: its line would stand blank above the error
    start = time.perf_counter()
    with StepProgress("report") as bar:
        path = build_report(run_dir, out_file, data=data, eps=eps, lab_dir=lab_dir, progress=bar)
    seconds = time.perf_counter() - start
    if as_json:
        return print_json(
            {"report": str(path), "bytes": path.stat().st_size, "seconds": seconds, "run": str(run_dir)}
        )
    err.print(f"took {seconds:.1f} s")
    out.print(f"report: {path}")
    return None
