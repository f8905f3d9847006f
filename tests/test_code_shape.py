"""Functions short enough to read at once (CONVENTIONS.md): no production function over 60 lines, migrations
aside (issue 12)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 60


def test_no_production_function_is_over_60_lines() -> None:
    long = []
    for package in ("service", "dag_factory", "connections"):
        for path in sorted((REPO / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > MAX_LINES:
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


def _features() -> set[str]:
    return {p.parent.name for p in (REPO / "service").glob("*/__init__.py")}


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level or not node.module:  # relative imports stay inside their package
        return []
    return [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]


def test_no_feature_imports_another_inside_a_function() -> None:
    """Features import each other at module top, in the direction pyproject.toml's layers contract declares: an
    import inside a function hides a cycle from that contract (CONVENTIONS.md, issue 12)."""
    features = _features()
    hidden = []
    for path in sorted((REPO / "service").rglob("*.py")):
        own = path.relative_to(REPO / "service").parts[0]
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                for name in _imported(node):
                    parts = name.split(".")
                    if len(parts) > 1 and parts[0] == "service" and parts[1] in features and parts[1] != own:
                        hidden.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
                        break
    assert not hidden, "a feature imported inside a function:\n" + "\n".join(hidden)
