"""Atomic writing of generated files: a reader never sees a half-written plot or report."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from harness.results import write_atomic

FORMATS = ("png", "svg")
PNG_DPI = 110


def save_figure(fig: Figure, out_dir: Path, stem: str) -> dict[str, Path]:
    """Save `fig` as `<stem>.png` and `<stem>.svg` under `out_dir`; returns format -> path."""
    paths: dict[str, Path] = {}
    # SVG text stays text (searchable, selectable, smaller) rather than glyph outlines; SVG
    # metadata would embed the render date, so it is left out to keep outputs reproducible.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "slidebench"}):
        for fmt in FORMATS:
            buffer = io.BytesIO()
            metadata = {"Date": None} if fmt == "svg" else None
            fig.savefig(buffer, format=fmt, dpi=PNG_DPI, metadata=metadata)
            paths[fmt] = write_atomic(out_dir / f"{stem}.{fmt}", buffer.getvalue())
    return paths
