"""CI regression check on thread scaling: the SLIDE engine's parallel efficiency against a baseline.

The check runs a short fixed workload at one thread and at the core count, alternating the two
(A B A B ...) so that slow drift of a shared machine hits both sides alike, and compares the median
parallel efficiency over rounds with a committed baseline (`.ci/scaling-baseline.toml`):

    efficiency = (samples/s at N threads) / (N x samples/s at 1 thread)

where each side's samples/s is the median over its timed steps, so a step slowed by a neighbour
does not count. Each round pairs one A with the B that follows it, a ratio measured within seconds.

On a 2-core machine a neighbour that takes a core makes a healthy engine look serialised, so no
threshold can tell the two apart. Each measurement therefore also records the CPU time other
processes took meanwhile (`foreign_cpus`, from /proc/stat); a round in which either side saw more
than the baseline's `max_foreign_cpus` is discarded and measured again. When too few clean rounds
can be had, the verdict is INCONCLUSIVE (exit status 3): neither a pass nor a regression.

The negative control is the engine's `debug_serialize` switch, which serialises every work item of
a training step: its efficiency is at most ~1/N by construction, on any CPU. On a one-core machine
there is nothing to compare, and the check says so and passes explicitly.
"""

from __future__ import annotations

import logging
import statistics
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness import REPO_ROOT
from harness.run.scaling import core_count, measure_throughput
from harness.spec import registry, workload

log = logging.getLogger(__name__)

DEFAULT_BASELINE = REPO_ROOT / ".ci" / "scaling-baseline.toml"
_BASELINE_KEYS = {
    "workload": str, "engine": str, "steps": int, "warmup": int, "rounds": int,
    "efficiency": float, "tolerance": float, "max_foreign_cpus": float, "measured": str,
}
# A disturbed round is measured again, up to this many attempts per round asked for.
ATTEMPTS_PER_ROUND = 3

OK, REGRESSION, INCONCLUSIVE = "ok", "regression", "inconclusive"
EXIT_STATUS = {OK: 0, REGRESSION: 1, INCONCLUSIVE: 3}


@dataclass(frozen=True)
class Baseline:
    workload: str
    engine: str
    steps: int
    warmup: int
    rounds: int
    efficiency: float
    tolerance: float
    max_foreign_cpus: float
    measured: str

    @property
    def threshold(self) -> float:
        return self.efficiency - self.tolerance


@dataclass(frozen=True)
class Verdict:
    status: str  # OK, REGRESSION or INCONCLUSIVE
    message: str
    efficiencies: tuple[float, ...] = ()
    median_efficiency: float | None = None
    discarded: int = 0  # rounds measured again because a neighbour took CPU time

    @property
    def passed(self) -> bool:
        return self.status == OK

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS[self.status]


