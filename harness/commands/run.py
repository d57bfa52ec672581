"""`slidebench run WORKLOAD ...` (one campaign) and `slidebench reproduce --suite NAME` (all of them).

Both validate every workload involved before the first run starts, so a typo in the last file of
a suite fails in a second rather than after twenty minutes of training.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.commands import common
from harness.run import executors, runner
from harness.spec import workload
from harness.store import records, results

log = logging.getLogger("slidebench.run")

SUITES_FILE = workload.WORKLOADS_DIR / "suites.toml"
INTERRUPTED = 130
FAILED_STATES = (records.ERROR, records.DIVERGED)


@dataclass(frozen=True)
class Suite:
    name: str
    workloads: tuple[str, ...]
    realdata: tuple[str, ...]
    scaling: str | None
    scaling_steps: int | None = None  # timed steps per (engine, threads); None: harness.run.scaling's default
    scaling_warmup: int | None = None
    scaling_min_seconds: float | None = None  # timed train clock at one thread, at least


def load_suites(path: Path | None = None) -> dict[str, Suite]:
    path = path or SUITES_FILE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    suites = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise ValueError(f"{path}: [{name}] must be a table")  # noqa: TRY004 - bad input, reported as such
        known = {"workloads", "realdata", "scaling", "scaling_steps", "scaling_warmup", "scaling_min_seconds"}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(
                f"{path}: [{name}] {unknown[0]}: unknown key (known: {', '.join(sorted(known))})"
            )
        lists = {}
        for key in ("workloads", "realdata"):
            value = table.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{path}: [{name}] {key}: must be a list of workload names")
            lists[key] = tuple(value)
        scaling = table.get("scaling")
        if scaling is not None and not isinstance(scaling, str):
            raise ValueError(f"{path}: [{name}] scaling: must be a workload name")
        counts = {}
        for key, minimum in (("scaling_steps", 1), ("scaling_warmup", 0)):
            value = table.get(key)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < minimum
            ):
                raise ValueError(f"{path}: [{name}] {key}: must be an integer >= {minimum}, got {value!r}")
            counts[key] = value
        floor = table.get("scaling_min_seconds")
        if floor is not None and (
            not isinstance(floor, (int, float)) or isinstance(floor, bool) or not 0 <= floor <= 600
        ):
            raise ValueError(f"{path}: [{name}] scaling_min_seconds: must be a number in 0..600, got {floor!r}")
        counts["scaling_min_seconds"] = floor
        suites[name] = Suite(name, lists["workloads"], lists["realdata"], scaling, **counts)
    return suites


def realdata_available(w: workload.Workload, data_dir: Path | None) -> str | None:
    """None when the workload's real data files are in the data directory, else the reason not."""
    from harness.datasets import data

    if w.dataset.name is None:
        return None
    try:
        directory = data.resolve_data_dir(data_dir)
    except (ValueError, FileNotFoundError) as exc:
        return str(exc)
    entry = data.load_manifest().get(w.dataset.name)
    if entry is None:
        return f"{w.dataset.name!r} is not in the data manifest"
    missing = [s.file for s in (entry.train, entry.test) if not (directory / s.file).is_file()]
    return f"missing {', '.join(missing)} under {directory}" if missing else None


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            return [kind(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None

    return parse


def _sigterm_as_interrupt() -> None:
    def handler(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)


def _report_failures(outcomes: Sequence[runner.Outcome]) -> int:
    """One line per run of this invocation that failed or diverged (stderr); 1 if any, else 0.

    Runs skipped because an earlier campaign recorded them are not counted: their failure was
    reported when it happened, and --retry-errors reruns them.
    """
    failed = [o for o in outcomes if o.state in FAILED_STATES]
    for o in failed:
        print(
            f"FAILED {o.spec.workload}/{o.spec.engine}/{o.run_id}: {o.state}: {o.message} (record: {o.path})",
            file=sys.stderr,
        )
    return 1 if failed else 0


def dry_run(w: workload.Workload, args: argparse.Namespace, results_dir: Path, missing: str | None) -> int:
    """Print the expanded run matrix and what a campaign would do with each run; run nothing."""
    todo, skipped = runner.plan(
        w, results_dir, args.engines, args.threads, args.seeds, args.force, args.retry_errors
    )
    rows = [(o.spec, f"recorded, skipped ({o.message})") for o in skipped]
    for spec in todo:
        recorded = results.record_path(results_dir, spec.workload, spec.engine, spec.run_id).exists()
        reason = "--force" if args.force else "--retry-errors"
        rows.append((spec, f"recorded, would run again ({reason})" if recorded else "would run"))
    rows.sort(key=lambda r: (r[0].engine, r[0].threads, r[0].seed))
    print(
        f"{w.name}: {len(rows)} run(s), {len(skipped)} recorded, {len(todo)} to run; dry run, nothing started"
    )
    print(f"  records: {results_dir / 'runs' / w.name}/<engine>/<run id>.json")
    header = ("engine", "threads", "seed", "run id", "status")
    table = [header] + [(s.engine, str(s.threads), str(s.seed), s.run_id, status) for s, status in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    for r in table:
        print("  " + "  ".join(c.ljust(n) for c, n in zip(r, widths)) + "  " + r[-1])
    if missing:
        print(f"  note: real data not available ({missing}): a real campaign would be refused")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    w = workload.load(args.workload, data_dir=args.data_dir)
    w.expand(args.engines, args.threads, args.seeds)  # validate the overrides before anything runs
    results_dir = common.results_dir(args)
    missing = realdata_available(w, Path(args.data_dir) if args.data_dir else None)
    if getattr(args, "dry_run", False):
        return dry_run(w, args, results_dir, missing)
    executor_name = getattr(args, "executor", "local")
    if missing and executor_name == "local":
        # Refused here rather than recorded as one error per run.
        raise FileNotFoundError(f"{w.name}: real data not available: {missing}")
    if missing:
        # Cluster nodes read their own data directory; a node without it records the run as an error.
        log.info("%s: real data not on this machine (%s); the nodes read their own", w.name, missing)
    _sigterm_as_interrupt()
    try:
        with executors.open_executor(executor_name, getattr(args, "scheduler", None)) as executor:
            outcomes = runner.run_campaign(
                w, results_dir, args.engines, args.threads, args.seeds, force=args.force,
                retry_errors=args.retry_errors, data_dir=args.data_dir, timeout_s=args.timeout,
                executor=executor,
            )  # fmt: skip
    except KeyboardInterrupt:
        log.warning("interrupted: finished runs are kept; rerun the same command to resume")
        return INTERRUPTED
    print(f"{w.name}: {runner.summarize(outcomes)}")
    return _report_failures(outcomes)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from harness.reporting import report
    from harness.run import scaling  # the report imports matplotlib: only where it is drawn

    suites = load_suites()
    if args.suite not in suites:
        raise ValueError(f"unknown suite {args.suite!r}; {SUITES_FILE} defines: {', '.join(sorted(suites))}")
    suite = suites[args.suite]
    results_dir = common.results_dir(args)
    data_dir = Path(args.data_dir) if args.data_dir else None
    chosen = list(workload.load_all(suite.workloads, data_dir=data_dir))
    for w in workload.load_all(suite.realdata, data_dir=data_dir):
        reason = realdata_available(w, data_dir)
        if reason:
            log.warning("suite %s: skipping %s (real data not available: %s)", suite.name, w.name, reason)
        else:
            chosen.append(w)
    scaling_w = workload.load(suite.scaling, data_dir=data_dir) if suite.scaling else None
    log.info("suite %s: %s", suite.name, ", ".join(w.name for w in chosen))
    executor_name = getattr(args, "executor", "local")
    if scaling_w is not None and not args.no_scaling and executor_name != "local":
        # The sweep measures how one machine scales with threads; from the client it would measure
        # whatever machine the client is on (often a login node), so it is left to a node.
        log.warning(
            "suite %s: the thread-scaling sweep is skipped with --executor %s; run `slidebench scaling %s` "
            "on a cluster node", suite.name, executor_name, scaling_w.name,
        )  # fmt: skip
        scaling_w = None
    _sigterm_as_interrupt()
    all_outcomes: list[runner.Outcome] = []
    # One lock for the whole suite, so no other campaign slips in between two of its campaigns or
    # writes beside the scaling sweep (the campaigns take it again, which nests).
    try:
        with (
            executors.open_executor(executor_name, getattr(args, "scheduler", None)) as executor,
            results.locked(results_dir, f"reproduce --suite {suite.name}: {' '.join(sys.argv)}"),
        ):
            for w in chosen:
                all_outcomes += runner.run_campaign(
                    w, results_dir, data_dir=data_dir, timeout_s=args.timeout, executor=executor
                )
            if scaling_w is not None and not args.no_scaling:
                counts = {
                    "steps": suite.scaling_steps,
                    "warmup": suite.scaling_warmup,
                    "min_seconds": suite.scaling_min_seconds,
                }
                scaling.run_sweep(
                    scaling_w,
                    data_dir=data_dir,
                    results_dir=results_dir,
                    **{k: v for k, v in counts.items() if v is not None},
                )
    except KeyboardInterrupt:
        log.warning("interrupted: finished runs are kept; rerun the same command to resume")
        return INTERRUPTED
    print(f"suite {suite.name}: {runner.summarize(all_outcomes)}")
    print(f"report: {report.render(results_dir)}")
    return _report_failures(all_outcomes)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="real data sets (default: $SLIDEBENCH_DATA)")
    common.add_results_dir(p)
    p.add_argument(
        "--timeout",
        type=common.positive_seconds,
        default=None,
        help="kill a run after this many wall seconds, a number above 0 (error record)",
    )
    p.add_argument(
        "--executor",
        choices=executors.NAMES,
        default="local",
        help="where runs execute: local (here, one after another; the default) or dask (one run per node "
        "of a Dask cluster, docs/distributed.md)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help=f"Dask scheduler address, e.g. tcp://HOST:8786 (default: ${executors.SCHEDULER_ENV}); "
        "with --executor dask",
    )


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="run one workload's campaign (skips runs already recorded)",
        description="Run one workload's campaign: every (engine, threads, seed) not recorded yet, each in a "
        "fresh process. Exits 1 if any run of this invocation ended as error or diverged (one line each "
        "on stderr), 130 if interrupted.",
    )
    p.add_argument("workload", help="workload name (workloads/NAME.toml) or path to a .toml file")
    p.add_argument(
        "--engines",
        type=_csv(str),
        default=None,
        help="comma-separated engine names (default: the workload's)",
    )
    p.add_argument("--threads", type=_csv(int), default=None, help="comma-separated thread counts")
    p.add_argument("--seeds", type=_csv(int), default=None, help="comma-separated seeds")
    p.add_argument(
        "--force", action="store_true", help="rerun runs that already have a record (old record kept aside)"
    )
    p.add_argument("--retry-errors", action="store_true", help="rerun runs recorded as errors")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the run matrix (engine, threads, seed, run id) and which runs are recorded; run nothing",
    )
    _common(p)
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("reproduce", help="run a suite of campaigns, the scaling sweep and the report")
    p.add_argument(
        "--suite", default="default", help="suite name from workloads/suites.toml (default, paper)"
    )
    p.add_argument("--no-scaling", action="store_true", help="skip the thread-scaling sweep")
    _common(p)
    p.set_defaults(func=cmd_reproduce)
