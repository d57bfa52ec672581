"""Atomic writing of generated files: a reader never sees a half-written plot or report."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from harness.store.results import inside, safe_name, write_atomic

FORMATS = ("png", "svg")
PNG_DPI = 110


def save_figure(fig: Figure, out_dir: Path, stem: str) -> dict[str, Path]:
    """Save `fig` as `<stem>.png` and `<stem>.svg` under `out_dir`; returns format -> path."""
    # The stem carries a workload name from the records: it must name a file inside out_dir.
    safe_name(stem, "plot file name")
    paths: dict[str, Path] = {}
    # SVG text stays text (searchable, selectable, smaller) rather than glyph outlines; SVG
    # metadata would embed the render date, so it is left out to keep outputs reproducible.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "slidebench"}):
        for fmt in FORMATS:
            buffer = io.BytesIO()
            metadata = {"Date": None} if fmt == "svg" else None
            fig.savefig(buffer, format=fmt, dpi=PNG_DPI, metadata=metadata)
            target = inside(Path(out_dir) / f"{stem}.{fmt}", out_dir, "plot file")
            paths[fmt] = write_atomic(target, buffer.getvalue())
    return paths
