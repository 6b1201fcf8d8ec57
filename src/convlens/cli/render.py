"""Terminal rendering for the CLI: Rich tables and the training progress bar. No numeric work here."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from convlens.errors import ConvlensError
from convlens.views.tables import percent

UNWRAPPED = 100_000  # columns of a console that is not a terminal: a line is as long as it is


class _Console(Console):
    """A Rich console that wraps only on a terminal. Rich wraps at the terminal's width (80 with
    none), so output piped to a file or a program broke lines mid-command (the demo's suggested
    commands); there, lines stay whole and tables take their natural width. ``COLUMNS`` (or an
    explicit width) still sets the width."""

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)
        if self._width is None and "COLUMNS" not in self._environ and not self.is_terminal:
            return ConsoleDimensions(UNWRAPPED, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)


out = _Console(highlight=False)  # results
err = _Console(stderr=True, highlight=False)  # progress and notes: keeps stdout clean for --json


def significant(value, digits: int = 6):
    """``value`` with every float rounded to ``digits`` significant digits (in lists and dicts
    too): float32 results (probabilities, losses) printed as 0.699999988079071 claim digits
    they do not have; 6 is what a float32 holds. Whole numbers and exact ratios stay as they are
    when the caller does not pass them here."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {key: significant(item, digits) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [significant(item, digits) for item in value]
    return value


def print_json(value) -> None:
    """Print ``value`` as strict JSON: NaN and infinity (which ``json`` would write as bare
    ``NaN``/``Infinity``, invalid for every other JSON reader) are an error, printed nowhere."""
    try:
        text = json.dumps(value, indent=2, allow_nan=False)
    except ValueError:
        raise ConvlensError(
            "--json: the result holds NaN or infinite numbers, which JSON cannot carry"
        ) from None
    sys.stdout.write(text + "\n")


class ProgressBar:
    """A Rich progress bar per epoch: loss, accuracy, img/s and ETA, then one line with held-out accuracy."""

    def __init__(self, console: Console = err) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task = None

    def start_training(self, config, split: dict) -> None:
        """The recipe fit() chose, before the first epoch."""
        options = ", ".join(f"{k}={v}" for k, v in config.model_options.items()) or "defaults"
        held_out = (
            f"{split['validation']:,} validation images" if split["validation"] else "no validation split"
        )
        self.console.print(
            f"recipe: {config.epochs} epochs, batch {config.batch_size}, OneCycle peak lr {config.lr:g}, "
            f"augmentation {config.augment}, model options {options}; {split['train']:,} training images, "
            f"{held_out}"
        )

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        if self.task is None:
            self.progress.start()
        else:
            self.progress.remove_task(self.task)
        self.batches = batches
        self.task = self.progress.add_task("", total=batches, epoch=f"{epoch}/{epochs}", stats="")

    def batch_done(self, loss: float, accuracy: float, images_per_second: float) -> None:
        stats = f"loss {loss:.3f}  acc {percent(accuracy)}  {images_per_second:,.0f} img/s"
        done = self.progress.tasks[-1].completed
        self.progress.update(self.task, completed=min(done + 10, self.batches), stats=stats)

    def end_epoch(self, metrics: dict) -> None:
        self.progress.update(self.task, completed=self.batches)
        if "test_mean_iou" in metrics:  # segmentation: accuracies count pixels; mean IoU decides
            scores = (
                f"  pixels {percent(metrics['train_accuracy'])}"
                + (f"  val mIoU {percent(metrics['val_mean_iou'])}" if "val_mean_iou" in metrics else "")
                + f"  test mIoU {percent(metrics['test_mean_iou'])}"
            )
        else:
            scores = (
                f"  train {percent(metrics['train_accuracy'])}"
                + (f"  val {percent(metrics['val_accuracy'])}" if "val_accuracy" in metrics else "")
                + f"  test {percent(metrics['test_accuracy'])}"
            )
        self.console.print(
            f"epoch {metrics['epoch']:>3}  loss {metrics['train_loss']:.3f}{scores}"
            f"  {metrics['images_per_second']:,.0f} img/s  {metrics['train_seconds']:.1f} s"
        )

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()


