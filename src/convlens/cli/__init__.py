"""The `convlens` command: one sub-command per verb. Heavy imports happen inside commands."""

from __future__ import annotations

import logging
import sys

from convlens.cli import (  # noqa: F401  (registers the commands, in the order --help lists them)
    catalog_cmds,
    core,
    export_cmd,
    features_cmd,
    import_cmd,
    inspect_cmds,
    lab_cmds,
    neuron_cmd,
    pack_cmd,
    playground_cmd,
    serve_cmd,
)
from convlens.cli.app import app
from convlens.errors import ConvlensError, printable


class _OneLineWarnings(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        from convlens.cli.flags import flag_text

        message = printable(flag_text(record.getMessage()))  # a newline in a file name stays on this line
        print(f"convlens: {record.levelname.lower()}: {message}", file=sys.stderr)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    logger = logging.getLogger("convlens")
    if not any(isinstance(handler, _OneLineWarnings) for handler in logger.handlers):
        logger.addHandler(_OneLineWarnings())  # once, though tests call main() many times
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        app()
    except ConvlensError as exc:
        from convlens.cli.flags import error_text

        print(f"convlens: error: {printable(error_text(exc))}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("convlens: interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as exc:  # no space, read-only, permission: the path and the reason, one line
        from convlens.storage import os_error_text

        print(f"convlens: error: {printable(os_error_text(exc))}", file=sys.stderr)
        sys.exit(2)
