"""Aggregation over seeds: medians with spread, and curves put on a common axis.

Seeds of one engine evaluate at the same steps but at different train-clock times, so their
curves are compared on a shared grid: at each grid time a seed contributes the P@1 of its last
evaluation at or before that time (what the model was known to reach by then), held after the
run stopped. Holding is what makes the median curve cross the target exactly at the median time
to target (at least half the seeds are at or above it from then on), so plot and table agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.reporting.plots.records import CurvePoint, Run
from harness.store import records


@dataclass(frozen=True)
class Spread:
    """Median, min and max of a sample; `n` values, `missing` runs that had none."""

    median: float
    low: float
    high: float
    n: int
    missing: int = 0


def spread(values: Sequence[float | None]) -> Spread | None:
    """Spread of the non-None values, or None when there are none."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    arr = np.asarray(present)
    return Spread(
        float(np.median(arr)), float(arr.min()), float(arr.max()), len(present), len(values) - len(present)
    )


def time_to_target(runs: Sequence[Run]) -> Spread | None:
    """Median time to target over seeds, a run that never reached it counting as infinitely slow.

    Dropping the runs that missed the target would flatter an engine that often misses it; as
    infinity they move the median the honest way (2 of 3 reached: the slower of the two; fewer
    than half: infinity, reported as not reached). `missing` counts the runs that missed.
    """
    if not runs:
        return None
    times = [
        r.time_to_target_s if (r.state == records.TARGET_REACHED and r.time_to_target_s is not None) else math.inf
        for r in runs
    ]
    arr = np.sort(np.asarray(times))
    mid = len(arr) // 2
    median = float(arr[mid]) if len(arr) % 2 else float((arr[mid - 1] + arr[mid]) / 2)
    return Spread(median, float(arr[0]), float(arr[-1]), len(arr), int(np.isinf(arr).sum()))


@dataclass(frozen=True)
class Band:
    """A median curve with its min-max band on a grid; NaN where no seed covers the grid point."""

    x: np.ndarray
    median: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: int


def _step_values(points: Sequence[CurvePoint], xs: Sequence[float], grid: np.ndarray) -> np.ndarray:
    """P@1 of the last evaluation at or before each grid x; NaN before the first evaluation."""
    p1 = np.asarray([p.p1 for p in points])
    idx = np.searchsorted(np.asarray(xs), grid, side="right") - 1
    return np.where(idx >= 0, p1[np.clip(idx, 0, None)], np.nan)


def band(runs: Sequence[Run], axis: str, points: int = 200, log: bool = False) -> Band | None:
    """Median and min-max of the runs' P@1 curves against `axis` ('train_s' or 'epoch')."""
    curves = [r.curve for r in runs if r.curve]
    if log:
        # The evaluation before the first step (train_s = 0) has no place on a log axis.
        curves = [c for c in (tuple(p for p in curve if getattr(p, axis) > 0) for curve in curves) if c]
    if not curves:
        return None
    xs_all = [[getattr(p, axis) for p in c] for c in curves]
    lo = min(x[0] for x in xs_all)
    hi = max(x[-1] for x in xs_all)
    if log:
        grid = np.geomspace(lo, max(hi, lo * 1.0001), points)
    else:
        grid = np.linspace(lo, max(hi, lo + 1e-9), points)
    # Every evaluation time is added to the grid so the steps of the curves are drawn exactly.
    grid = np.unique(np.concatenate([grid, np.asarray([x for xs in xs_all for x in xs])]))
    values = np.vstack([_step_values(c, xs, grid) for c, xs in zip(curves, xs_all, strict=True)])
    covered = ~np.isnan(values).all(axis=0)
    median = np.full(grid.shape, np.nan)
    low = np.full(grid.shape, np.nan)
    high = np.full(grid.shape, np.nan)
    median[covered] = np.nanmedian(values[:, covered], axis=0)
    low[covered] = np.nanmin(values[:, covered], axis=0)
    high[covered] = np.nanmax(values[:, covered], axis=0)
    return Band(grid, median, low, high, len(curves))


@dataclass(frozen=True)
class ScalingPoint:
    threads: int
    samples_per_s: Spread
    speedup: float
    efficiency: float


def scaling_points(runs: Sequence[Run]) -> list[ScalingPoint]:
    """Per thread count: median throughput, speedup over the fewest-threads median, efficiency.

    Efficiency is speedup divided by the ideal speedup (threads / base threads), so a sweep that
    starts at 2 threads is still judged against linear scaling from its own start.
    """
    by_threads: dict[int, list[float]] = {}
    for run in runs:
        if run.samples_per_s is not None and run.state != "error":
            threads = int(run.scaling.get("threads", run.threads)) if run.scaling else run.threads
            by_threads.setdefault(threads, []).append(run.samples_per_s)
    if not by_threads:
        return []
    base_threads = min(by_threads)
    base = spread(by_threads[base_threads])
    assert base is not None
    out = []
    for threads in sorted(by_threads):
        s = spread(by_threads[threads])
        assert s is not None
        speedup = s.median / base.median if base.median > 0 else math.nan
        out.append(ScalingPoint(threads, s, speedup, speedup / (threads / base_threads)))
    return out


def popularity_of(runs: Sequence[Run]) -> float | None:
    """The label-popularity P@1 of a workload's evaluation subset (the most common value in its records)."""
    values = [r.popularity_p1 for r in runs if r.popularity_p1 is not None]
    return max(set(values), key=values.count) if values else None


def flag_counts(runs: Sequence[Run]) -> dict[str, int]:
    """flag -> how many of `runs` carry it."""
    counts: dict[str, int] = {}
    for run in runs:
        for f in run.flags:
            counts[f] = counts.get(f, 0) + 1
    return counts


def flags_text(runs: Sequence[Run]) -> str:
    """'falling (1 of 3 runs), below_popularity (3 of 3 runs)', or '' when no run is flagged."""
    return ", ".join(f"{f} ({n} of {len(runs)} runs)" for f, n in sorted(flag_counts(runs).items()))
