"""One registry per extension point: a name maps to a function, its parameters and its help.

Every extension point keeps one ``Registry``: attribution methods, attacks, lab experiments,
models, built-in data sets, data formats (which reader opens a path) and the explorer's views.
The CLI's choices and listings, the server's validation and the explorer's menus
(``GET /api/registry``, ``GET /api/views``) all read it, so a new entry is one new function
plus one ``register(...)`` line — in a test, at run time, as well as in the package.
Modelled on timm's ``register_model``/``create_model``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from convlens.errors import ConvlensError


@dataclass(frozen=True)
class Parameter:
    """One keyword a registered function takes, as a face shows it."""

    name: str
    default: Any  # None when the function has no default (or the default is None)
    kind: str  # "int", "float", "str", "bool", or "any"
    required: bool = False  # the function has no default for it


@dataclass(frozen=True)
class Entry:
    """A registered function: what it is called, what it takes, what it is for."""

    name: str
    function: Callable  # what was registered: a function, or a declaration (an explorer view)
    label: str  # how a menu or a table heading shows it, e.g. "Grad-CAM"
    help: str  # one line
    parameters: tuple[Parameter, ...]
    extras: dict = field(default_factory=dict)  # per registry: a lab figure, quick settings, ...

    def accepts(self, name: str) -> bool:
        """Whether the function takes keyword ``name`` (its shared inputs, such as target, included)."""
        parameters = inspect.signature(self.function).parameters
        return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())

    def call(self, *args, **options):
        """Call the function with only the ``options`` it takes (a menu may send more)."""
        return self.function(*args, **{k: v for k, v in options.items() if self.accepts(k)})

    def describe(self) -> dict:
        """JSON-ready facts for the explorer's menus and ``--json`` listings."""
        return {
            "name": self.name,
            "label": self.label,
            "help": self.help,
            "parameters": [
                {"name": p.name, "default": _plain(p.default), "kind": p.kind, "required": p.required}
                for p in self.parameters
            ],
        }


def _plain(value):
    return value if isinstance(value, int | float | str | bool | type(None)) else repr(value)


def _kind(parameter: inspect.Parameter) -> str:
    default = parameter.default
    if isinstance(default, bool):
        return "bool"
    for kind in (int, float, str):
        if isinstance(default, kind):
            return kind.__name__
    annotation = str(parameter.annotation)
    for kind in ("int", "float", "str", "bool"):
        if annotation.startswith(kind):
            return kind
    return "any"


def signature_parameters(function: Callable, skip: tuple[str, ...]) -> tuple[Parameter, ...]:
    """The keyword parameters of ``function`` other than the inputs every entry shares (``skip``)."""
    found = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.name in skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = None if parameter.default is parameter.empty else parameter.default
        found.append(
            Parameter(parameter.name, default, _kind(parameter), parameter.default is parameter.empty)
        )
    return tuple(found)


class Registry:
    """Names → entries for one extension point, in registration order."""

    def __init__(self, kind: str, shared_inputs: tuple[str, ...] = ()) -> None:
        self.kind = kind  # "attribution method", "model", "data format", "explorer view", ...
        self.shared_inputs = shared_inputs  # leading arguments every entry takes (model, image, ...)
        self._entries: dict[str, Entry] = {}

    def register(
        self, name: str, function: Callable, label: str | None = None, help: str | None = None, **extras
    ) -> Callable:
        """Add ``function`` as ``name``; returns the function, so it also works as a plain call."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        summary = help or (inspect.getdoc(function) or name).splitlines()[0].replace("``", "")
        # a declaration (not a function) takes no options: nothing for a face to offer
        parameters = signature_parameters(function, self.shared_inputs) if callable(function) else ()
        self._entries[name] = Entry(name, function, label or name, summary, parameters, dict(extras))
        return function

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register a toy entry clean up with this)."""
        self._entries.pop(name, None)

    def get(self, name: str, parameter: str = "method") -> Entry:
        """The entry called ``name``; an unknown name is an error listing the valid ones."""
        key = self.canonical(name)
        if key is None:
            raise ConvlensError(
                f"{parameter} must be one of {', '.join(self._entries)}, got {name!r}", parameter=parameter
            )
        return self._entries[key]

    def canonical(self, name: str) -> str | None:
        """``name`` as registered, accepting ``_`` for ``-`` (grad_cam = grad-cam); None if unknown."""
        if not isinstance(name, str):
            return None
        for candidate in (name, name.replace("_", "-"), name.replace("-", "_")):
            if candidate in self._entries:
                return candidate
        return None

    def names(self) -> list[str]:
        return list(self._entries)

    def describe(self) -> list[dict]:
        return [entry.describe() for entry in self._entries.values()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.canonical(name) is not None

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)
