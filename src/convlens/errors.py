"""The one error type users see: a clear message, no traceback (the CLI exits with code 2)."""


class ConvlensError(ValueError):
    """Bad input from the user: a file, an argument or a value convlens cannot use.

    The message names the thing and what was expected; faces print it as one line.
    """
