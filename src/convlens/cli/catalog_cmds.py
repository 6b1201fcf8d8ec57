"""Listing commands: datasets, models, methods. What can be chosen by name, from the registries."""

from __future__ import annotations

import typer

from convlens.cli.app import app
from convlens.cli.render import out, print_json, print_tables
from convlens.errors import ConvlensError

JSON_HELP = "Print one JSON object to stdout instead of tables."


@app.command()
def datasets(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the built-in data sets (shape, classes, size) and the formats --data PATH reads.

    Examples:

      convlens datasets

      convlens datasets --json
    """
    from rich.markup import escape
    from rich.table import Table

    from convlens.data import DATA_FORMATS, list_datasets

    rows = list_datasets()
    if as_json:
        return print_json(rows)
    table = Table(title="built-in data sets (use the name with --data)", title_justify="left")
    for column in ("name", "task", "input", "classes", "train", "test", "description"):
        table.add_column(column)
    for row in rows:
        note = row["description"] + ("" if row["available"] else f"  [yellow](missing: {row['hint']})[/]")
        table.add_row(
            row["name"],
            row["task"],
            "x".join(map(str, row["input_shape"])),
            str(row["classes"]),
            f"{row['train']:,}",
            f"{row['test']:,}",
            note,
        )
    out.print(table)
    formats = Table(title="your own data: --data PATH, in any of these formats", title_justify="left")
    for column in ("format", "what it reads"):
        formats.add_column(column)
    for entry in DATA_FORMATS:
        formats.add_row(entry.name, escape(entry.help))
    out.print(formats)


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        channels, height, width = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise ConvlensError(f"--input: expected CxHxW such as 1x28x28, got {text!r}") from None
    return channels, height, width


@app.command()
def models(
    input_shape: str = typer.Option("1x28x28", "--input", help="Input shape CxHxW, e.g. 1x28x28 or 3x32x32."),
    classes: int = typer.Option(10, "--classes", help="Number of classes."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List the registered models with parameter count and FLOPs per image.

    Examples:

      convlens models

      convlens models --input 3x32x32 --classes 4
    """
    from rich.markup import escape
    from rich.table import Table

    from convlens.models import count_parameters, create_model, describe_model, flops_per_image, list_models

    shape = parse_shape(input_shape)
    rows = []
    for name in list_models():
        try:
            model = create_model(name, shape, classes)
        except ConvlensError as exc:
            if exc.parameter == "num_classes":
                raise
            rows.append({"name": name, "error": str(exc), "description": describe_model(name)})
            continue  # e.g. an mlp too large for a big input: the other models still list
        rows.append(
            {
                "name": name,
                "parameters": count_parameters(model),
                "flops": flops_per_image(model, shape),
                "stages": [stage for stage, _ in model.stages()],
                "description": describe_model(name),
            }
        )
    if as_json:
        return print_json(rows)
    table = Table(title=f"models for {input_shape} input, {classes} classes", title_justify="left")
    for column in ("name", "parameters", "MFLOPs/image", "description"):
        table.add_column(column, justify="right" if column in ("parameters", "MFLOPs/image") else "left")
    for row in rows:
        if "error" in row:
            table.add_row(row["name"], "-", "-", f"[red]cannot build:[/] {escape(row['error'])}")
            continue
        table.add_row(row["name"], f"{row['parameters']:,}", f"{row['flops'] / 1e6:.2f}", row["description"])
    out.print(table)


@app.command()
def methods(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List every registry: attribution methods, attacks, lab experiments, models, data sets, formats, layer kinds.

    Each comes from its registry, so anything registered (by a plugin or a script) shows up here.

    Examples:

      convlens methods

      convlens methods --json
    """
    from convlens.catalog import catalog
    from convlens.views.tables import Table

    registries = catalog()
    if as_json:
        return print_json(registries)
    for kind, entries in registries.items():
        rows = [
            [
                entry["name"],
                ", ".join(
                    p["name"] if p["required"] else f"{p['name']}={p['default']}"
                    for p in entry.get("parameters", [])
                )
                or "-",
                entry["help"],
            ]
            for entry in entries
        ]
        print_tables([Table(kind, ["name", "options (default)", "what it is"], rows)])
    return None
