"""Terminal rendering for the CLI: Rich tables and the training progress bar. No numeric work here."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

out = Console(highlight=False)  # results
err = Console(stderr=True, highlight=False)  # progress and notes: keeps stdout clean for --json


def print_json(value) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def percent(value: float) -> str:
    return f"{100 * value:.2f} %"


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
        self.console.print(
            f"epoch {metrics['epoch']:>3}  loss {metrics['train_loss']:.3f}  train {percent(metrics['train_accuracy'])}"
            f"  test {percent(metrics['test_accuracy'])}  {metrics['images_per_second']:,.0f} img/s"
            f"  {metrics['train_seconds']:.1f} s"
        )

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()


def classification_tables(per_class: list[dict], confusion: list[list[int]], class_names: list[str]) -> None:
    table = Table(title="per class (held-out split)", title_justify="left")
    for column in ("class", "precision", "recall", "images"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in per_class:
        table.add_row(row["class"], percent(row["precision"]), percent(row["recall"]), str(row["support"]))
    out.print(table)
    short = [name[:7] for name in class_names]
    matrix = Table(title="confusion matrix (rows: true class, columns: predicted)", title_justify="left")
    matrix.add_column("")
    for name in short:
        matrix.add_column(name, justify="right")
    for name, row in zip(short, confusion, strict=True):
        diagonal = row[short.index(name)] if name in short else None
        matrix.add_row(
            name,
            *[
                f"[bold]{v}[/]" if v == diagonal and i == short.index(name) else (str(v) if v else ".")
                for i, v in enumerate(row)
            ],
        )
    out.print(matrix)


def predictions_table(rows: list[dict]) -> None:
    table = Table()
    table.add_column("file", overflow="fold")
    table.add_column("prediction")
    table.add_column("confidence", justify="right")
    table.add_column("runners-up")
    for row in rows:
        first, *rest = row["predictions"]
        table.add_row(
            row["file"],
            first["class"],
            percent(first["probability"]),
            ", ".join(f"{p['class']} {percent(p['probability'])}" for p in rest),
        )
    out.print(table)
