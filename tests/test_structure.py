"""The shape of the package, read from its `import` statements: no import circle anywhere, and the data
layer at the bottom (it imports nothing from above it)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "one_shui"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The one_shui modules that ``path`` imports, by any statement (under TYPE_CHECKING too). Importing
    a module of another package runs that package's ``__init__`` as well, so it counts."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from package import module` imports the module; `from module import name` the module
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
            ]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            for k in range(1, len(parts) + 1):
                ancestor = ".".join(parts[:k])
                if ancestor in modules and not (name == ancestor or name.startswith(f"{ancestor}.")):
                    found.add(ancestor)
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imports_of(path, modules) for path in paths}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle: the strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_the_import_statements():
    graph = import_graph()
    assert "one_shui.data.splits" in graph["one_shui.checkpoints"]  # from .data.splits import Split
    assert "one_shui.data" in graph["one_shui.checkpoints"]  # ...which runs one_shui/data/__init__.py
    assert "one_shui.layout" in graph["one_shui.cli"]  # from . import layout
    assert "one_shui.bench.tracking" in graph["one_shui.bench.cells"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_there_is_no_import_circle():
    assert circles(import_graph()) == []


FOUNDATION = {"one_shui", "one_shui.errors", "one_shui.layout", "one_shui.atomic"}  # below the data layer


def test_the_data_layer_imports_nothing_from_above_it():
    """one_shui.data may import itself and the foundation (the user-error type, the run layout, atomic
    writes), which imports nothing else of one_shui."""
    graph = import_graph()
    for module in FOUNDATION:
        assert graph[module] <= FOUNDATION, f"{module} imports {sorted(graph[module] - FOUNDATION)}"
    for module, targets in graph.items():
        if module == "one_shui.data" or module.startswith("one_shui.data."):
            above = {t for t in targets if not t.startswith("one_shui.data") and t not in FOUNDATION}
            assert not above, f"{module} imports {sorted(above)}"
