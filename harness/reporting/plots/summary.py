"""The report's first screen and its tuning table: per workload, each engine's time to target with
its spread, the flags, and what search gave each engine its settings.

All from the records: the sanity flags each run carries (harness.store.flags), the popularity P@1 of the
evaluation subset, the target with its provenance and the tuning each spec was run with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.reporting.plots import style
from harness.reporting.plots.markup import Block, Bullets, Heading, Para, Table
from harness.reporting.plots.records import Run
from harness.reporting.plots.stats import flags_text, popularity_of, spread, time_to_target
from harness.reporting.plots.tables import fmt_s, fmt_spread
from harness.store import flags

ByEngine = Mapping[str, Sequence[Run]]


def _best(run: Run) -> float | None:
    return max((c.p1 for c in run.curve), default=None)


def workload_flags(by_engine: ByEngine) -> list[str]:
    """The workload's own flags (harness.store.flags.workload_flags) from its usable runs."""
    runs = [r for rs in by_engine.values() for r in rs if r.ok and r.curve]
    return flags.workload_flags((_best(r), r.popularity_p1, r.eval_rows or 0) for r in runs)


def target_text(runs: Sequence[Run]) -> str:
    """'0.31 (0.8 x best 0.39 of tf_dense in 240 s, validation)' or the workload file's value."""
    for run in runs:
        target = run.spec.get("target")
        if not isinstance(target, Mapping) or target.get("p1") is None:
            continue
        ref = target.get("reference")
        if isinstance(ref, Mapping):
            return (
                f"{target['p1']:.3g} ({target.get('fraction', '?'):g} x best {ref.get('best_p1', float('nan')):.3f} "
                f"of {ref.get('engine', '?')} in {ref.get('budget_s', float('nan')):g} s on the validation split)"
            )
        return f"{target['p1']:.3g} (workload file)"
    values = sorted({r.target_p1 for r in runs if r.target_p1 is not None})
    return ", ".join(f"{v:g}" for v in values) if values else "none"


def summary_table(train: Mapping[str, ByEngine]) -> Table:
    rows = []
    for workload in sorted(train):
        by_engine = train[workload]
        flat = [r for rs in by_engine.values() for r in rs]
        popularity = popularity_of(flat)
        wflags = workload_flags(by_engine)
        for i, label in enumerate(style.engine_order(by_engine)):
            runs = [r for r in by_engine[label] if r.state != "error"]
            ttt = time_to_target(runs)
            p1 = spread([r.final.get("p1") for r in runs if r.ok])
            failed = len(by_engine[label]) - len(runs)
            notes = flags_text(by_engine[label])
            if failed:
                notes = ", ".join(x for x in (notes, f"{failed} failed") if x)
            rows.append((
                f"`{workload}`" if i == 0 else "",
                (f"{target_text(flat)}; popularity {popularity:.3f}" if popularity is not None else target_text(flat))
                if i == 0 else "",
                label,
                str(len(by_engine[label])),
                fmt_spread(ttt, fmt_s, " s") if runs else "every run failed",
                fmt_spread(p1, lambda v: f"{v:.3f}"),
                notes or "—",
                ", ".join(wflags) if i == 0 and wflags else "",
            ))  # fmt: skip
    return Table(
        (
            "workload",
            "target P@1; popularity P@1",
            "engine",
            "runs",
            "time to target: median [min–max]",
            "final P@1: median [min–max]",
            "run flags",
            "workload flags",
        ),
        tuple(rows),
    )


FLAG_MEANINGS = (
    f"`{flags.BELOW_POPULARITY}`: no evaluation beat the label-popularity P@1 by {flags.BEAT_BY_SE:g} standard errors.",
    f"`{flags.FALLING}`: the run ended more than {flags.FALL_BY_SE:g} standard errors below its best (a dip it recovered from is not flagged).",
    f"`{flags.FEW_EVALUATIONS}`: fewer than {flags.MIN_EVALUATIONS} evaluations after step 0.",
    f"`{flags.NO_SEPARATION}`: no engine beats popularity on this workload, so it does not separate the engines.",
    f"`{flags.EFFICIENCY_ABOVE_1}` (thread scaling): parallel efficiency above 100% is measurement noise.",
)


