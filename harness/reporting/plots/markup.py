"""A tiny document model written out as Markdown and as self-contained HTML.

The report is built once as a list of blocks and then written in both formats, so the two can
never disagree. Inline markup in text is limited to `code`, which both writers understand.
HTML embeds the PNG plots as data URIs so that report.html can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.headers):
                raise ValueError(f"table row {row!r} has {len(row)} cells, headers have {len(self.headers)}")


@dataclass(frozen=True)
class Image:
    alt: str
    png: Path
    svg: Path | None = None


Block = Heading | Para | Bullets | Table | Image


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block], base: Path) -> str:
    """Markdown; image paths relative to `base` (the folder the .md file is written to)."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}\n")
        elif isinstance(block, Para):
            out.append(f"{block.text}\n")
        elif isinstance(block, Bullets):
            out.append("".join(f"- {item}\n" for item in block.items))
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in block.headers) + " |"]
            lines.append("|" + "|".join("---" for _ in block.headers) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("\n".join(lines) + "\n")
        elif isinstance(block, Image):
            rel = Path(os.path.relpath(block.png, base)).as_posix()
            line = f"![{block.alt}]({rel})"
            if block.svg is not None:
                line += f" ([SVG]({Path(os.path.relpath(block.svg, base)).as_posix()}))"
            out.append(line + "\n")
        else:  # pragma: no cover - the Block union is closed
            raise TypeError(f"unknown block {block!r}")
    return "\n".join(out)


_CODE = re.compile(r"`([^`]+)`")


def _inline_html(text: str) -> str:
    return _CODE.sub(r"<code>\1</code>", html.escape(text, quote=False))


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


def to_html(blocks: Sequence[Block], base: Path, title: str) -> str:
    """A standalone HTML page: PNG plots inline as data URIs, SVG linked relative to `base`."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{_inline_html(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            out.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in block.headers)
            body = "".join(
                "<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in block.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode(block.png.read_bytes()).decode("ascii")
            img = f'<img alt="{html.escape(block.alt)}" src="data:image/png;base64,{data}">'
            if block.svg is not None:
                rel = html.escape(Path(os.path.relpath(block.svg, base)).as_posix())
                img = f'<figure>{img}<figcaption><a href="{rel}">SVG</a></figcaption></figure>'
            out.append(img)
        else:  # pragma: no cover
            raise TypeError(f"unknown block {block!r}")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
