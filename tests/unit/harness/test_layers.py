"""The layering the design asks for, read from the source: tuners only propose (they import the
spec and the trial types, never tracking, engines, the recorder or a driver); models never import
the harness; no import cycle among the harness's modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FORBIDDEN_FOR_TUNERS = ("harness.tracking", "harness.engines", "harness.recorder", "harness.drivers",
                        "harness.runner", "harness.sweep")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool) -> set[str]:
    """Modules imported by ``path`` (``top_level_only``: at import time, not in functions, not
    under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = True
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inner = True
            if not (top_level_only and inner):
                if isinstance(child, ast.Import):
                    found.update(a.name for a in child.names)
                elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                    found.add(child.module)
                    found.update(f"{child.module}.{a.name}" for a in child.names)
            visit(child, inner)

    visit(tree, False)
    return found


def harness_modules() -> dict[str, Path]:
    return {module_name(p): p for p in (ROOT / "harness").rglob("*.py")}


def test_tuners_import_only_the_spec_and_the_trial_types():
    bad = []
    for path in (ROOT / "harness" / "tuners").glob("*.py"):
        for name in imports(path, top_level_only=False):
            if name.startswith(FORBIDDEN_FOR_TUNERS):
                bad.append(f"{path.name} imports {name}")
    assert not bad, bad


def test_models_never_import_the_harness():
    bad = [f"{p.relative_to(ROOT)} imports {n}" for p in (ROOT / "models").rglob("*.py")
           for n in imports(p, top_level_only=False) if n == "harness" or n.startswith("harness.")]
    assert not bad, bad


def test_no_import_cycle_in_the_harness():
    modules = harness_modules()
    graph = {m: {n for n in imports(p, top_level_only=True) if n in modules and n != m}
             for m, p in modules.items()}
    # a package imports its __init__ first: an edge to a package is an edge to its __init__
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                cycle = dfs(n)
                if cycle:
                    return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = dfs(m)
            assert cycle is None, " -> ".join(cycle)


def test_the_rule_checker_sees_a_violation(tmp_path):
    """The checker itself: a forbidden import is found, a TYPE_CHECKING one is not top-level."""
    f = tmp_path / "x.py"
    f.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import harness.tracking\n"
                 "def g():\n    from harness.engines.base import Done\n")
    assert "harness.engines.base" in imports(f, top_level_only=False)
    assert imports(f, top_level_only=True) == {"typing", "typing.TYPE_CHECKING"}
