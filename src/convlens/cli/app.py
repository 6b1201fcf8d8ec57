"""The Typer application every command module registers on; ``convlens.cli`` imports them all."""

from __future__ import annotations

import os
import sys

import typer

from convlens.errors import ConvlensError
from convlens.process import (
    SIGINT_VARIABLE,
    THREADS_PER_CORE,
    THREADS_VARIABLE,
    set_threads,
    stop_on_sigint,
)

try:  # Typer 0.23 and later carry their own copy of Click; earlier ones use Click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors


class _OneLineUsageErrors(typer.Typer):
    """A usage error (``--epochs 1e9``, an unreadable RUN_DIR, an unknown option) is one line and
    exit code 2, like every other error, instead of Click's framed usage box; help stays help."""

    def __call__(self, *args, **kwargs):
        kwargs["standalone_mode"] = False  # Click raises its errors here instead of drawing them
        try:
            code = super().__call__(*args, **kwargs)
        except click_errors.NoArgsIsHelpError as exc:  # plain ``convlens``: the help, as before
            exc.show()
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:  # a usage error, a file option that cannot be opened
            raise ConvlensError(exc.format_message().replace("\n", " ")) from None
        except typer.Abort:
            raise KeyboardInterrupt from None
        if isinstance(code, int) and code != 0:  # typer.Exit(code), Ctrl-C as 130
            sys.exit(code)
        return code


def _flags_without_type() -> None:
    """``--help`` listed every flag as ``--json <bool>``, as if it took a value: a flag (and
    ``--help``) shows no type. Typer draws the type column from ``display_type_rich``."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "convlens", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.convlens = True
    TyperOption.display_type_rich = display_type_rich


_flags_without_type()

app = _OneLineUsageErrors(
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
    threads: str = typer.Option(
        None,
        "--threads",
        metavar="N",
        help="CPU threads for the commands that compute (also: environment variable CONVLENS_THREADS). "
        "Default: PyTorch's own, one per core: on an idle 2-core machine that measured fastest for "
        "training (1 thread took about 1.4x as long, 4 threads 3x or more); use 1 when other jobs "
        f"keep the cores busy. At most {THREADS_PER_CORE} per CPU core. Put it before the command: "
        "convlens --threads 1 train ...",
    ),
) -> None:
    # the help text is the Typer(help=...) above
    if threads is not None:
        set_threads(threads, "--threads")
    else:
        set_threads(os.environ.get(THREADS_VARIABLE), THREADS_VARIABLE)
    if os.environ.get(SIGINT_VARIABLE):
        stop_on_sigint()
