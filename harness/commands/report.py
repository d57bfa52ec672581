"""`slidebench report`: plots and the report from stored result records (harness.reporting.report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands import common


def _run(args: argparse.Namespace) -> int:
    # Imported here so that building the parser (every slidebench command) never loads matplotlib.
    from harness.reporting.report import render

    report = render(common.results_dir(args), args.out)
    print(f"report: {report}")
    print(f"report (HTML, plots inline): {report.with_suffix('.html')}")
    print(f"plots: {report.parent / 'plots'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="render plots and results/report.{md,html} from stored records",
        description="Render every plot (PNG and SVG) and the report (Markdown and HTML) from the result "
        "records under RESULTS_DIR/runs. Reads records only: needs neither TensorFlow nor the native "
        "extension.",
    )
    common.add_results_dir(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where plots/ and report.md|html go (default: the results folder)",
    )
    parser.set_defaults(func=_run)
