"""`slidebench scaling WORKLOAD [--threads 1,2] [--engines a,b] [--steps N] [--warmup N] [--data-dir D]`.

Thread-scaling sweep (harness.run.scaling.run_sweep): throughput per engine and thread count, each in a
fresh process, speedup and parallel efficiency against one thread; records under
``<results>/runs/<workload>-scaling/<engine>/``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from harness.commands import common
from harness.run import scaling
from harness.store import results

log = logging.getLogger("slidebench.scaling")


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "scaling",
        help="thread-scaling sweep: samples/s, speedup and efficiency per engine and thread count",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("workload", help="workload name (workloads/<name>.toml) or path")
    p.add_argument(
        "--threads",
        type=_int_list,
        default=None,
        help="comma-separated thread counts (default: powers of two up to the core count, and the core count)",
    )
    p.add_argument(
        "--engines", type=common.comma_list, default=None, help="comma-separated engines (default: the workload's)"
    )
    p.add_argument("--steps", type=int, default=scaling.DEFAULT_STEPS, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=scaling.DEFAULT_WARMUP, help="untimed warm-up steps first")
    p.add_argument(
        "--min-seconds", type=float, default=0.0,
        help="time more steps until this much train clock is timed at one thread; every thread count "
        "then times the same steps (default: 0, just --steps)",
    )  # fmt: skip
    p.add_argument(
        "--seed", type=int, default=None, help="seed of the batch order (default: the workload's first)"
    )
    p.add_argument("--data-dir", type=Path, default=None, help="real data sets (default: $SLIDEBENCH_DATA)")
    common.add_results_dir(p)
    p.add_argument(
        "--allow-oversubscribe", action="store_true", help="measure thread counts above the core count"
    )
    p.add_argument("--force", action="store_true", help="measure again even where a record exists")
    p.set_defaults(func=_run)  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    results_dir = common.results_dir(args)
    # A sweep writes records like a campaign does: the same one-at-a-time lock on the folder.
    with results.locked(results_dir, f"scaling {args.workload}: {' '.join(sys.argv)}"):
        records = scaling.run_sweep(
            args.workload,
            engines=args.engines,
            threads=args.threads,
            steps=args.steps,
            warmup=args.warmup,
            min_seconds=args.min_seconds,
            data_dir=args.data_dir,
            results_dir=results_dir,
            allow_oversubscribe=args.allow_oversubscribe,
            force=args.force,
            seed=args.seed,
        )
    print(scaling.summary_table(records))
    failed = [r for r in records if r["status"]["state"] == "error"]
    for r in failed:
        log.error(
            "%s at %d threads: %s", r["spec"]["engine"], r["scaling"]["threads"], r["status"]["message"]
        )
    return 1 if failed else 0
