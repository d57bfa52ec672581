"""`slidebench` command line: one sub-command group per module in harness/commands/.

Each module there defines `register(subparsers)`, which adds its sub-command(s) and sets
`func=callable(args) -> int` on them. Modules are listed here explicitly so the command set is
visible in one place.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMAND_MODULES = (
    "harness.commands.data",  # data info / data synth / data verify
    "harness.commands.run",  # run a workload's campaign; reproduce a suite
    "harness.commands.scaling",  # thread-scaling sweep
    "harness.commands.report",  # plots and report from stored records
    "harness.commands.check_scaling",  # CI regression check on parallel efficiency
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slidebench",
        description="Sparse (SLIDE) versus dense deep learning on CPUs: identical workloads, "
        "time-to-accuracy, counters, thread scaling, reports.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        # Bad input is the user's to fix: say what is wrong, without a traceback.
        logging.getLogger("slidebench").error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
