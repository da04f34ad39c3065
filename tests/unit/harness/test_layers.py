"""The layering the design asks for, read from the source: tuners only propose (they import the
spec and the trial types, never tracking, engines, the recorder or a driver); models never import
the harness; no import cycle among the harness's modules, nor among the models' (there also
through imports inside functions: a lazy import that closes a circle only works by import order)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FORBIDDEN_FOR_TUNERS = ("harness.tracking", "harness.engines", "harness.recorder", "harness.drivers",
                        "harness.runner")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool, package: str | None = None) -> set[str]:
    """Modules imported by ``path`` (``top_level_only``: at import time, not in functions, not
    under ``if TYPE_CHECKING``); relative imports are resolved against ``package`` when given."""
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
                elif isinstance(child, ast.ImportFrom) and (child.level == 0 or package):
                    base = child.module or ""
                    if child.level:  # from .x import y / from .. import y
                        anchor = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1])
                        base = f"{anchor}.{base}" if base else anchor
                    if base:
                        found.add(base)
                        found.update(f"{base}.{a.name}" for a in child.names)
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


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the import graph (module -> modules it imports), or None."""
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
            if cycle:
                return cycle
    return None


def import_graph(modules: dict[str, Path], top_level_only: bool) -> dict[str, set[str]]:
    """Edges between the given modules; ``from a.b import c`` counts as an edge to ``a.b.c`` when
    that is a module, else to ``a.b``. Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``
    first: edges to those too."""
    graph: dict[str, set[str]] = {}
    for m, p in modules.items():
        edges: set[str] = set()
        package = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for name in imports(p, top_level_only, package):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in modules and prefix != m and not m.startswith(prefix + "."):
                    edges.add(prefix)
        graph[m] = edges
    return graph


def test_no_import_cycle_in_the_harness():
    cycle = find_cycle(import_graph(harness_modules(), top_level_only=True))
    assert cycle is None, " -> ".join(cycle)


def test_no_import_cycle_in_the_models_also_through_imports_inside_functions():
    modules = {module_name(p): p for p in (ROOT / "models").rglob("*.py")}
    cycle = find_cycle(import_graph(modules, top_level_only=False))
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_checker_sees_a_circle_closed_inside_a_function(tmp_path):
    pkg = tmp_path / "models" / "m"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from models.m.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")  # relative, inside a function
    modules = {".".join(p.relative_to(tmp_path).with_suffix("").parts): p for p in pkg.glob("*.py")}
    modules = {k.removesuffix(".__init__"): v for k, v in modules.items()}
    assert find_cycle(import_graph(modules, top_level_only=True)) is None
    assert find_cycle(import_graph(modules, top_level_only=False)) == ["models.m.a", "models.m.b", "models.m.a"]


def test_the_rule_checker_sees_a_violation(tmp_path):
    """The checker itself: a forbidden import is found, a TYPE_CHECKING one is not top-level."""
    f = tmp_path / "x.py"
    f.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import harness.tracking\n"
                 "def g():\n    from harness.engines.base import Done\n")
    assert "harness.engines.base" in imports(f, top_level_only=False)
    assert imports(f, top_level_only=True) == {"typing", "typing.TYPE_CHECKING"}
