"""The report's tables, built from runs of one workload (engine label -> runs, see plots.group).

Every number is a median over seeds with its spread where it has one; every ratio compares
engines measured in the same campaign at the same thread count.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.reporting.plots import style
from harness.reporting.plots.counters import counter_table
from harness.reporting.plots.markup import Block, Bullets, Para, Table
from harness.reporting.plots.records import Run
from harness.reporting.plots.stats import Spread, scaling_points, spread, time_to_target
from harness.store import records

REFERENCE_ENGINE = "tf_dense"

ByEngine = Mapping[str, Sequence[Run]]


def fmt_s(value: float) -> str:
    """Seconds, with enough digits for short smoke runs; infinity reads as 'not reached'."""
    if math.isinf(value):
        return "not reached"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def fmt_num(value: float) -> str:
    if math.isinf(value) or math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def fmt_spread(s: Spread | None, fmt=fmt_num, unit: str = "") -> str:
    """'median unit [min–max]' (range only when there is more than one value)."""
    if s is None:
        return "—"
    text = f"{fmt(s.median)}{unit if not math.isinf(s.median) else ''}"
    if s.n > 1 and s.low != s.high:
        text += f" [{fmt(s.low)}–{fmt(s.high)}]"
    return text


def _threads(runs: Sequence[Run]) -> str:
    return ", ".join(str(t) for t in sorted({r.threads for r in runs}))


def _reference(by_engine: ByEngine, threads: str) -> Sequence[Run] | None:
    """tf_dense runs at the same thread count(s) as the row being compared (on the GPU, where the
    workload ran it on both devices: the seed claim's baseline)."""
    for label in style.engine_order(by_engine):
        runs = by_engine[label]
        if style.base_engine(label) == REFERENCE_ENGINE and _threads(runs) == threads:
            return runs
    return None


def _ratio(numerator: float | None, denominator: float | None) -> str:
    """Reference time over engine time (or engine rate over reference rate); infinity = not reached."""
    if numerator is None or denominator is None or denominator == 0:
        return "—"
    if math.isinf(numerator) and math.isinf(denominator):
        return "neither reached"
    if math.isinf(denominator):
        return f"not reached ({REFERENCE_ENGINE} did)"
    if math.isinf(numerator):
        return f"{REFERENCE_ENGINE} not reached"
    return f"{numerator / denominator:.2f}×"


def by_machine_type(by_engine: ByEngine) -> dict[str, dict[str, list[Run]]]:
    """machine type (style.machine_type) -> engine label -> runs."""
    groups: dict[str, dict[str, list[Run]]] = {}
    for label, runs in by_engine.items():
        for run in runs:
            groups.setdefault(style.machine_type(run.environment), {}).setdefault(label, []).append(run)
    return groups


def machine_types_note(by_engine: ByEngine) -> list[Block]:
    """Nothing when every record comes from one machine type; else a sentence and which runs ran where.

    Runs spread over a cluster may land on different hardware, and a speed ratio between two
    machines measures the machines as much as the engines.
    """
    groups = by_machine_type(by_engine)
    if len(groups) <= 1:
        return []
    lines = []
    for machine, sub in sorted(groups.items()):
        runs = ", ".join(
            f"{label} seed {'/'.join(str(r.seed) for r in rs)}" for label, rs in sorted(sub.items())
        )
        hosts = sorted({str(r.environment.get("hostname")) for rs in sub.values() for r in rs})
        lines.append(f"{machine}: {runs} (host {', '.join(hosts)})")
    return [
        Para(
            f"These records come from {len(groups)} machine types (CPU model and core count, from each "
            "record's environment). Speed is compared only between records of the same machine type: the "
            "time-to-target, results and counter tables below come once per machine type; the plots show all "
            "runs together."
        ),
        Bullets(tuple(lines)),
    ]


def per_machine_type(by_engine: ByEngine, table: Callable[[ByEngine], Table]) -> list[Block]:
    """`table` of the runs, or one per machine type (headed by it) when the records span several."""
    groups = by_machine_type(by_engine)
    if len(groups) <= 1:
        return [table(by_engine)]
    blocks: list[Block] = []
    for machine, sub in sorted(groups.items()):
        blocks += [Para(f"On {machine}:"), table(sub)]
    return blocks


def time_to_target_table(by_engine: ByEngine) -> Table:
    rows = []
    for label in style.engine_order(by_engine):
        runs = [r for r in by_engine[label] if r.state != "error"]
        ttt = time_to_target(runs)
        threads = _threads(by_engine[label])
        ref = _reference(by_engine, threads)
        ref_ttt = time_to_target([r for r in ref if r.state != "error"]) if ref else None
        sps = spread([r.samples_per_s for r in runs if r.ok])
        ref_sps = spread([r.samples_per_s for r in ref if r.ok]) if ref else None
        reached = sum(1 for r in runs if r.state == records.TARGET_REACHED)
        rows.append(
            (
                label,
                threads,
                f"{reached}/{len(by_engine[label])}",
                fmt_spread(ttt, fmt_s, " s") if runs else "every run failed",
                # Speedup in time to target: reference time over this engine's time (>1: faster).
                _ratio(ref_ttt.median if ref_ttt else None, ttt.median if ttt else None) if ref else "—",
                _ratio(sps.median if sps else None, ref_sps.median if ref_sps else None) if ref else "—",
            )
        )
    return Table(
        (
            "engine",
            "threads",
            "reached target",
            "time to target: median [min–max] over seeds",
            f"speedup vs {REFERENCE_ENGINE} (time to target)",
            f"throughput vs {REFERENCE_ENGINE}",
        ),
        tuple(rows),
    )


def results_table(by_engine: ByEngine) -> Table:
    rows = []
    for label in style.engine_order(by_engine):
        ok = [r for r in by_engine[label] if r.ok]

        def med(key: str, runs: Sequence[Run] = ok) -> str:
            s = spread([r.final.get(key) for r in runs])
            return f"{s.median:.3f}" if s else "—"

        rows.append(
            (
                label,
                str(len(ok)),
                med("p1"),
                med("p3"),
                med("p5"),
                fmt_spread(spread([r.samples_per_s for r in ok])),
                fmt_spread(spread([r.peak_rss_mb for r in ok])),
            )
        )
    return Table(
        (
            "engine",
            "runs counted",
            "final P@1",
            "final P@3",
            "final P@5",
            "samples/s (train clock)",
            "peak RSS (MB)",
        ),
        tuple(rows),
    )


def counters_table(by_engine: ByEngine) -> Table:
    """Every counted event per training sample, with source and scope; what was not counted.

    Per-engine context (cache geometry, why a source was used) goes in `counters_notes` rather
    than on every row.
    """
    rows = []
    table = counter_table(by_engine)
    for label in style.engine_order(table):
        info = table[label]
        scope = info["scope"] or "—"
        if not info["per_sample"]:
            rows.append((label, info["source"], scope, "—", "—", "nothing counted: see notes"))
            continue
        for event, s in info["per_sample"].items():
            # perf multiplexed the event: its count is scaled up from part of the region.
            pct = info["multiplexed"].get(event)
            note = f"counted {pct:.0f}% of the time (scaled)" if pct is not None else ""
            rows.append((label, info["source"], scope, event, fmt_spread(s), note))
        if info["uncounted"]:
            rows.append((label, info["source"], scope, ", ".join(info["uncounted"]), "not counted", ""))
    return Table(
        ("engine", "source", "scope", "event", "per training sample: median [min–max]", "note"), tuple(rows)
    )


def counters_notes(by_engine: ByEngine) -> tuple[str, ...]:
    """One line per engine: the simulated geometry and the recorded reason, where there is one."""
    notes = []
    table = counter_table(by_engine)
    for label in style.engine_order(table):
        info = table[label]
        parts = [f"simulated geometry {info['geometry']}"] if info["geometry"] else []
        if info["reason"]:
            parts.append(info["reason"])
        if parts:
            notes.append(f"{label} ({info['source']}): {'; '.join(parts)}")
    return tuple(notes)


def not_counted_table(runs: Iterable[Run], results_dir: Path) -> Table | None:
    rows = []
    for run in sorted(runs, key=lambda r: (r.engine, r.threads, r.seed)):
        if run.ok:
            continue
        try:
            where = run.path.relative_to(results_dir).as_posix()
        except ValueError:
            where = run.path.as_posix()
        rows.append(
            (run.engine, str(run.threads), str(run.seed), run.state, run.message or "—", f"`{where}`")
        )
    if not rows:
        return None
    return Table(("engine", "threads", "seed", "state", "message", "record"), tuple(rows))


def scaling_table(by_engine: ByEngine) -> Table:
    rows = []
    for label in style.engine_order(by_engine):
        for p in scaling_points(by_engine[label]):
            rows.append(
                (
                    label,
                    str(p.threads),
                    fmt_spread(p.samples_per_s),
                    f"{p.speedup:.2f}×",
                    f"{p.efficiency:.0%}",
                )
            )
    return Table(
        ("engine", "threads", "samples/s: median [min–max]", "speedup", "parallel efficiency"), tuple(rows)
    )


def clock_table(by_engine: ByEngine) -> Table:
    """What each engine's clocks measured: medians of the timing fields of counted runs."""
    rows = []
    for label in style.engine_order(by_engine):
        ok = [r for r in by_engine[label] if r.ok]

        def med(key: str, runs: Sequence[Run] = ok) -> str:
            values = [
                r.raw.get("timing", {}).get(key) if isinstance(r.raw.get("timing"), Mapping) else None
                for r in runs
            ]
            s = spread(
                [
                    float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
                    for v in values
                ]
            )
            return fmt_s(s.median) if s else "—"

        effective = sorted({str(r.engine_info.get("threads", "?")) for r in ok}) or ["—"]
        rows.append(
            (
                label,
                _threads(by_engine[label]),
                ", ".join(effective),
                med("init_s"),
                med("train_s"),
                med("eval_s"),
                med("wall_s"),
            )
        )
    return Table(
        (
            "engine",
            "threads asked",
            "threads (engine says)",
            "prepare, untimed (s)",
            "train clock (s)",
            "evaluation, off clock (s)",
            "wall (s)",
        ),
        tuple(rows),
    )


def kv(value: Any) -> str:
    """A compact 'k=v; k=v' rendering; unset (None) entries of a mapping are left out."""
    if isinstance(value, Mapping):
        items = [f"{k}={kv(v)}" for k, v in value.items() if v is not None]
        return "; ".join(items) if items else "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(kv(v) for v in value) if value else "—"
    return "—" if value is None or value == "" else str(value)


def _carried_text(runs: Iterable[Run], key: str) -> str:
    for run in runs:
        for holder in (run.spec, run.spec.get("workload"), run.raw.get("workload")):
            text = holder.get(key) if isinstance(holder, Mapping) else None
            if isinstance(text, str) and text.strip():
                return " ".join(text.split())
    return ""


def description_of(runs: Iterable[Run]) -> str:
    """The workload's description where its records carry one (spec.description, or a top-level
    `workload` object with a description); empty otherwise."""
    return _carried_text(runs, "description")


def target_source_of(runs: Iterable[Run]) -> str:
    """Where the workload's target comes from, in its own words, where its records carry it."""
    return _carried_text(runs, "target_source")


def hyper_table(by_engine: ByEngine) -> Table:
    """Parameters per engine from the specs (tuned values included: the tuning table says where from)."""
    rows = []
    for label in style.engine_order(by_engine):
        runs = by_engine[label]
        shared = sorted(
            {f"model: {kv(r.spec.get('model'))}; training: {kv(r.spec.get('training'))}" for r in runs}
        )
        params = sorted({kv(r.spec.get("engine_params") or {}) for r in runs})
        rows.append((label, " / ".join(shared), " / ".join(params)))
    return Table(("engine", "model and training", "engine parameters"), tuple(rows))


ENV_KEYS = (
    "cpu_model",
    "cores",
    "cpu_flags",
    "kernel",
    "hostname",
    "python",
    "numpy",
    "scipy",
    "tensorflow",
    "slidebench",
    "git_commit",
    "git_dirty",
    "utc_time",
    "load_avg",
)
# Per engine and thread count by nature: shown in the engine table, not as machine-wide facts.
PER_RUN_ENV_KEYS = ("native_build", "omp")
_SIMD = re.compile(r"^(avx|fma|sse|amx|f16c|bmi)", re.IGNORECASE)


def _env_value(key: str, value: Any) -> str:
    if key == "cpu_flags" and isinstance(value, (list, tuple, str)):
        flags = value.split() if isinstance(value, str) else [str(v) for v in value]
        simd = sorted(f for f in flags if _SIMD.match(f))
        return f"{', '.join(simd) or 'no SIMD flags'} ({len(flags)} flags in all)"
    return kv(value)


def _load_text(runs: Sequence[Run]) -> str:
    """The 1-minute load average when the runs started: the range over runs (a busy machine skews timings)."""
    loads = [
        float(v[0])
        for r in runs
        if isinstance(v := r.environment.get("load_avg"), (list, tuple))
        and v
        and isinstance(v[0], (int, float))
    ]
    if not loads:
        return "—"
    low, high = min(loads), max(loads)
    return (
        f"1-min load {low:.2f}" if low == high else f"1-min load {low:.2f}–{high:.2f} over {len(loads)} runs"
    )


def environment_table(runs: Sequence[Run]) -> Table:
    rows = []
    known = set(ENV_KEYS) | set(PER_RUN_ENV_KEYS)
    extra = sorted({k for r in runs for k in r.environment} - known)
    for key in (*ENV_KEYS, *extra):
        if key == "load_avg":
            rows.append((key, _load_text(runs)))
            continue
        values = sorted({_env_value(key, r.environment.get(key)) for r in runs})
        if key == "utc_time" and len(values) > 1:
            text = f"{values[0]} … {values[-1]} ({len(values)} distinct)"
        elif len(values) > 1:
            text = " / ".join(values) + " (differs between records)"
        else:
            text = values[0] if values else "—"
        rows.append((key, text))
    return Table(("environment", "value"), tuple(rows))


def _natural(value: str) -> tuple[int, float | str]:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def merged_kv(mappings: Iterable[Any]) -> str:
    """Several mappings in one line: keys equal everywhere once, differing ones as 'k ∈ {a, b}'.

    Thread settings of a scaling sweep differ only in the thread count; listing every full
    mapping would bury that in repetition.
    """
    dicts = [m for m in mappings if isinstance(m, Mapping) and m]
    if not dicts:
        return "—"
    keys = sorted({k for d in dicts for k in d})
    parts = []
    for key in keys:
        values = sorted({kv(d.get(key)) for d in dicts}, key=_natural)
        parts.append(f"{key}={values[0]}" if len(values) == 1 else f"{key} ∈ {{{', '.join(values)}}}")
    return "; ".join(parts)


def engine_info_table(by_engine: ByEngine) -> Table:
    rows = []
    for label in style.engine_order(by_engine):
        runs = by_engine[label]
        rows.append(
            (
                label,
                merged_kv(r.engine_info for r in runs),
                merged_kv(r.environment.get("native_build") for r in runs),
                merged_kv(r.environment.get("omp") for r in runs),
            )
        )
    return Table(
        ("engine", "engine info (Engine.info())", "native build", "thread settings (environment)"),
        tuple(rows),
    )
