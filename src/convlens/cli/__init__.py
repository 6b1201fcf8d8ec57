"""The `convlens` command: one sub-command per verb. Heavy imports happen inside commands."""

from __future__ import annotations

import logging
import sys

import typer

from convlens.errors import ConvlensError

app = typer.Typer(
    name="convlens",
    help="Train convolutional neural networks on real images and see how they see.\n\n"
    "Start with:  convlens demo   or   convlens train --data mnist5k --out runs/mnist",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

from convlens.cli import core, inspect_cmds, lab_cmds, serve_cmd  # noqa: E402,F401  (registers the commands)


class _OneLineWarnings(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        print(f"convlens: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    logger = logging.getLogger("convlens")
    logger.addHandler(_OneLineWarnings())
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        app()
    except ConvlensError as exc:
        print(f"convlens: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("convlens: interrupted", file=sys.stderr)
        sys.exit(130)
