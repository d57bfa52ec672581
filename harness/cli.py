"""`slidebench` command line: one sub-command group per module in harness/commands/.

Each module there defines `register(subparsers)`, which adds its sub-command(s) and sets
`func=callable(args) -> int` on them. Modules are listed here explicitly so the command set is
visible in one place.

Exit status: 0 done, 1 a run failed or the system refused (a full disk, a busy results folder),
2 bad input (a message says what to fix), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import sys
import tomllib
from typing import Any

from harness import REPO_ROOT

COMMAND_MODULES = (
    "harness.commands.listing",  # list workloads / engines / suites
    "harness.commands.data",  # data info / data synth / data verify
    "harness.commands.run",  # run a workload's campaign; reproduce a suite
    "harness.commands.scaling",  # thread-scaling sweep
    "harness.commands.tune",  # equal hyper-parameter search for every engine
    "harness.commands.report",  # plots and report from stored records
    "harness.commands.check_scaling",  # CI regression check on parallel efficiency
)


def package_version() -> str:
    """The installed distribution's version, else the one pyproject.toml declares, else 'unknown'."""
    try:
        return importlib.metadata.version("slidebench")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        return str(project["version"])
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return "unknown"


def version_text() -> str:
    from harness.run.env import git_state

    commit, dirty = git_state()
    source = f" (git {commit[:12]}{', modified' if dirty else ''})" if commit else ""
    return f"slidebench {package_version()}{source}"


class _VersionAction(argparse.Action):
    """--version, computed only when asked for (git is not run for every command)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any) -> None:
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slidebench",
        description="Sparse (SLIDE) versus dense deep learning on CPUs: identical workloads, "
        "time-to-accuracy, counters, thread scaling, reports. Records go to the results folder: "
        "--results-dir, else $SLIDEBENCH_RESULTS, else the repository's results/.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--version", action=_VersionAction, help="print the version (and git commit) and exit"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _os_error_line(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
    return f"slidebench: error: {what} ({where})" if where is not None else f"slidebench: error: {what}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from harness.store.results import ResultsBusy

    try:
        return int(args.func(args) or 0)
    except ResultsBusy as exc:
        print(f"slidebench: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno is None and isinstance(exc, FileNotFoundError):
            # Raised by the harness with a message of its own (a missing data set, no records).
            logging.getLogger("slidebench").error("%s", exc)
            return 2
        # The system said no (a full disk, a folder that is a file, no permission): one line naming
        # the file, not a traceback; -v shows where it came from.
        logging.getLogger("slidebench").debug("details", exc_info=True)
        print(_os_error_line(exc), file=sys.stderr)
        return 1
    except ValueError as exc:
        # Bad input is the user's to fix: say what is wrong, without a traceback.
        logging.getLogger("slidebench").error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