def load_baseline(path: Path) -> Baseline:
    """Read and validate the baseline file; ValueError naming the file and key otherwise."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: scaling baseline not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - set(_BASELINE_KEYS))
    missing = sorted(set(_BASELINE_KEYS) - set(raw))
    if unknown or missing:
        raise ValueError(f"{path}: unknown keys {unknown}, missing keys {missing}")
    for key, kind in _BASELINE_KEYS.items():
        value = raw[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            raw[key] = value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            # A bad file, not a programming error: ValueError is what the CLI reports without a traceback.
            raise ValueError(f"{path}: {key!r} must be {kind.__name__}, got {value!r}")  # noqa: TRY004
    base = Baseline(**raw)
    if base.steps < 1 or base.warmup < 0 or base.rounds < 1:
        raise ValueError(f"{path}: steps >= 1, warmup >= 0 and rounds >= 1 required")
    if not 0.0 < base.efficiency <= 1.5 or not 0.0 <= base.tolerance < base.efficiency:
        raise ValueError(f"{path}: need 0 < efficiency <= 1.5 and 0 <= tolerance < efficiency")
    if not 0.0 < base.max_foreign_cpus < 1.0:
        raise ValueError(f"{path}: need 0 < max_foreign_cpus < 1")
    return base


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` overrides of engine parameters; values are read as TOML scalars (true, 3, 0.5, "x")."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--engine-param: expected KEY=VALUE, got {item!r}")
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value  # a bare word: a string
    return out


def judge(efficiencies: Sequence[float], base: Baseline, threads: int, discarded: int = 0) -> Verdict:
    """OK when the median efficiency over rounds is at least the baseline minus its tolerance."""
    median = statistics.median(efficiencies)
    figures = ", ".join(f"{e:.3f}" for e in efficiencies)
    head = (
        f"{base.engine} on {base.workload}: parallel efficiency at {threads} threads = {median:.3f} "
        f"(median of rounds: {figures}"
        + (f"; {discarded} disturbed round(s) measured again" if discarded else "")
        + f"); baseline {base.efficiency:.3f} - tolerance {base.tolerance:.3f} = threshold {base.threshold:.3f}"
    )
    if median >= base.threshold:
        return Verdict(OK, head + ": OK", tuple(efficiencies), median, discarded)
    return Verdict(
        REGRESSION,
        head + f": REGRESSION: efficiency {median:.3f} is below {base.threshold:.3f}. Something serialises the "
        "threads (a lock, false sharing, a serial section); compare with `slidebench scaling` and profile.",
        tuple(efficiencies),
        median,
        discarded,
    )


def inconclusive(base: Baseline, clean: Sequence[float], attempts: int, worst_foreign: float) -> Verdict:
    """Too few undisturbed rounds: say so, with what was seen, instead of guessing."""
    return Verdict(
        INCONCLUSIVE,
        f"{base.engine} on {base.workload}: INCONCLUSIVE: only {len(clean)} of {base.rounds} rounds were "
        f"undisturbed after {attempts} attempts; other processes took up to {worst_foreign:.2f} CPUs while "
        f"steps ran (allowed {base.max_foreign_cpus:.2f}). Thread scaling cannot be judged on a machine whose "
        "cores are busy; run the check again when it is quieter.",
        tuple(clean),
        statistics.median(clean) if clean else None,
        attempts - len(clean),
    )


def check(
    base: Baseline,
    *,
    threads: int | None = None,
    rounds: int | None = None,
    engine_params: Mapping[str, Any] | None = None,
    data_dir: str | Path | None = None,
) -> Verdict:
    """Measure A (1 thread) / B (`threads`, default the core count) rounds and judge the clean ones."""
    cores = core_count()
    threads = threads or cores
    if threads < 2 or cores < 2:
        return Verdict(OK, f"cannot check thread scaling with {cores} core(s) available: passing without a check")
    if threads > cores:
        raise ValueError(f"--threads {threads} exceeds the {cores} cores available")
    if rounds is not None:
        base = replace(base, rounds=rounds)
    wl = workload.load(base.workload)
    (spec,) = wl.expand(engines=[base.engine], threads=[1], seeds=[wl.seeds[0]])
    if engine_params:
        merged = {**spec.engine_params, **engine_params}
        spec = replace(spec, engine_params=registry.engine_class(base.engine).check_params(merged))
    clean: list[float] = []
    attempts, worst_foreign = 0, 0.0
    while len(clean) < base.rounds and attempts < ATTEMPTS_PER_ROUND * base.rounds:
        attempts += 1
        one = measure_throughput(spec, 1, base.steps, base.warmup, data_dir=data_dir)
        many = measure_throughput(spec, threads, base.steps, base.warmup, data_dir=data_dir)
        eff = many.samples_per_s_median / (threads * one.samples_per_s_median)
        foreign = max(one.foreign_cpus or 0.0, many.foreign_cpus or 0.0)
        worst_foreign = max(worst_foreign, foreign)
        disturbed = foreign > base.max_foreign_cpus
        log.info(
            "round %d: 1 thread %.0f samples/s, %d threads %.0f samples/s, efficiency %.3f; "
            "others took %.2f CPUs, load %.2f%s",
            attempts, one.samples_per_s_median, threads, many.samples_per_s_median, eff, foreign,
            one.load_avg_before[0], ": disturbed, measured again" if disturbed else "",
        )
        if not disturbed:
            clean.append(eff)
    if len(clean) < base.rounds:
        return inconclusive(base, clean, attempts, worst_foreign)
    return judge(clean, base, threads, discarded=attempts - len(clean))
