"""The CI scaling check: its judgement, its baseline validation, and proof that it can fail."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.run import check_scaling
from harness.run.check_scaling import (
    INCONCLUSIVE,
    OK,
    REGRESSION,
    Baseline,
    judge,
    load_baseline,
    parse_params,
)
from harness.run.scaling import Throughput, core_count, cpu_busy_s, own_cpu_s

BASE = Baseline(
    "scaling-check", "slide", steps=40, warmup=5, rounds=3, efficiency=0.9, tolerance=0.2,
    max_foreign_cpus=0.3, measured="x",
)
GOOD_BASELINE = (
    'workload = "w"\nengine = "slide"\nsteps = 4\nwarmup = 1\nrounds = 1\nefficiency = 0.9\n'
    'tolerance = 0.2\nmax_foreign_cpus = 0.3\nmeasured = "x"'
)


def test_judge_passes_at_or_above_threshold() -> None:
    verdict = judge([0.85, 0.70, 0.95], BASE, threads=2)
    assert verdict.passed and verdict.status == OK and verdict.exit_status == 0
    assert verdict.median_efficiency == pytest.approx(0.85)
    assert "threshold 0.700" in verdict.message and "OK" in verdict.message


def test_judge_fails_below_threshold_with_figures() -> None:
    verdict = judge([0.52, 0.95, 0.50], BASE, threads=2)  # one lucky round does not save it
    assert verdict.status == REGRESSION and verdict.exit_status == 1
    assert verdict.median_efficiency == pytest.approx(0.52)
    assert "REGRESSION" in verdict.message and "0.520" in verdict.message and "0.700" in verdict.message


def test_committed_baseline_is_valid() -> None:
    base = load_baseline(check_scaling.DEFAULT_BASELINE)
    assert base.engine == "slide" and 0 < base.threshold < base.efficiency


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('workload = "w"', "missing keys"),
        (GOOD_BASELINE + "\nextra = 1", "unknown keys ['extra']"),
        (GOOD_BASELINE.replace("steps = 4", 'steps = "4"'), "'steps' must be int"),
        (GOOD_BASELINE.replace("tolerance = 0.2", "tolerance = 0.95"), "tolerance < efficiency"),
        (GOOD_BASELINE.replace("max_foreign_cpus = 0.3", "max_foreign_cpus = 1.5"), "max_foreign_cpus < 1"),
        ("workload = ", "not valid TOML"),
    ],
)
def test_bad_baseline_is_refused(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "baseline.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match="baseline.toml") as err:
        load_baseline(path)
    assert needle in str(err.value)


def test_engine_param_overrides_are_typed() -> None:
    assert parse_params(["debug_serialize=true", "min_active=64", "hash=simhash"]) == {
        "debug_serialize": True, "min_active": 64, "hash": "simhash",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_params(["debug_serialize"])


def test_one_core_passes_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check_scaling, "core_count", lambda: 1)
    verdict = check_scaling.check(BASE)
    assert verdict.passed and "cannot check thread scaling" in verdict.message


def _throughput(threads: int, samples_per_s: float, foreign: float | None) -> Throughput:
    return Throughput(
        threads=threads, threads_in_effect=threads, steps=10, warmup_steps=1, samples=1280, train_s=1.0,
        samples_per_s=samples_per_s, step_s_median=0.01, load_avg_before=(1.0, 1.0, 1.0), engine_info={},
        wall_s=2.0, samples_per_s_median=samples_per_s, foreign_cpus=foreign,
    )


def _fake_measurements(monkeypatch: pytest.MonkeyPatch, rounds: list[tuple[float, float]]) -> list[int]:
    """Make check() see the given (efficiency, foreign CPUs) per round, without running anything."""
    monkeypatch.setattr(check_scaling, "core_count", lambda: 2)
    queue = iter(rounds)
    calls: list[int] = []
    state: dict[str, tuple[float, float]] = {}

    def measure(spec: object, threads: int, *args: object, **kwargs: object) -> Throughput:
        calls.append(threads)
        if threads == 1:
            state["round"] = next(queue)
            return _throughput(1, 1000.0, state["round"][1])
        eff, foreign = state["round"]
        return _throughput(threads, eff * threads * 1000.0, foreign)

    monkeypatch.setattr(check_scaling, "measure_throughput", measure)
    return calls


def test_disturbed_rounds_are_measured_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # A neighbour took 0.9 CPUs in round 2: its 0.45 would have sunk the median; it is replaced.
    calls = _fake_measurements(monkeypatch, [(0.8, 0.0), (0.45, 0.9), (0.78, 0.1), (0.82, 0.2)])
    verdict = check_scaling.check(BASE)
    assert verdict.status == OK, verdict.message
    assert verdict.efficiencies == pytest.approx((0.8, 0.78, 0.82))
    assert verdict.discarded == 1 and "1 disturbed round(s) measured again" in verdict.message
    assert calls == [1, 2] * 4  # A B pairs, one per attempt


def test_busy_machine_is_inconclusive_not_a_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = check_scaling.ATTEMPTS_PER_ROUND * BASE.rounds
    _fake_measurements(monkeypatch, [(0.5, 1.0)] * (attempts - 1) + [(0.8, 0.1)])
    verdict = check_scaling.check(BASE)
    assert verdict.status == INCONCLUSIVE and verdict.exit_status == 3 and not verdict.passed
    assert "only 1 of 3 rounds were undisturbed" in verdict.message and "1.00 CPUs" in verdict.message


def test_unreadable_foreign_load_does_not_discard(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without /proc/stat (foreign None) rounds are judged as measured.
    _fake_measurements(monkeypatch, [(0.4, None), (0.42, None), (0.41, None)])  # type: ignore[list-item]
    verdict = check_scaling.check(BASE)
    assert verdict.status == REGRESSION and verdict.discarded == 0


@pytest.mark.skipif(cpu_busy_s() is None, reason="needs /proc/stat")
def test_foreign_cpu_time_counts_a_neighbour_not_ourselves() -> None:
    """A neighbour spinning for a second shows as ~1 CPU-second of foreign time; our own sleep as none."""
    busy0, own0, t0 = cpu_busy_s(), own_cpu_s(), time.perf_counter()
    spin = "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 1.0: pass"
    subprocess.run([sys.executable, "-c", spin], check=True)
    busy1, own1 = cpu_busy_s(), own_cpu_s()
    assert busy0 is not None and busy1 is not None
    foreign = (busy1 - busy0) - (own1 - own0)
    # The neighbour alone used >= 1 s of CPU (plus its start-up); a busier machine only adds to it.
    assert foreign >= 0.8, foreign
    assert own1 - own0 < 0.5 * (time.perf_counter() - t0)  # we waited; we did not spin


@pytest.mark.native
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("engines.slide._slide") is None, reason="native extension not built")
@pytest.mark.skipif(core_count() < 2, reason="scaling needs at least two cores")
def test_serialised_engine_fails_the_check() -> None:
    """The debug switch serialises every work item of a step: the check must report a regression."""
    base = load_baseline(check_scaling.DEFAULT_BASELINE)
    verdict = check_scaling.check(base, engine_params={"debug_serialize": True})
    if verdict.status == INCONCLUSIVE:
        pytest.skip(f"machine too busy to measure scaling: {verdict.message}")
    assert verdict.status == REGRESSION, verdict.message
    assert verdict.median_efficiency is not None and verdict.median_efficiency < base.threshold
    # Serialised by construction: at most 1/threads plus noise, whatever the CPU.
    assert verdict.median_efficiency < 0.5 + 0.05, verdict.message