def section(train: Mapping[str, ByEngine], scaling: Mapping[str, ByEngine]) -> list[Block]:
    """The one-screen summary that opens the report."""
    blocks: list[Block] = [Heading(2, "Summary"), summary_table(train)]
    noisy = sorted(
        {
            f"{workload} {label}"
            for workload, by in scaling.items()
            for label, rs in by.items()
            for r in rs
            if r.flags
        }
    )
    if noisy:
        blocks.append(
            Para(f"Thread scaling flagged `{flags.EFFICIENCY_ABOVE_1}` (noise): {', '.join(noisy)}.")
        )
    blocks += [
        Para(
            "Time to target is train-clock seconds to the first evaluation at or above the target; a run "
            "that never got there counts as infinitely slow, so a median is 'not reached' when fewer than "
            "half the seeds reached it. Flags (computed by the harness from each run's curve):"
        ),
        Bullets(FLAG_MEANINGS),
    ]
    return blocks


def _values(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(values.items()))


def _window(window: Any) -> str:
    """'2026-12-01 19:30; load 1.0-1.9' from a tuning entry's window (older files have none)."""
    if not isinstance(window, Mapping):
        return "—"
    when = str(window.get("tuned_at", "?"))[:16].replace("T", " ")
    before, after = window.get("load_before") or ["?"], window.get("load_after") or ["?"]
    return f"{when}; load {before[0]}-{after[0]}"


def tuning_blocks(by_engine: ByEngine) -> list[Block]:
    """Per engine: the search space, the trials with their validated P@1, the budget, the choice."""
    rows = []
    searches = set()
    for label in style.engine_order(by_engine):
        tuning = next(
            (r.spec.get("tuning") for r in by_engine[label] if isinstance(r.spec.get("tuning"), Mapping)),
            None,
        )
        if tuning is None:
            rows.append((label, "untuned: the workload's settings", "—", "—", "—", "—"))
            continue
        search = tuning.get("search") or {}
        searches.add(repr(sorted((k, tuple(v)) for k, v in (search.get("space") or {}).items())))
        trials = "; ".join(
            f"{_values(t.get('values') or {})}: {t['p1']:.3f}" if t.get("p1") is not None else f"{_values(t.get('values') or {})}: failed"
            for t in tuning.get("trials") or []
        )  # fmt: skip
        rows.append((
            label,
            _values(tuning.get("chosen") or {}),
            f"{tuning.get('chosen_p1', float('nan')):.3f}",
            f"{len(tuning.get('trials') or [])} x {tuning.get('budget_s', float('nan')):g} s",
            _window(tuning.get("window")),
            trials,
        ))  # fmt: skip
    tuned = [r for r in rows if r[2] != "—"]
    if not tuned:
        return [Para("No engine was tuned: every engine ran the workload's own settings.")]
    blocks: list[Block] = []
    if len(tuned) != len(rows) or len(searches) > 1:
        blocks.append(
            Para(
                "WARNING: the engines were not all tuned with the same search; this is not a fair comparison."
            )
        )
    first = next(r for rs in by_engine.values() for r in rs if isinstance(r.spec.get("tuning"), Mapping))
    t = first.spec["tuning"]
    search = t.get("search") or {}
    space = "; ".join(
        f"{k} in {{{', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in vs)}}}"
        for k, vs in sorted((search.get("space") or {}).items())
    )
    blocks += [
        Para(
            f"Tuning (`slidebench tune`, {t.get('file', 'the tuning file')}, {t.get('tuned_at', 'date unknown')}): "
            f"the same search for every engine: {space}; {search.get('trials', '?')} trials per engine, each "
            f"{t.get('budget_s', float('nan')):g} s of train clock ({search.get('budget_fraction', float('nan')):g} of "
            f"the run budget), scored by the last P@1 on {t.get('validation_points', '?')} training points held "
            "out of the trial's training (never the test split)."
        ),
        Table(
            ("engine", "chosen", "validated P@1", "trials x budget", "tuned (UTC; load before-after)",
             "every trial: values: validated P@1"),
            tuple(rows),
        ),
    ]
    return blocks
