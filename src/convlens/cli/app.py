"""The Typer application every command module registers on; ``convlens.cli`` imports them all."""

from __future__ import annotations

import os

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
    threads: str = typer.Option(
        None,
        "--threads",
        metavar="N",
        help="CPU threads for the commands that compute (also: environment variable CONVLENS_THREADS). "
        "Default: PyTorch's own, one per core: on an idle 2-core machine that measured fastest for "
        "training (1 thread took about 1.4x as long, 4 threads 3x or more); use 1 when other jobs "
        "keep the cores busy. Put it before the command: convlens --threads 1 train ...",
    ),
) -> None:
    # the help text is the Typer(help=...) above
    if threads is not None:
        set_threads(threads, "--threads")
    else:
        set_threads(os.environ.get(THREADS_VARIABLE), THREADS_VARIABLE)
    if os.environ.get(SIGINT_VARIABLE):
        stop_on_sigint()


THREADS_VARIABLE = "CONVLENS_THREADS"
# set by the explorer for its child trainings, which it stops with SIGINT (see stop_on_sigint)
SIGINT_VARIABLE = "CONVLENS_STOP_ON_SIGINT"


def stop_on_sigint() -> None:
    """Make SIGINT interrupt this process even where it was started with SIGINT ignored.

    A shell without job control starts background commands (``convlens serve ... &``, nohup'd
    scripts, some CI runners) with SIGINT ignored, and every child inherits that: the explorer's
    Stop would then wait its 15 s and kill the training. Its children run in their own session,
    away from any terminal, so taking SIGINT back there surprises no one.
    """
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def set_threads(text: str | None, source: str) -> None:
    """Set PyTorch's CPU threads from ``--threads`` or CONVLENS_THREADS; None or "" leaves the default."""
    if text is None or not text.strip():
        return
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        from convlens.errors import ConvlensError

        raise ConvlensError(f"{source} must be a whole number of CPU threads, 1 or more, got {text!r}")
    import torch

    torch.set_num_threads(count)
