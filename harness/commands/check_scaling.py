"""`slidebench check-scaling`: the CI regression check on the SLIDE engine's thread scaling."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.run import check_scaling


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check-scaling",
        help="compare parallel efficiency (1 thread vs all cores, A/B rounds) with the committed baseline; "
        "exit 0 OK, 1 regression, 3 inconclusive (the machine was too busy to tell)",
        description=check_scaling.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--baseline", type=Path, default=check_scaling.DEFAULT_BASELINE, help="baseline TOML file")
    p.add_argument("--threads", type=int, default=None, help="thread count to compare with one (default: cores)")
    p.add_argument("--rounds", type=int, default=None, help="A/B rounds (default: the baseline's)")
    p.add_argument(
        "--engine-param", action="append", default=[], metavar="KEY=VALUE",
        help="override an engine parameter, e.g. debug_serialize=true (repeatable)",
    )
    p.add_argument("--data-dir", default=None, help="data directory (default: $SLIDEBENCH_DATA)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    base = check_scaling.load_baseline(args.baseline)
    if args.rounds is not None and args.rounds < 1:
        raise ValueError("--rounds must be >= 1")
    verdict = check_scaling.check(
        base,
        threads=args.threads,
        rounds=args.rounds,
        engine_params=check_scaling.parse_params(args.engine_param),
        data_dir=args.data_dir,
    )
    print(verdict.message)
    return verdict.exit_status
