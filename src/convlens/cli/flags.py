"""Library parameter names → this CLI's flags, so errors and warnings speak the user's language.

The library names the parameter at fault (``ConvlensError.parameter``, e.g. ``eps``); only
the CLI knows it is spelled ``--eps`` here, or ``--out`` for ``run_dir``.
"""

from __future__ import annotations

import re

from convlens.errors import ConvlensError

# where a flag is not simply "--" + the parameter with "-" for "_"
FLAGS = {
    "run_dir": "--out",
    "out_file": "--out",
    "eps_list": "--eps-sweep",
    "option": "--option",
    "model_options": "--model-option",
    "num_classes": "--classes",
    "max_seconds": "--time-budget",
    "lab_dir": "--lab",
}
# parameters that some message may mention by name (``resume=True``, ``epochs=5``)
MENTIONED = (
    "resume",
    "overwrite",
    "epochs",
    "image_size",
    "data",
    "eps",
    "steps",
    "target",
    "lr",
    "batch_size",
    "init",
    "trust_code",
)


def flag_for(parameter: str) -> str:
    return FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


def flag_text(message: str) -> str:
    """Rewrite ``NAME=True`` into ``--name`` and ``NAME=value`` into ``--name value`` in a message."""
    for name in MENTIONED:
        message = re.sub(rf"\b{name}=True\b", flag_for(name), message)
        message = re.sub(rf"\b{name}=(?=\S)", flag_for(name) + " ", message)
    return re.sub(r"\(choose with (\w+)\)", lambda m: f"(choose with {flag_for(m.group(1))})", message)


def error_text(exc: ConvlensError) -> str:
    """The error as this CLI prints it: the parameter named as its flag."""
    message = exc.with_name(flag_for(exc.parameter)) if exc.parameter else str(exc)
    return flag_text(message)
