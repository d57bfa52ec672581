"""Sanity flags: named warnings the harness computes from a run's numbers, never judgements by hand.

A flag says a figure should not be read at face value. Each is a plain string so that records,
the report and other tools can test for it:

- ``below_popularity``: no evaluation beat the label-popularity P@1 by two standard errors (the
  run learned nothing a frequency count does not know);
- ``falling``: the run's last evaluation is more than three standard errors below its best (it
  diverged or collapsed and did not recover, so its best and any time to target are luck of the
  cadence). A dip that the run recovers from is left to the curve: early in training, with ten or
  more points per run, nearly every healthy run dips once (the popular labels win before the
  rare ones are learned), and a flag on every run would mean nothing;
- ``few_evaluations``: fewer than MIN_EVALUATIONS evaluations after step 0 (its curve cannot be
  read as a curve, and its time to target is only as fine as its cadence);
- ``no_separation`` (a workload's): no run on it beats popularity, so it does not separate engines;
- ``efficiency_above_1`` (a scaling point's): parallel efficiency above 100% is noise, not speed.

Standard errors are the binomial ones of a P@1 measured on `n` evaluation points.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

BELOW_POPULARITY = "below_popularity"
FALLING = "falling"
FEW_EVALUATIONS = "few_evaluations"
NO_SEPARATION = "no_separation"
EFFICIENCY_ABOVE_1 = "efficiency_above_1"

MIN_EVALUATIONS = 10
BEAT_BY_SE = 2.0
FALL_BY_SE = 3.0


def standard_error(p: float, n: int) -> float:
    """Binomial standard error of a proportion p measured on n points (at least one point's worth)."""
    if n < 1:
        raise ValueError(f"standard_error needs n >= 1, got {n}")
    # A P@1 of exactly 0 or 1 has zero binomial error; half a point keeps the margins meaningful.
    return math.sqrt(max(p * (1.0 - p), 0.5 / n) / n)


def beats_popularity(p1: float, popularity: float, n: int) -> bool:
    return p1 > popularity + BEAT_BY_SE * standard_error(popularity, n)


def run_flags(curve: Sequence[Mapping[str, Any]], popularity: float | None, n_eval: int) -> list[str]:
    """The flags of one training run from its curve (points with `step` and `p1`)."""
    flags: list[str] = []
    values = [float(p["p1"]) for p in curve if p.get("p1") is not None]
    if not values or n_eval < 1:
        return flags
    if popularity is not None and not any(beats_popularity(v, popularity, n_eval) for v in values):
        flags.append(BELOW_POPULARITY)
    best = max(values)
    if values[-1] < best - FALL_BY_SE * standard_error(best, n_eval):
        flags.append(FALLING)
    after_start = sum(1 for p in curve if p.get("step", 0) > 0)
    if after_start < MIN_EVALUATIONS:
        flags.append(FEW_EVALUATIONS)
    return flags


def workload_flags(runs: Iterable[tuple[float, float | None, int]]) -> list[str]:
    """A workload's flags from (best P@1, popularity P@1, evaluation points) of each of its runs."""
    scored = [(best, pop, n) for best, pop, n in runs if pop is not None and n > 0]
    if scored and not any(beats_popularity(best, pop, n) for best, pop, n in scored):
        return [NO_SEPARATION]
    return []


def scaling_flags(efficiency: float | None) -> list[str]:
    return [EFFICIENCY_ABOVE_1] if efficiency is not None and efficiency > 1.0 else []
