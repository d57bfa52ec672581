"""`slidebench list [workloads|engines|suites]`: what can be run, one line each.

Reads workload files as text (never validating or running them) and engine docstrings from source
(never importing an engine), so listing works without TensorFlow or the native extension.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import tomllib
from pathlib import Path
from typing import Any

from harness.spec import registry, workload

KINDS = ("workloads", "engines", "suites")
_SENTENCE = re.compile(r"(.+?[.!?])(?=\s|$)")


def first_sentence(text: str) -> str:
    flat = " ".join(text.split())
    match = _SENTENCE.match(flat)
    return match.group(1) if match else flat


def workload_lines(folder: Path | None = None) -> list[str]:
    folder = folder or workload.WORKLOADS_DIR
    lines = []
    for path in sorted(folder.glob("*.toml")):
        if path.name == "suites.toml":
            continue
        try:
            description = tomllib.loads(path.read_text(encoding="utf-8")).get("description")
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            description = f"(unreadable: {exc})"
        text = first_sentence(description) if isinstance(description, str) else "(no description)"
        lines.append(f"{path.stem}: {text}")
    return lines


def _class_doc(target: str) -> str | None:
    """First sentence of the docstring of the class `module:Class` names (else of its module), read
    from the sources."""
    module, _, name = target.partition(":")
    try:
        spec = importlib.util.find_spec(module)  # imports the parent package only (light)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    origin = Path(spec.origin)
    # A package may define the class in a sub-module and re-export it: look through its files.
    siblings = sorted(p for p in origin.parent.glob("*.py") if p != origin)
    files = [origin] + (siblings if origin.name == "__init__.py" else [])
    module_doc = None
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                doc = ast.get_docstring(node) or ast.get_docstring(tree)
                return first_sentence(doc) if doc else None
        if path == origin:
            module_doc = ast.get_docstring(tree)
    return first_sentence(module_doc) if module_doc else None


def engine_lines() -> list[str]:
    return [
        f"{name}: {_class_doc(target) or 'no description'} ({target})"
        for name, target in sorted(registry.ENGINES.items())
    ]


def suite_lines() -> list[str]:
    from harness.commands.run import load_suites

    lines = []
    for suite in load_suites().values():
        parts = [", ".join(suite.workloads) or "no workloads"]
        if suite.realdata:
            parts.append(f"with real data: {', '.join(suite.realdata)}")
        if suite.scaling:
            parts.append(f"scaling sweep: {suite.scaling}")
        lines.append(f"{suite.name}: {'; '.join(parts)}")
    return lines


def _run(args: argparse.Namespace) -> int:
    makers = {"workloads": workload_lines, "engines": engine_lines, "suites": suite_lines}
    kinds = [args.kind] if args.kind else list(KINDS)
    for i, kind in enumerate(kinds):
        if len(kinds) > 1:
            print(("\n" if i else "") + f"{kind}:")
        for line in makers[kind]():
            print(("  " if len(kinds) > 1 else "") + line)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "list",
        help="list workloads, engines and suites with a short description",
        description="List what can be run: workloads (workloads/*.toml), engines (harness/spec/registry.py) and "
        "suites (workloads/suites.toml). Without an argument, all three.",
    )
    p.add_argument("kind", nargs="?", choices=KINDS, help="list only this kind")
    p.set_defaults(func=_run)
