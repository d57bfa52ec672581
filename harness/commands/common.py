"""Options several commands share: the results folder (one default for all) and --timeout.

Not a command module (harness.cli does not list it).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from harness.store import results

RESULTS_DIR_HELP = (
    f"folder holding runs/ (default: ${results.RESULTS_ENV} if set, else the repository's results/ "
    "folder, whatever the current folder)"
)


def add_results_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", type=Path, default=None, help=RESULTS_DIR_HELP)


def results_dir(args: argparse.Namespace) -> Path:
    """The results folder the command was given (or the default), refused up front if it is a file."""
    chosen = getattr(args, "results_dir", None)
    return results.check_results_dir(Path(chosen) if chosen is not None else results.default_results_dir())


def _positive(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite {what} above 0, got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds above zero."""
    return _positive(text, "number of seconds")


def positive_number(text: str) -> float:
    """argparse type: a finite number above zero (a scale): refused before any work starts."""
    return _positive(text, "number")


def comma_list(text: str) -> list[str]:
    """`a,b, c` -> ["a", "b", "c"] (empty items dropped): engine and workload lists on the command line."""
    return [x.strip() for x in text.split(",") if x.strip()]
