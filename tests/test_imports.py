"""The library's imports point one way: no module reaches, however late, a module that imports it back."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aadscale"


def module_names() -> dict[str, Path]:
    """``aadscale.x.y`` -> its file, packages by their ``__init__.py``."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its file (function-level imports included);
    a module importing its own enclosing package is left out (Python resolves that one first)."""
    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            edges.update(owner(t) for t in targets if t.split(".")[0] == "aadscale")
        graph[name] = {t for t in edges if t and t != name and not name.startswith(t + ".")}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that reach each other (strongly connected components of more than one)."""
    order, low, stack, found, counter = {}, {}, [], [], [0]

    def visit(v: str) -> None:
        order[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        for w in graph[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in order:
            visit(v)
    return found


def test_the_scan_finds_a_circle_and_a_late_import_counts():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("late", [False, True])
def test_the_graph_reads_top_level_and_function_level_imports(tmp_path, late):
    (tmp_path / "one.py").write_text("def f():\n    from aadscale.two import g\n" if late else "import aadscale.two\n")
    (tmp_path / "two.py").write_text("from aadscale.one import f\n")
    graph = import_graph({"aadscale.one": tmp_path / "one.py", "aadscale.two": tmp_path / "two.py"})
    assert circles(graph) == [["aadscale.one", "aadscale.two"]]


def test_the_library_has_no_import_circle():
    assert circles(import_graph(module_names())) == []
