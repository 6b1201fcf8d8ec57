"""The package's shape, as docs/architecture.md draws it: no import cycle (package ``__init__``
files included), each layer imports only layers below it, faces never import faces, faces use
public names only, and library errors name parameters (not CLI flags)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "src" / "convlens"

# The layers of docs/architecture.md, lowest first. A module may import its own layer and the
# layers below it, never one above: data -> models -> train / checkpoint -> Run -> explanations
# -> views -> faces. Every top-level module or package of convlens must be placed here, so a new
# one is a decision, not an accident.
LAYERS: dict[str, tuple[str, ...]] = {
    "foundation": ("convlens", "errors", "registry", "storage", "process"),
    "data": ("data",),
    "models": ("models",),
    "train / checkpoint": (
        "train",
        "checkpoint",
        "checkpoint_schema",
        "runlock",
        "metrics",
        "pixel_metrics",
        "predict",
        "shift",
        "inputs",
    ),
    "Run": ("run", "export", "imports"),
    "explanations": ("inspect", "attacks", "lab", "playground2d", "catalog"),
    "views": ("views",),
    "faces": ("cli", "report", "server", "__main__"),
}
FACES = ("cli", "report", "server")
# The only face-to-face imports: CLI commands whose job is to run another face in this process
# (`convlens serve` starts the explorer, `convlens report` writes the report, `convlens demo`
# does both). The report and the explorer never import the CLI or each other.
LAUNCHERS = {
    "convlens.cli.serve_cmd": {"server"},
    "convlens.cli.lab_cmds": {"report"},
    "convlens.cli.demo": {"report"},
}


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {_module_name(path, package): path for path in package.rglob("*.py")}


def _ancestors(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``: the packages Python imports (runs the ``__init__`` of) first."""
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _imports(importer: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every convlens module that importing ``path`` (module ``importer``) may run: what it
    imports at module level or inside a function, and the packages above each of those whose
    ``__init__`` runs first (``import a.b.c`` runs ``a/b/__init__.py``) — except the packages
    ``importer`` itself lives in, which are already being imported when it runs."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from convlens.lab import params` imports the submodule convlens.lab.params
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [name if name in modules else node.module for name in names]
        else:
            continue
        for name in names:
            if name not in modules:
                continue
            found.add(name)
            found |= {p for p in _ancestors(name) if p in modules and not _inside(importer, p)}
    return found - {importer}


def _graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = _modules(package)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), plus self-imports."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def _unit(module: str) -> str:
    """The top-level module or package of convlens that ``module`` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _layer_of(unit: str) -> int | None:
    for rank, units in enumerate(LAYERS.values()):
        if unit in units:
            return rank
    return None


def _layer_breaches(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point up the layers, or from one face into another (launchers aside)."""
    names = list(LAYERS)
    breaches = []
    for importer, imported in sorted(graph.items()):
        for target in sorted(imported):
            source_unit, target_unit = _unit(importer), _unit(target)
            source, destination = _layer_of(source_unit), _layer_of(target_unit)
            if source is None or destination is None or source_unit == target_unit:
                continue
            if destination > source:
                breaches.append(f"{importer} ({names[source]}) imports {target} ({names[destination]})")
            elif (
                source_unit in FACES
                and target_unit in FACES
                and target_unit not in LAUNCHERS.get(importer, ())
            ):
                breaches.append(f"face {importer} imports face {target}")
    return breaches


def test_no_import_cycle_inside_the_package():
    assert _cycles(_graph()) == []


def test_each_layer_imports_only_layers_below_it_and_faces_not_each_other():
    assert _layer_breaches(_graph()) == []


