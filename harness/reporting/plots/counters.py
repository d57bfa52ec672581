"""Cache misses per training sample, per engine and event, with where the numbers came from.

Hardware counts (perf) and simulated ones (cachegrind) are never mixed in one panel: they count
different things over different scopes. Engines without cache counts (perf without a PMU, perf
forbidden, counting off) are named on the figure with the recorded reason. The report's table
shows every counted event (context switches, page faults too); the figure only the misses.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.reporting.plots import style
from harness.reporting.plots.output import save_figure
from harness.reporting.plots.records import Run
from harness.reporting.plots.stats import spread

SOURCE_TITLES = {"perf": "perf (hardware counters)", "cachegrind": "cachegrind (simulated caches)"}
SCOPE_LABELS = {
    "training_region": "training region only",
    "whole_process": "whole worker process (incl. data loading, prepare, evaluation)",
}
# perf names its miss events '...-misses'; cachegrind 'D1mr', 'DLmw', ... plus derived 'D1_misses'.
_MISS_EVENT = re.compile(r"miss|^(I1|D1|IL|DL|LL)m[rw]$", re.IGNORECASE)


def is_miss_event(name: str) -> bool:
    return bool(_MISS_EVENT.search(name))


def scope_label(scope: Any) -> str:
    if not scope:
        return ""
    return SCOPE_LABELS.get(str(scope), str(scope))


def _bytes(n: Any) -> str:
    if not isinstance(n, int) or n <= 0:
        return str(n)
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def _level_text(value: Any) -> str:
    if isinstance(value, Mapping):
        size, assoc, line = value.get("size"), value.get("assoc"), value.get("line")
        if size is not None and assoc is not None and line is not None:
            return f"{_bytes(size)} {assoc}-way {line} B lines"
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def geometry_text(cachegrind: Any) -> str:
    """The simulated cache geometry of a `counters.cachegrind` block and the slice simulated.

    Reads `geometry: {I1, D1, LL: {size, assoc, line}}` (harness.counters.cachegrind), or levels given
    directly in the block; e.g. 'D1: 32 KiB 8-way 64 B lines; LL: ...; 20 steps'.
    """
    if not isinstance(cachegrind, Mapping):
        return ""
    geometry = cachegrind.get("geometry")
    levels = geometry if isinstance(geometry, Mapping) else cachegrind
    parts = [f"{key}: {_level_text(levels[key])}" for key in ("I1", "D1", "LL") if key in levels]
    steps = cachegrind.get("steps")
    if steps is not None:
        parts.append(f"{steps} steps")
    return "; ".join(parts)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def counter_table(by_engine: Mapping[str, Sequence[Run]]) -> dict[str, dict[str, Any]]:
    """engine label -> counters summary, medians over the seeds of runs that neither failed nor diverged.

    {source, scope, reason, geometry, runs, per_sample: {event: Spread}, misses: {event: Spread},
    uncounted: [events perf could not count], multiplexed: {event: lowest running %}}. An engine
    whose runs used different sources keeps the most common one: medians across perf and
    cachegrind would mean nothing.
    """
    out: dict[str, dict[str, Any]] = {}
    for engine, all_runs in by_engine.items():
        # The same runs as the accuracy and throughput figures.
        engine_runs = [r for r in all_runs if r.ok]
        if not engine_runs:
            continue
        sources = [str(r.counters.get("source") or "unavailable") for r in engine_runs]
        source = max(set(sources), key=sources.count)
        chosen = [r for r, s in zip(engine_runs, sources, strict=True) if s == source]
        events: dict[str, list[float | None]] = {}
        multiplexed: dict[str, float] = {}
        for run in chosen:
            per_sample = run.counters.get("per_sample")
            for name, value in per_sample.items() if isinstance(per_sample, Mapping) else ():
                events.setdefault(str(name), []).append(_number(value))
            running = run.counters.get("running_pct")
            for name, pct in running.items() if isinstance(running, Mapping) else ():
                if (p := _number(pct)) is not None and p < 99.5:
                    multiplexed[str(name)] = min(p, multiplexed.get(str(name), 100.0))
        first = chosen[0].counters
        per_sample_spread = {k: s for k, v in sorted(events.items()) if (s := spread(v)) is not None}
        out[engine] = {
            "source": source,
            "scope": scope_label(first.get("scope")),
            "reason": str(first.get("reason") or ""),
            "geometry": geometry_text(first.get("cachegrind")),
            "per_sample": per_sample_spread,
            "misses": {k: s for k, s in per_sample_spread.items() if is_miss_event(k)},
            "uncounted": sorted(k for k in events if k not in per_sample_spread),
            "multiplexed": multiplexed,
            "runs": len(chosen),
        }
    return out


def _panel(ax, source: str, engines: list[str], table: Mapping[str, Any], colours, n_panels: int) -> None:
    events = sorted({ev for e in engines for ev in table[e]["misses"]})
    width = 0.8 / len(engines)
    x = np.arange(len(events))
    scopes = {table[e]["scope"] or "scope not recorded" for e in engines}
    shared_scope = scopes.pop() if len(scopes) == 1 else None
    for i, engine in enumerate(engines):
        misses = table[engine]["misses"]
        med = [misses[ev].median if ev in misses else np.nan for ev in events]
        lo = [misses[ev].median - misses[ev].low if ev in misses else 0 for ev in events]
        hi = [misses[ev].high - misses[ev].median if ev in misses else 0 for ev in events]
        label = engine if shared_scope else f"{engine}: {table[engine]['scope'] or 'scope not recorded'}"
        offset = (i - (len(engines) - 1) / 2) * width
        hatch = style.HATCHES[style.variant(engine, engines) % len(style.HATCHES)]
        ax.bar(
            x + offset,
            med,
            width,
            yerr=[lo, hi],
            capsize=2,
            color=colours(engine),
            hatch=hatch,
            edgecolor="white",
            linewidth=0,
            label=label,
        )
    ax.set_xticks(x, events, rotation=20, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("misses per training sample (log)")
    geometry = next((table[e]["geometry"] for e in engines if table[e]["geometry"]), "")
    lines = [SOURCE_TITLES.get(source, source)]
    if shared_scope:
        lines.append(f"scope: {shared_scope}")
    if geometry:
        lines.append(f"geometry: {geometry}")
    width_chars = 70 if n_panels == 1 else 55
    ax.set_title("\n".join(textwrap.fill(line, width_chars) for line in lines), fontsize=8)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    # Below the axes: inside, the legend hides the tallest bars.
    ax.legend(
        fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=min(3, len(engines)), frameon=False
    )


def cache_misses(
    workload: str, by_engine: Mapping[str, Sequence[Run]], machine: str, colours, out_dir: Path
) -> dict[str, Path]:
    table = counter_table(by_engine)
    with_misses = [e for e in style.engine_order(table) if table[e]["misses"]]
    sources = [s for s in ("perf", "cachegrind") if any(table[e]["source"] == s for e in with_misses)]
    sources += sorted({table[e]["source"] for e in with_misses} - set(sources))
    fig, axes = style.new_figure(
        style.FIGSIZE_WIDE if len(sources) > 1 else style.FIGSIZE_SINGLE, ncols=max(1, len(sources))
    )
    for ax, source in zip(axes, sources, strict=False):
        _panel(
            ax, source, [e for e in with_misses if table[e]["source"] == source], table, colours, len(sources)
        )
    if not sources:
        axes[0].text(
            0.5,
            0.5,
            "no cache misses counted by any engine",
            ha="center",
            va="center",
            transform=axes[0].transAxes,
        )
        axes[0].set_axis_off()
    without = [e for e in style.engine_order(table) if not table[e]["misses"]]
    failed = [e for e in style.engine_order(by_engine) if e not in table]
    wrap = 150 if len(sources) > 1 else 100  # characters of 8 pt text across the figure
    notes = [
        textwrap.fill(f"{e}: no cache counts ({table[e]['reason'] or table[e]['source']})", wrap)
        for e in without
    ]
    if failed:
        notes.append(f"not shown, no counted run: {', '.join(failed)}")
    if notes:
        fig.supxlabel("\n".join(notes), fontsize=8)
    style.title(
        fig, "Cache misses per training sample (median over seeds, bars = min-max)", workload, machine
    )
    return save_figure(fig, out_dir, f"{workload}-cache-misses")
