"""Plots from stored result records (matplotlib, Agg canvas, PNG and SVG).

`render_all(runs, out_dir)` draws every plot kind for every workload found in the records and
returns workload -> plot kind -> {format: path}. One module per plot kind; `records` reads the
records, `stats` aggregates over seeds, `style` fixes colours and titles, `output` writes files
atomically; `tables` and `markup` build the report's tables and write them as Markdown and HTML
(harness.reporting.report composes the report). Nothing here imports an engine or reads data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from harness.reporting.plots import ablation, accuracy, counters, resources, scaling, style
from harness.reporting.plots.records import Run

log = logging.getLogger(__name__)

PlotPaths = dict[str, dict[str, Path]]


def group(runs: Sequence[Run], split_threads: bool = True) -> dict[str, dict[str, list[Run]]]:
    """workload -> engine label -> runs (sorted by seed, then threads).

    The label is the engine name; where one workload ran an engine at several thread counts (and
    `split_threads`), each count is its own series labelled 'engine@threads', so that medians never
    mix thread counts. In a workload with GPU records every label names its device,
    'engine[gpu]' / 'engine[cpu]@threads', so that devices are never mixed and every legend says
    where each engine ran.
    """
    threads_seen: dict[tuple[str, str, str], set[int]] = {}
    gpu_workloads = {r.workload for r in runs if r.device == "gpu"}
    for run in runs:
        threads_seen.setdefault((run.workload, run.engine, run.device), set()).add(run.threads)
    out: dict[str, dict[str, list[Run]]] = {}
    for run in sorted(runs, key=lambda r: (r.workload, r.engine, r.device, r.seed, r.threads, r.run_id)):
        several = split_threads and len(threads_seen[(run.workload, run.engine, run.device)]) > 1
        label = style.series_label(
            run.engine, run.device if run.workload in gpu_workloads else None, run.threads if several else None
        )
        out.setdefault(run.workload, {}).setdefault(label, []).append(run)
    return out


def target_of(runs: Sequence[Run]) -> float | None:
    """The workload's target P@1 (the most common one in its records, if they disagree)."""
    targets = [r.target_p1 for r in runs if r.target_p1 is not None]
    return max(set(targets), key=targets.count) if targets else None


def render_all(runs: Sequence[Run], out_dir: Path) -> dict[str, PlotPaths]:
    colours = style.EngineColours(r.engine for r in runs)
    plots: dict[str, PlotPaths] = {}
    train = group([r for r in runs if r.kind == "train"])
    for workload, by_engine in train.items():
        flat = [r for rs in by_engine.values() for r in rs]
        machine = style.machine_label(r.environment for r in flat)
        target = target_of(flat)
        p = plots.setdefault(workload, {})
        if any(r.device == "gpu" for r in flat):
            # First: the report lists a workload's plots in this order, and this is its headline.
            p["seed_comparison"] = accuracy.seed_comparison(
                workload, by_engine, target, machine, colours, out_dir
            )
        p["time_to_accuracy"] = accuracy.time_to_accuracy(
            workload, by_engine, target, machine, colours, out_dir
        )
        p["p1_vs_epochs"] = accuracy.p1_vs_epochs(workload, by_engine, target, machine, colours, out_dir)
        p["cache_misses"] = counters.cache_misses(workload, by_engine, machine, colours, out_dir)
        p["throughput_memory"] = resources.throughput_memory(workload, by_engine, machine, colours, out_dir)
        for pair in ablation.pairs(by_engine):
            p[f"ablation:{pair[0]}:{pair[1]}"] = ablation.plot(workload, by_engine, pair, machine, colours, out_dir)
    for workload, by_engine in group([r for r in runs if r.kind == "scaling"], split_threads=False).items():
        flat = [r for rs in by_engine.values() for r in rs]
        machine = style.machine_label(r.environment for r in flat)
        plots.setdefault(workload, {})["thread_scaling"] = scaling.thread_scaling(
            workload, by_engine, machine, colours, out_dir
        )
    log.info("rendered %d plot(s) into %s", sum(len(p) for p in plots.values()), out_dir)
    return plots