class StepProgress:
    """A Rich progress bar on stderr fed by a core function's ``progress(done, total, what)``.

    ``with StepProgress("attack") as bar: attacks.attack(..., progress=bar)``; it disappears
    when the block ends, so stdout (tables, ``--json``) and the lines after it stay clean.
    """

    def __init__(self, title: str, console: Console = err) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[what]}", markup=False),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task(title, total=None, what="")

    def __call__(self, done: int, total: int, what: str) -> None:
        self.progress.update(self.task, completed=done, total=total, what=what)

    def __enter__(self) -> StepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.progress.stop()


def help_from(**texts: Callable[[], str]) -> type:
    """A Typer command class whose parameters' help (by parameter name) is written when --help is shown.

    For choices read from a registry (experiments, attribution methods): importing the registry
    when the CLI starts would load torch for every command, and a plugin registered later would
    be missing from a list written at import time.
    """
    from typer.core import TyperCommand

    class RegistryHelp(TyperCommand):
        def format_help(self, ctx, formatter) -> None:
            for parameter in self.params:
                if parameter.name in texts:
                    parameter.help = texts[parameter.name]()
            super().format_help(ctx, formatter)

    return RegistryHelp


def shift_warning(source: str, shift: dict | None, inverted: bool) -> None:
    """One line on stderr when an image is far from the training images (``convlens.shift``)."""
    if not shift or not shift["is_far"]:
        return
    hint = ""
    if shift["looks_inverted"]:
        hint = "; try without --invert" if inverted else "; try --invert"
    err.print(f"convlens: warning: {source}: {shift['message']}{hint}", markup=False, soft_wrap=True)


def print_tables(tables) -> None:
    """Lay out ``convlens.views.tables.Table``s as Rich tables: numbers right, text left."""
    from convlens.views.tables import numeric_columns

    for table in tables:
        rich_table = Table(title=table.title, title_justify="left")
        numeric = numeric_columns(table.rows)
        for index, column in enumerate(table.columns):
            number = index < len(numeric) and numeric[index]
            rich_table.add_column(column, justify="right" if number else "left")
        for row in table.rows:
            rich_table.add_row(*row)
        out.print(rich_table)


def classification_tables(per_class: list[dict], confusion: list[list[int]], class_names: list[str]) -> None:
    """Per-class scores and the confusion matrix, as every face shows them."""
    from convlens.views.tables import classification_tables as tables

    print_tables(tables(per_class, confusion, class_names))


def predictions_table(rows: list[dict]) -> None:
    """One row per file; a file that could not be read gets the reason in a column of its own
    (under "runners-up" it read as a class), and the column only when some file failed."""
    failed = any(row.get("error") for row in rows)
    table = Table()
    table.add_column("file", overflow="fold")
    table.add_column("prediction")
    table.add_column("confidence", justify="right")
    table.add_column("runners-up")
    if failed:
        table.add_column("error")
    for row in rows:
        if row.get("error"):  # a file that could not be read (its warning is on stderr)
            reason = row["error"].removeprefix(f"{row['file']}: ")  # the file is in its own column
            table.add_row(escape(row["file"]), "[red]unreadable[/]", "", "", escape(reason))
            continue
        first, *rest = row["predictions"]
        table.add_row(
            escape(row["file"]),
            first["class"],
            percent(first["probability"]),
            ", ".join(f"{p['class']} {percent(p['probability'])}" for p in rest),
            *([""] if failed else []),
        )
    out.print(table)


def number(value: float | None) -> str:
    """A step's value as ``views.arithmetic.num`` writes it; None (JSON's ±inf/NaN) reads n/a."""
    from convlens.views.arithmetic import num  # imports torch: only when arithmetic is printed

    return "n/a" if value is None else num(value)


def grid_text(values, marks=None) -> str:
    """Rows of numbers with their decimal points in one column; a cell marked "pad" reads pad,
    the "winner" gets a * after it."""
    from convlens.views.arithmetic import aligned

    marks = marks if marks is not None else [[None] * len(row) for row in values]
    real = [
        v
        for row, row_marks in zip(values, marks, strict=True)
        for v, m in zip(row, row_marks, strict=True)
        if m != "pad"
    ]
    shown = iter(aligned(real))
    texts = [
        ["pad " if mark == "pad" else next(shown) + ("*" if mark == "winner" else " ") for mark in row_marks]
        for row_marks in marks
    ]
    width = max([8, *(len(text) for row in texts for text in row)])
    return "\n".join(" ".join(text.rjust(width) for text in row).rstrip() for row in texts)


