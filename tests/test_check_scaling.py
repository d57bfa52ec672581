"""The CI scaling check: its judgement, its baseline validation, and proof that it can fail."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from harness import check_scaling
from harness.check_scaling import Baseline, judge, load_baseline, parse_params
from harness.scaling import core_count

BASE = Baseline("scaling-check", "slide", steps=40, warmup=5, rounds=3, efficiency=0.9, tolerance=0.2, measured="x")


def test_judge_passes_at_or_above_threshold() -> None:
    verdict = judge([0.85, 0.70, 0.95], BASE, threads=2)
    assert verdict.passed
    assert verdict.median_efficiency == pytest.approx(0.85)
    assert "threshold 0.700" in verdict.message and "OK" in verdict.message


def test_judge_fails_below_threshold_with_figures() -> None:
    verdict = judge([0.52, 0.95, 0.50], BASE, threads=2)  # one lucky round does not save it
    assert not verdict.passed
    assert verdict.median_efficiency == pytest.approx(0.52)
    assert "REGRESSION" in verdict.message and "0.520" in verdict.message and "0.700" in verdict.message


def test_committed_baseline_is_valid() -> None:
    base = load_baseline(check_scaling.DEFAULT_BASELINE)
    assert base.engine == "slide" and 0 < base.threshold < base.efficiency


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('workload = "w"', "missing keys"),
        (('workload = "w"\nengine = "slide"\nsteps = 4\nwarmup = 1\nrounds = 1\nefficiency = 0.9\n'
          'tolerance = 0.2\nmeasured = "x"\nextra = 1'), "unknown keys ['extra']"),
        (('workload = "w"\nengine = "slide"\nsteps = "4"\nwarmup = 1\nrounds = 1\nefficiency = 0.9\n'
          'tolerance = 0.2\nmeasured = "x"'), "'steps' must be int"),
        (('workload = "w"\nengine = "slide"\nsteps = 4\nwarmup = 1\nrounds = 1\nefficiency = 0.9\n'
          'tolerance = 0.95\nmeasured = "x"'), "tolerance < efficiency"),
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


@pytest.mark.native
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("engines.slide._slide") is None, reason="native extension not built")
@pytest.mark.skipif(core_count() < 2, reason="scaling needs at least two cores")
def test_serialised_engine_fails_the_check() -> None:
    """The debug switch takes a global lock per sample: the check must catch the lost parallelism."""
    base = load_baseline(check_scaling.DEFAULT_BASELINE)
    verdict = check_scaling.check(base, rounds=3, engine_params={"debug_serialize": True})
    assert not verdict.passed, verdict.message
    assert verdict.median_efficiency is not None and verdict.median_efficiency < base.threshold
