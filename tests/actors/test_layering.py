"""The actors package's modules import each other without a cycle.

Type-only imports (under ``TYPE_CHECKING``) count too: a reader following an
accept from the registry to a session actor should never have to read both
ways.
"""

from __future__ import annotations

import ast
from pathlib import Path

import meerkat_runtime.actors as actors

PACKAGE = "meerkat_runtime.actors"


def _imports(path: Path) -> set[str]:
    """The sibling modules (``_name``) that one module of the package imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(PACKAGE + "."):
                found.add(node.module.removeprefix(PACKAGE + ".").split(".")[0])
            elif node.module == PACKAGE:
                found.update(alias.name for alias in node.names if alias.name.startswith("_"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    found.add(alias.name.removeprefix(PACKAGE + ".").split(".")[0])
    return found


def _graph() -> dict[str, set[str]]:
    root = Path(actors.__file__).parent
    return {
        path.stem: _imports(path) - {path.stem}
        for path in sorted(root.glob("_*.py"))
        if path.stem != "__init__"
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_graph_sees_the_imports_it_checks() -> None:
    graph = _graph()
    assert "_session" in graph["_registry"]
    assert "_services" in graph["_session"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_of_the_actors_package_imports_itself_back() -> None:
    assert _cycle(_graph()) is None


def test_session_actors_do_not_import_their_registry() -> None:
    assert "_registry" not in _graph()["_session"]