def _table_text(table: dict) -> list[str]:
    from convlens.views.arithmetic import aligned

    columns = list(zip(*table["rows"], strict=True)) if table["rows"] else []
    # a column of numbers shares its decimals; a label column stays as it is
    shown = [aligned(list(c)) if all(not isinstance(v, str) for v in c) else list(c) for c in columns]
    rows = [table["columns"], *[list(r) for r in zip(*shown, strict=True)]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(table["columns"]))]
    lines = [table["caption"]] if table.get("caption") else []
    for index, row in enumerate(rows):
        marker = "> " if index - 1 == table.get("chosen") else "  "
        lines.append(marker + "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    return lines


def steps_text(steps: list[dict]) -> str:
    """Arithmetic steps (``convlens.views.arithmetic``) as plain text, one step after another."""
    lines: list[str] = []
    for step in steps:
        lines += [step[key] for key in ("title", "heading", "text") if step.get(key)]
        grids, ops = step.get("grids") or [], step.get("ops") or []
        for index, grid in enumerate(grids):
            op = ops[index - 1] + " " if 0 < index <= len(ops) else ""
            lines += [op + grid["caption"], grid_text(grid["values"], grid.get("marks"))]
        if step.get("table"):
            lines += _table_text(step["table"])
        if "equation" in step:
            lines.append(f"{step['equation']} {number(step.get('value'))}")
    return "\n".join(lines)


def init_summary(init: dict | None) -> None:
    """The one line ``train --init`` prints on stderr: tensors loaded, re-initialised and skipped."""
    if init:
        from convlens.train.init_weights import describe_init

        err.print(describe_init(init), markup=False, soft_wrap=True)  # one line, however wide the terminal


def training_summary(result) -> None:
    """What ``fit()`` ended with, as ``train`` and ``demo`` print it: accuracy, the epoch kept and
    why, per-class scores, the confusion matrix and the diagnostics."""
    from convlens.train.selection import stopping_text

    ended = stopping_text(result.epochs, result.stopped, (result.validation or {}).get("validation") or 0)
    segmentation = getattr(result, "task", "classification") == "segmentation"
    headline = (
        f"test mean IoU {percent(result.test_mean_iou)} (pixel accuracy {percent(result.test_accuracy)})"
        if segmentation
        else f"test accuracy {percent(result.test_accuracy)}"
    )
    out.print(
        f"\n[bold]{headline}[/]; {escape(ended)}, "
        f"{result.train_seconds:.1f} s of training; model.* is epoch {result.selected_epoch}: "
        f"{escape(result.selection)}"
    )
    if segmentation:
        iou_table(result.per_class_iou)
    else:
        classification_tables(result.per_class, result.confusion, result.class_names)
    print_diagnostics(result.diagnostics)


def iou_table(per_class_iou: list[dict]) -> None:
    """A segmentation run's per-class IoU, Dice and pixel counts, one line per class."""
    out.print(f"{'class':<20} {'IoU':>8} {'Dice':>8} {'pixels':>10} {'predicted':>10}", markup=False)
    for row in per_class_iou:
        iou = "—" if row["iou"] is None else percent(row["iou"])
        dice = "—" if row["dice"] is None else percent(row["dice"])
        out.print(
            f"{row['class']:<20} {iou:>8} {dice:>8} {row['pixels']:>10,} {row['predicted_pixels']:>10,}",
            markup=False,
        )
    out.print(
        "— : the class is in neither the truth nor the prediction (left out of the means)", markup=False
    )


def print_diagnostics(diagnostics: list[dict], console: Console = err) -> None:
    """What fit() found about the trained model: one line each, with what to try."""
    if not diagnostics:
        console.print("diagnostics: nothing unusual (no dead channels, no rollbacks, no overfitting)")
        return
    console.print("[bold]diagnostics[/] (also in model.json):")
    for finding in diagnostics:
        colour = "yellow" if finding["severity"] == "warning" else "default"
        message, action = escape(finding["message"]), escape(finding["action"])
        console.print(f"  [{colour}]{finding['severity']}: {message}[/] → {action}")
