"""The harness's packages import in one direction, the order data flows through them: nothing
imports what builds on it, and no modules import each other in a circle.

Read from the sources (every import statement, those inside functions too), so a circle that
only a lazy import hides is found as well. Imports under ``if TYPE_CHECKING:`` are for type
annotations only, never executed, and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "harness"

# Lowest first: a module of each package may import the harness root (REPO_ROOT), its own package
# and those listed before it. `cli` and `commands` sit on top and may import any of them.
LAYERS = ("store", "datasets", "spec", "counters", "run", "reporting")
TOP = ("cli", "commands")
# Within the data sets' package, a finer order: each module only from those before it.
DATA_ORDER = ("sparse", "progress", "xmc_text", "dataset", "twin", "synth", "data")


def _modules(root: Path) -> dict[str, Path]:
    """Dotted name below `harness` -> file, e.g. 'run.worker', 'reporting.plots', 'cli'."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skip.update(id(n) for n in ast.walk(node))
    return skip


def _harness_imports(path: Path, known: set[str]) -> set[str]:
    """The harness modules `path` imports (dotted below `harness`; '' for the root itself)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "harness":
            base = node.module.partition(".")[2]
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                found.add(sub if sub in known else base)
        elif isinstance(node, ast.Import):
            found.update(a.name.partition(".")[2] for a in node.names if a.name.split(".")[0] == "harness")
    return found


def _layer(module: str) -> int:
    head = module.split(".")[0]
    if head in TOP:
        return len(LAYERS)
    return LAYERS.index(head)


def test_every_module_lives_in_a_layer() -> None:
    modules = _modules(HARNESS)
    stray = sorted(m for m in modules if m and m.split(".")[0] not in LAYERS + TOP)
    assert stray == [], f"modules outside the layout (add them to a package and to LAYERS): {stray}"
    assert all((HARNESS / name / "__init__.py").is_file() for name in LAYERS)


def test_packages_import_only_the_ones_before_them() -> None:
    modules = _modules(HARNESS)
    wrong = []
    for module, path in modules.items():
        if not module:
            continue
        for imported in _harness_imports(path, set(modules)):
            if imported and _layer(imported) > _layer(module):
                wrong.append(f"harness.{module} imports harness.{imported}")
    assert wrong == [], "\n".join(wrong)


def test_data_modules_import_only_the_ones_below() -> None:
    modules = _modules(HARNESS)
    for i, name in enumerate(DATA_ORDER):
        imported = _harness_imports(modules[f"datasets.{name}"], set(modules))
        above = {f"datasets.{m}" for m in DATA_ORDER[i:]}
        assert sorted(imported & above) == [], f"harness.datasets.{name} imports what builds on it"


def test_no_modules_import_each_other_in_a_circle() -> None:
    modules = _modules(HARNESS)
    graph = {m: _harness_imports(p, set(modules)) - {m, ""} for m, p in modules.items()}
    assert _circles(graph) == []


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every set of modules that reach each other (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_check_sees_lazy_imports_and_circles(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from harness.d import y\n"
        "def f():\n    from harness import b\n    from harness.c import x\n"
    )
    assert _harness_imports(tmp_path / "a.py", {"b", "c", "d"}) == {"b", "c"}
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("name", LAYERS)
def test_each_package_says_what_it_holds(name: str) -> None:
    doc = ast.get_docstring(ast.parse((HARNESS / name / "__init__.py").read_text(encoding="utf-8")))
    assert doc and len(doc) > 20
