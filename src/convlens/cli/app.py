"""The Typer application every command module registers on; ``convlens.cli`` imports them all."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="convlens",
    help="Train convolutional neural networks on real images and see how they see.\n\n"
    "Start with:  convlens demo   or   convlens train --data mnist5k --out runs/mnist",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from convlens import __version__  # a plain string: loads no torch

        print(f"convlens {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: bool = typer.Option(
        False,
        "--version",
        "-V",
        callback=_print_version,
        is_eager=True,
        help="Print the version (convlens X.Y.Z) and exit.",
    ),
) -> None:
    pass  # the help text is the Typer(help=...) above
