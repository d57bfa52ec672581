"""`slidebench run WORKLOAD ...` (one campaign) and `slidebench reproduce --suite NAME` (all of them).

Both validate every workload involved before the first run starts, so a typo in the last file of
a suite fails in a second rather than after twenty minutes of training.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import runner, workload

log = logging.getLogger("slidebench.run")

SUITES_FILE = workload.WORKLOADS_DIR / "suites.toml"
INTERRUPTED = 130


@dataclass(frozen=True)
class Suite:
    name: str
    workloads: tuple[str, ...]
    realdata: tuple[str, ...]
    scaling: str | None
    scaling_steps: int | None = None  # timed steps per (engine, threads); None: harness.scaling's default
    scaling_warmup: int | None = None


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
        known = {"workloads", "realdata", "scaling", "scaling_steps", "scaling_warmup"}
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
        suites[name] = Suite(name, lists["workloads"], lists["realdata"], scaling, **counts)
    return suites


def realdata_available(w: workload.Workload, data_dir: Path | None) -> str | None:
    """None when the workload's real data files are in the data directory, else the reason not."""
    from harness import data

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


def _report(outcomes: Sequence[runner.Outcome]) -> None:
    for o in outcomes:
        if o.state in ("error", "diverged"):
            log.warning("%s %s: %s (%s)", o.spec.engine, o.path, o.state, o.message)


def cmd_run(args: argparse.Namespace) -> int:
    w = workload.load(args.workload)
    w.expand(args.engines, args.threads, args.seeds)  # validate the overrides before anything runs
    missing = realdata_available(w, Path(args.data_dir) if args.data_dir else None)
    if missing:
        # Refused here rather than recorded as one error per run.
        raise FileNotFoundError(f"{w.name}: real data not available: {missing}")
    _sigterm_as_interrupt()
    try:
        outcomes = runner.run_campaign(
            w, Path(args.results_dir), args.engines, args.threads, args.seeds,
            force=args.force, retry_errors=args.retry_errors, data_dir=args.data_dir, timeout_s=args.timeout,
        )  # fmt: skip
    except KeyboardInterrupt:
        log.warning("interrupted: finished runs are kept; rerun the same command to resume")
        return INTERRUPTED
    _report(outcomes)
    print(f"{w.name}: {runner.summarize(outcomes)}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    suites = load_suites()
    if args.suite not in suites:
        raise ValueError(f"unknown suite {args.suite!r}; {SUITES_FILE} defines: {', '.join(sorted(suites))}")
    suite = suites[args.suite]
    results_dir = Path(args.results_dir)
    data_dir = Path(args.data_dir) if args.data_dir else None
    chosen = list(workload.load_all(suite.workloads))
    for w in workload.load_all(suite.realdata):
        reason = realdata_available(w, data_dir)
        if reason:
            log.warning("suite %s: skipping %s (real data not available: %s)", suite.name, w.name, reason)
        else:
            chosen.append(w)
    scaling_w = workload.load(suite.scaling) if suite.scaling else None
    log.info("suite %s: %s", suite.name, ", ".join(w.name for w in chosen))
    _sigterm_as_interrupt()
    all_outcomes: list[runner.Outcome] = []
    try:
        for w in chosen:
            all_outcomes += runner.run_campaign(w, results_dir, data_dir=data_dir, timeout_s=args.timeout)
        if scaling_w is not None and not args.no_scaling:
            counts = {"steps": suite.scaling_steps, "warmup": suite.scaling_warmup}
            _optional("harness.scaling", "run_sweep", "thread-scaling sweep")(
                scaling_w,
                data_dir=data_dir,
                results_dir=results_dir,
                **{k: v for k, v in counts.items() if v is not None},
            )
    except KeyboardInterrupt:
        log.warning("interrupted: finished runs are kept; rerun the same command to resume")
        return INTERRUPTED
    _report(all_outcomes)
    print(f"suite {suite.name}: {runner.summarize(all_outcomes)}")
    report = _optional("harness.report", "render", "report")(results_dir)
    if report is not None:
        print(f"report: {report}")
    return 0


def _optional(module: str, func: str, what: str) -> Callable[..., Any]:
    """A step owned by another module; skipped with a warning if that module is not in this checkout."""
    try:
        return getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise

        def skipped(*_a: Any, **_k: Any) -> None:
            log.warning("%s skipped: %s is not available", what, module)

        return skipped


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="real data sets (default: $SLIDEBENCH_DATA)")
    p.add_argument(
        "--results-dir", default=str(runner.REPO_ROOT / "results"), help="records go to RESULTS_DIR/runs"
    )
    p.add_argument(
        "--timeout", type=float, default=None, help="kill a run after this many wall seconds (error record)"
    )


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("run", help="run one workload's campaign (skips runs already recorded)")
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
    _common(p)
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("reproduce", help="run a suite of campaigns, the scaling sweep and the report")
    p.add_argument(
        "--suite", default="default", help="suite name from workloads/suites.toml (default, paper)"
    )
    p.add_argument("--no-scaling", action="store_true", help="skip the thread-scaling sweep")
    _common(p)
    p.set_defaults(func=cmd_reproduce)
