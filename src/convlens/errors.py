"""The one error type users see: a clear message, no traceback (the CLI exits with code 2)."""

from __future__ import annotations


class ConvlensError(ValueError):
    """Bad input from the user: a file, an argument or a value convlens cannot use.

    The message names the thing and what was expected; faces print it as one line. When the
    problem is one argument of a library function, ``parameter`` names it (``eps``,
    ``image_size``) and the message starts with that name: a Python caller reads
    "eps must be between 0 and 1", and the CLI rewrites the name into its flag
    ("--eps must be ..."), so the library never speaks of command-line flags.
    """

    def __init__(self, message: str, parameter: str | None = None) -> None:
        if not str(message).isprintable():  # a newline in a name or a tensor's repr: still one line
            message = printable(message)
        super().__init__(message)
        self.parameter = parameter

    def with_name(self, name: str) -> str:
        """The message with its leading parameter name replaced by ``name`` (e.g. a CLI flag)."""
        message = str(self)
        if self.parameter and message.startswith(self.parameter):
            return name + message[len(self.parameter) :]
        return message


# Files that are (or usually are) Python pickles: loading one can run arbitrary code, so every
# reader of user files refuses them by name before opening them.
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"})


def refuse_pickle(path, expected: str) -> None:
    """Raise a ConvlensError if ``path`` names a pickle file; ``expected`` says what to give instead."""
    from pathlib import Path

    if Path(path).suffix.lower() in PICKLE_SUFFIXES:
        raise ConvlensError(f"{path}: refusing a pickle file: unpickling can run arbitrary code; {expected}")


def printable(value) -> str:
    """``str(value)`` with control characters escaped (a newline as ``\\n``, ESC as ``\\x1b``).

    Every path that goes into a message or a warning passes through here, so a file named with
    a newline or a terminal escape code can neither split the one error line nor recolour it.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
        for ch in text
    )


def shown(value) -> str:
    """A wrong argument as one short line for a message: a tensor or array by its shape and
    type (never its numbers), anything else by its escaped, truncated ``repr``."""
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"a {type(value).__name__} of shape {tuple(shape)} and type {dtype}"
    text = printable(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."
