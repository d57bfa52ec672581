"""Atomic writing of generated files: a reader never sees a half-written plot or report."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

FORMATS = ("png", "svg")
PNG_DPI = 110


def _file_mode() -> int:
    # mkstemp creates 0600 files; generated reports should get the usual mode (0666 less umask).
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_MODE = _file_mode()


def write_atomic(path: Path, data: bytes) -> Path:
    """Write `data` to `path` via a temporary file in the same folder, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
