"""harness.counters.counter_source: which source a run's counters come from, and the cachegrind slice as a
step of its own (never a side effect of reading perf's output)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.counters import counter_source, perf
from harness.counters.perf import EVENTS, HARDWARE_EVENTS, PerfSupport

FIXTURES = Path(__file__).parent / "fixtures" / "perf"


def support(hardware: bool) -> PerfSupport:
    events = {e: ("counted" if hardware or e not in HARDWARE_EVENTS else "not supported") for e in EVENTS}
    return PerfSupport(
        "/usr/bin/perf", "6.1", 2, True, events, "" if hardware else "hardware <not supported>"
    )


@pytest.mark.parametrize(
    ("cachegrind", "sup", "samples", "expected"),
    [
        (True, None, 640, True),  # perf off or missing: simulate
        (True, "software", 640, True),  # a VM without a PMU: simulate
        (True, "hardware", 640, False),  # real counters: nothing to simulate
        (False, None, 640, False),  # not asked for
        (True, None, 0, False),  # the run trained nothing: no slice to replay
    ],
)
def test_the_slice_is_needed_only_where_perf_cannot_count_caches(cachegrind, sup, samples, expected):
    probed = None if sup is None else support(sup == "hardware")
    assert counter_source.needs_slice({"cachegrind": cachegrind}, probed, samples) is expected


SLICE = {
    "method": "3 training steps after 2 warm-up steps",
    "events": {"D1_misses": 1200, "LL_misses": 30},
    "per_sample": {"D1_misses": 6.25, "LL_misses": 0.15625},
    "error": None,
}


def test_without_a_slice_perf_decides_the_section():
    section = perf.unavailable("perf counting off in the workload's [counters]")
    assert counter_source.combine(section, None) == section


def test_a_successful_slice_is_the_source_and_keeps_perf_software_counts():
    perf_section = {
        "source": "perf",
        "scope": "training_region",
        "reason": "hardware <not supported>",
        "events": {"page-faults": 10},
        "per_sample": {"page-faults": 0.5},
        "running_pct": {"page-faults": 100.0},
        "cachegrind": None,
    }
    c = counter_source.combine(perf_section, SLICE)
    assert c["source"] == counter_source.CACHEGRIND and c["scope"] == "training_region"
    assert c["events"] == SLICE["events"] and c["per_sample"] == SLICE["per_sample"]
    assert (
        c["reason"]
        == "hardware <not supported>; cache behaviour simulated by cachegrind (3 training steps after 2 warm-up steps)"
    )
    assert c["cachegrind"]["perf"]["events"] == {"page-faults": 10}
    assert "perf" not in SLICE, "the slice's own section is not changed"


def test_a_failed_slice_leaves_perf_the_source_and_says_why():
    c = counter_source.combine(perf.unavailable("perf not found"), {"error": "valgrind not found"})
    assert c["source"] == counter_source.UNAVAILABLE
    assert c["reason"] == "perf not found; cachegrind slice failed: valgrind not found"
    assert c["cachegrind"] == {"error": "valgrind not found"}


def test_a_crashing_slice_is_an_error_not_an_exception(monkeypatch, tmp_path):
    def crash(*args, **kwargs):
        raise RuntimeError("simulator bug")

    monkeypatch.setattr(counter_source.cachegrind, "run_slice", crash)
    result = counter_source.cachegrind_slice(["w"], tmp_path, {"cachegrind_steps": 3})
    assert result == {"error": "RuntimeError: simulator bug"}


def test_reading_perf_never_runs_valgrind(monkeypatch, tmp_path):
    def forbidden(*args, **kwargs):
        raise AssertionError("collect() ran the cachegrind slice")

    monkeypatch.setattr(counter_source.cachegrind, "run_slice", forbidden)
    w = perf.wrap_command(
        ["w", "S", "O"], {"perf": True, "cachegrind": True}, tmp_path, support=support(False)
    )
    shutil.copy(FIXTURES / "vm-not-supported.csv", w.output)
    c = w.collect(samples=1000)
    assert c["source"] == "perf" and c["cachegrind"] is None
