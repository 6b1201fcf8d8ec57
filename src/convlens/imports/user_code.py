"""The user's own model class: a Python factory ``FILE.py:FUNCTION``, run only when asked to.

Building a model from its class means executing the user's Python file, which can do anything
a program can. Like ``trust_remote_code`` elsewhere, convlens does that only with an explicit
opt-in (``trust_code=True``, ``--trust-code``), and only once: the module the factory returns is
traced and saved as a graph description and safetensors weights (``convlens.imports.graph_route``),
so opening the run later, with any command, runs no user code at all. The run records the file's
SHA-256 so it says which code the graph came from.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import threading
from pathlib import Path

from torch import nn

from convlens.errors import ConvlensError, printable

_IMPORTING = threading.Lock()  # sys.path and sys.modules are process-wide


def parse_reference(reference: str) -> tuple[Path, str]:
    """``FILE.py:FUNCTION`` → (file, function name); one error naming ``model`` otherwise."""
    text = str(reference)
    file, _, function = text.rpartition(":")
    if not file.endswith(".py") or not function.isidentifier():
        raise ConvlensError(
            f"model {printable(text)}: a Python factory is written FILE.py:FUNCTION (e.g. net.py:build)",
            parameter="model",
        )
    return Path(file), function


def is_reference(model) -> bool:
    """Whether ``model`` is written as a factory reference (``FILE.py:FUNCTION``)."""
    if not isinstance(model, str | Path):
        return False
    file, _, function = str(model).rpartition(":")
    return file.endswith(".py") and bool(function)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_from_factory(reference: str, trust_code: bool = False) -> tuple[nn.Module, dict]:
    """Run the factory ``FILE.py:FUNCTION`` (with ``trust_code`` only) and return (module, facts:
    the reference and the file's SHA-256)."""
    path, function = parse_reference(reference)
    if trust_code is not True:
        raise ConvlensError(
            f"model {printable(reference)}: building it runs the Python code in {printable(path.name)}; "
            "pass trust_code=True if you trust that file",
            parameter="trust_code",
        )
    if not path.is_file():
        raise ConvlensError(
            f"model {printable(reference)}: {printable(path)}: no such file", parameter="model"
        )
    digest = file_digest(path)
    name = f"convlens_user_model_{digest[:16]}"
    with _IMPORTING:
        folder = str(path.resolve().parent)
        sys.path.insert(0, folder)  # the file may import its neighbours
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            factory = getattr(module, function, None)
            if not callable(factory):
                raise ConvlensError(
                    f"model {printable(reference)}: {printable(path.name)} defines no function {function!r}",
                    parameter="model",
                )
            built = factory()
        except ConvlensError:
            raise
        except BaseException as exc:  # the user's code: any failure is reported as theirs, in one line
            if isinstance(exc, KeyboardInterrupt):
                raise
            reason = printable(str(exc)).splitlines()[0][:200] if str(exc) else ""
            raise ConvlensError(
                f"model {printable(reference)}: the code raised {type(exc).__name__}{': ' + reason if reason else ''}",
                parameter="model",
            ) from None
        finally:
            sys.path.remove(folder)
            sys.modules.pop(name, None)
    if not isinstance(built, nn.Module):
        raise ConvlensError(
            f"model {printable(reference)}: {function}() returned a {type(built).__name__}, not a torch.nn.Module",
            parameter="model",
        )
    return built, {"factory": f"{path.name}:{function}", "sha256": digest}
