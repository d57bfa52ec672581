"""The data modules import in one direction: nothing below imports what builds on it.

Read from the sources (every import statement, those inside functions too), so a circle that
only a lazy import hides is found as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "harness"

# Lowest first: each may import only modules listed before it.
DATA_LAYERS = ("sparse", "progress", "results", "xmc_text", "dataset", "twin", "synth", "data", "calibrate")


def _harness_imports(module: str) -> set[str]:
    tree = ast.parse((HARNESS / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
            if node.module == "harness":
                found.update(alias.name for alias in node.names)
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("harness."))
    return found


def test_data_modules_import_only_the_ones_below() -> None:
    for i, module in enumerate(DATA_LAYERS):
        above = set(DATA_LAYERS[i + 1 :])
        wrong = sorted(_harness_imports(module) & (above | {module}))
        assert wrong == [], f"harness.{module} imports {wrong}, which build on it"


def test_the_check_sees_lazy_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.py").write_text("def f():\n    from harness import b\n    from harness.c import x\n")
    monkeypatch.setitem(globals(), "HARNESS", tmp_path)
    assert _harness_imports("a") == {"b", "c"}