def test_every_top_level_module_has_a_layer():
    units = {_unit(name) for name in _modules()}
    assert sorted(unit for unit in units if _layer_of(unit) is None) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def _write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "convlens"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_a_cycle_through_a_package_init_is_found(tmp_path):
    """The shape of an earlier bug: ``server/training.py`` imported ``convlens.cli.app`` for one
    constant, which ran ``cli/__init__.py``, which imports every command, the explorer's among
    them. No module imports another in a circle; the circle closes only through the ``__init__``."""
    package = _write_package(
        tmp_path,
        {
            "__init__.py": "",
            "cli/__init__.py": "from convlens.cli import serve_cmd\n",
            "cli/app.py": "SIGNAL = 1\n",
            "cli/serve_cmd.py": "def serve():\n    from convlens.server.app import create_app\n",
            "server/__init__.py": "",
            "server/app.py": "def create_app():\n    from convlens.server import training\n",
            "server/training.py": "from convlens.cli.app import SIGNAL\n",
        },
    )
    graph = _graph(package)
    assert "convlens.cli" in graph["convlens.server.training"]  # the __init__ edge
    assert _cycles(graph) == [
        ["convlens.cli", "convlens.cli.serve_cmd", "convlens.server.app", "convlens.server.training"]
    ]
    assert _layer_breaches(graph) == [
        "face convlens.server.training imports face convlens.cli",
        "face convlens.server.training imports face convlens.cli.app",
    ]


def test_a_package_importing_its_own_modules_is_no_cycle(tmp_path):
    package = _write_package(
        tmp_path,
        {
            "__init__.py": "",
            "inspect/__init__.py": "from convlens.inspect.hooks import activations\n",
            "inspect/hooks.py": "def activations():\n    pass\n",
            "inspect/arithmetic.py": "from convlens.inspect.hooks import activations\n",
        },
    )
    assert _cycles(_graph(package)) == []


def test_an_import_up_the_layers_is_found(tmp_path):
    package = _write_package(
        tmp_path,
        {
            "__init__.py": "",
            "lab/__init__.py": "def figure():\n    from convlens.views import plots\n",
            "views/__init__.py": "",
            "views/plots.py": "",
        },
    )
    assert _layer_breaches(_graph(package)) == [
        "convlens.lab (explanations) imports convlens.views (views)",
        "convlens.lab (explanations) imports convlens.views.plots (views)",
    ]


FLAG = re.compile(r"(^|[\s(\"'])--[a-z]")


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _messages(path: Path) -> list[tuple[int, str]]:
    """Texts of errors raised and warnings logged in ``path``: what a user reads."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and node.exc is not None:
            found += [(node.lineno, text) for text in _strings(node.exc)]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("warning", "error", "info", "warn")
        ):
            found += [(node.lineno, text) for arg in node.args for text in _strings(arg)]
    return found


def test_library_errors_name_parameters_not_cli_flags():
    """Outside cli/ an error says "eps must be ..."; the CLI turns it into "--eps must be ..."."""
    offenders = [
        f"{path.relative_to(PACKAGE)}:{line}: {text!r}"
        for path in PACKAGE.rglob("*.py")
        if "cli" not in path.relative_to(PACKAGE).parts
        for line, text in _messages(path)
        if FLAG.search(text)
    ]
    assert offenders == []


def test_the_flag_check_would_catch_a_flag(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('def f(eps):\n    raise ValueError(f"--eps must be between 0 and 1, got {eps}")\n')
    assert _messages(bad) and FLAG.search(_messages(bad)[0][1])


def test_cli_rewrites_parameter_names_into_flags():
    from convlens.cli.flags import error_text
    from convlens.errors import ConvlensError

    assert error_text(ConvlensError("eps must be between 0 and 1", parameter="eps")) == (
        "--eps must be between 0 and 1"
    )
    assert error_text(ConvlensError("run_dir x: exists", parameter="run_dir")) == "--out x: exists"
    message = (
        "run_dir r: already holds a run; pass resume=True to continue it or overwrite=True to replace it"
    )
    assert error_text(ConvlensError(message, parameter="run_dir")) == (
        "--out r: already holds a run; pass --resume to continue it or --overwrite to replace it"
    )
    assert error_text(ConvlensError("no parameter here")) == "no parameter here"


def test_faces_use_no_private_helper():
    """The CLI, the report and the server reach the core through public modules and names only."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] not in FACES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("convlens"):
                private = [p for p in node.module.split(".") if p.startswith("_")]
                private += [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                if private:
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.module} {private}")
    assert offenders == []
