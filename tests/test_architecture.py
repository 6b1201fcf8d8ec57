"""The package's shape: no import cycles, library errors name parameters (not CLI flags)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "src" / "convlens"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every convlens module that ``path`` imports, at module level or inside a function."""
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
        found |= {name for name in names if name in modules}
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), plus self-imports."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
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

    for node in graph:
        if node not in index:
            visit(node)
    return result


def test_no_import_cycle_inside_the_package():
    modules = _modules()
    graph = {name: _imports(path, modules) - {"convlens"} for name, path in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


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


FACES = ("cli", "report", "server")


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
