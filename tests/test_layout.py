"""The package's shape: the core imports none of the wings, no import cycle among taskwatch's
modules, and OpenTelemetry reached only through its public names (a private name breaks with any
OpenTelemetry release)."""

from __future__ import annotations

import ast
from pathlib import Path

import taskwatch

PACKAGE = Path(taskwatch.__file__).parent


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        out[name] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def _imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """Every taskwatch module ``name`` imports, anywhere in it (functions and TYPE_CHECKING
    blocks included: a cycle of any kind makes the layout harder to read)."""
    package = name if name == "taskwatch" or (PACKAGE / "/".join(name.split(".")[1:])).is_dir() \
        else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else (
                node.module or "")
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known and m != name}


def test_no_import_cycle() -> None:
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(name, tree, known) - {"taskwatch"} for name, tree in modules.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_opentelemetry_only_through_public_names() -> None:
    bad = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("opentelemetry"):
                parts = node.module.split(".") + [a.name for a in node.names]
                bad += [f"{name}: from {node.module} import {a.name}" for a in node.names
                        if any(p.startswith("_") for p in parts)]
    assert not bad, bad


WINGS = ("taskwatch._watchdog", "taskwatch._sinks", "taskwatch._timeline", "taskwatch._live",
         "taskwatch.otel",
         "taskwatch._pytest",
         "taskwatch._cli", "taskwatch._integrations", "taskwatch.pytest_plugin")


def test_the_core_imports_none_of_the_wings() -> None:
    """The wings attach to the core through the state's instruments, never the other way round."""
    modules = _modules()
    known = set(modules)
    assert any(name.startswith("taskwatch._core.") for name in known)
    assert all(any(name == wing or name.startswith(wing + ".") for name in known) for wing in WINGS)
    bad = {name: sorted(m for m in _imports(name, tree, known)
                        if any(m == wing or m.startswith(wing + ".") for wing in WINGS))
           for name, tree in modules.items() if name.startswith("taskwatch._core")}
    assert not any(bad.values()), bad


def test_modules_are_grouped_in_wings() -> None:
    """At the package's root only the public API, its entry points and the wiring of the wings."""
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert root == ["__init__.py", "__main__.py", "_integrations.py", "_version.py",
                    "pytest_plugin.py"], root
