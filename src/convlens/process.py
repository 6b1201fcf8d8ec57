"""How a convlens process sets itself up from its environment: CPU threads and taking SIGINT back.

Both the ``convlens`` command and a training job's child process (``train.jobs``) read these, so
they live below the faces. This module imports nothing heavy: the command line runs it before
every command, and ``convlens --help`` must not wait for PyTorch.
"""

from __future__ import annotations

import os
import signal

THREADS_VARIABLE = "CONVLENS_THREADS"
THREADS_PER_CORE = 4  # 1,000 threads on 2 cores took 11x as long as the default, at load 127
# set for a process that is stopped with SIGINT though it may start with SIGINT ignored
SIGINT_VARIABLE = "CONVLENS_STOP_ON_SIGINT"


def stop_on_sigint() -> None:
    """Make SIGINT interrupt this process even where it was started with SIGINT ignored.

    A shell without job control starts background commands (``convlens serve ... &``, nohup'd
    scripts, some CI runners) with SIGINT ignored, and every child inherits that: stopping a
    training job would then wait its 15 s and kill the training. A job's child runs in its own
    session, away from any terminal, so taking SIGINT back there surprises no one.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def max_threads() -> int:
    """The most CPU threads worth asking for: THREADS_PER_CORE per core this process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return THREADS_PER_CORE * max(cores, 1)


def set_threads(text: str | None, source: str) -> None:
    """Set PyTorch's CPU threads from ``text`` (``--threads`` or CONVLENS_THREADS, named by
    ``source`` in the error); None or "" leaves PyTorch's default."""
    if text is None or not text.strip():
        return
    try:
        count = int(text)
    except ValueError:
        count = 0
    most = max_threads()
    if not 1 <= count <= most:
        from convlens.errors import ConvlensError

        if count < 1:
            raise ConvlensError(f"{source} must be a whole number of CPU threads, 1 or more, got {text!r}")
        raise ConvlensError(
            f"{source} must be at most {most} CPU threads ({THREADS_PER_CORE} per core: more only "
            f"slows every step down), got {text!r}"
        )
    import torch

    torch.set_num_threads(count)
