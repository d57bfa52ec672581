"""harness.counters.perf: parsing real perf CSV, the machine probe, the training-region control protocol,
and the counters section the runner stores, on every path (hardware, software only, none)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.counters import perf
from harness.counters.perf import EVENTS, HARDWARE_EVENTS, PerfSupport, TrainingRegion

FIXTURES = Path(__file__).parent / "fixtures" / "perf"
REPO = Path(__file__).resolve().parent.parent


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# -- parsing -------------------------------------------------------------------------------------


def test_parse_hardware_counters_with_multiplexing_and_control_lines():
    r = perf.parse_perf_csv(fixture("hw-supported.csv"))
    assert set(r) == set(EVENTS)
    assert r["cycles"].value == 41236587412 and r["cycles"].status == "counted"
    assert r["LLC-load-misses"].running_pct == pytest.approx(66.67)
    assert r["task-clock"].unit == "msec" and r["task-clock"].value == pytest.approx(10512.35)


def test_parse_vm_without_pmu_marks_hardware_not_supported():
    r = perf.parse_perf_csv(fixture("vm-not-supported.csv"))
    for e in HARDWARE_EVENTS:
        assert r[e].value is None and r[e].status == "not supported"
    assert r["page-faults"].value == 4929
    assert r["context-switches"].status == "counted"


def test_parse_not_counted():
    r = perf.parse_perf_csv(fixture("not-counted.csv"))
    assert r["page-faults"].status == "not counted" and r["page-faults"].value is None


def test_parse_hybrid_pmus_are_summed_and_modifiers_dropped():
    r = perf.parse_perf_csv(fixture("hybrid-user-only.csv"))
    assert r["cycles"].value == 812345678 + 123456789
    assert r["cycles"].running_pct == pytest.approx(20.03)
    assert r["instructions"].value == 1012345678  # the atom PMU did not count: the core's value stands
    assert r["page-faults"].value == 4321


@pytest.mark.parametrize(
    ("text", "message"),
    [("12345\n", "line 1"), ("# c\n\nabc,,cycles,1,100.00,,\n", "line 3: value 'abc' of cycles")],
)
def test_parse_refuses_malformed_lines(text, message):
    with pytest.raises(ValueError, match=message):
        perf.parse_perf_csv(text)


# -- collect(): the record's counters section ------------------------------------------------------


def fake_support(hardware: bool, control: bool = True) -> PerfSupport:
    events = {e: ("counted" if hardware or e not in HARDWARE_EVENTS else "not supported") for e in EVENTS}
    reason = "" if hardware else "hardware events <not supported>"
    return PerfSupport("/usr/bin/perf", "6.1", 2, control, events, reason)


def test_collect_hardware_counters_per_sample(tmp_path):
    w = perf.wrap_command(
        ["python", "-m", "harness.run.worker", "S", "O"], {"perf": True}, tmp_path, support=fake_support(True)
    )
    assert (
        w.argv[:2] == ["/usr/bin/perf", "stat"]
        and w.argv[-5:] == ["--", "python", "-m", "harness.run.worker", "S", "O"][-5:]
    )
    shutil.copy(FIXTURES / "hw-supported.csv", w.output)
    c = w.collect(samples=100_000)
    assert c["source"] == "perf" and c["scope"] == "training_region" and c["reason"] == ""
    assert c["events"]["cache-misses"] == 612345678
    assert c["per_sample"]["cache-misses"] == pytest.approx(6123.45678)
    assert c["running_pct"]["dTLB-load-misses"] == pytest.approx(66.66)
    assert c["cachegrind"] is None
    json.dumps(c, allow_nan=False)


def test_collect_software_only_keeps_reason_and_nulls(tmp_path):
    w = perf.wrap_command(["w", "S", "O"], {"perf": True}, tmp_path, support=fake_support(False))
    assert "cycles" not in w.argv[w.argv.index("-e") + 1]  # only events that count are requested
    shutil.copy(FIXTURES / "vm-not-supported.csv", w.output)
    c = w.collect(samples=1000)
    assert c["source"] == "perf" and "not supported" in c["reason"]
    assert c["events"]["cycles"] is None and c["per_sample"]["cycles"] is None
    assert c["per_sample"]["page-faults"] == pytest.approx(4.929)


def test_collect_region_never_enabled_is_unavailable(tmp_path):
    w = perf.wrap_command(["w", "S", "O"], {"perf": True}, tmp_path, support=fake_support(False))
    shutil.copy(FIXTURES / "not-counted.csv", w.output)
    c = w.collect(samples=10)
    assert c["source"] == "unavailable" and "never enabled" in c["reason"]


def test_missing_perf_runs_unwrapped_and_says_how_to_install(tmp_path):
    sup = perf.probe.__wrapped__("/nonexistent/perf")
    assert not sup.usable and "linux-perf" in sup.reason
    w = perf.wrap_command(["w", "S", "O"], {"perf": True}, tmp_path, support=sup)
    assert w.argv == ["w", "S", "O"] and w.pass_fds == () and w.env == {}
    c = w.collect(samples=10)
    assert c["source"] == "unavailable" and "linux-perf" in c["reason"]
    assert c["events"] == {e: None for e in EVENTS}


def test_perf_not_on_path(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    sup = perf.probe.__wrapped__()
    assert sup.perf is None and "not found on PATH" in sup.reason


def test_counting_off_in_workload(tmp_path):
    w = perf.wrap_command(["w", "S", "O"], {"perf": False, "cachegrind": False}, tmp_path)
    assert w.argv == ["w", "S", "O"]
    assert w.collect(5)["reason"] == "perf counting off in the workload's [counters]"


def test_control_unsupported_counts_whole_process(tmp_path):
    w = perf.wrap_command(
        ["w", "S", "O"], {"perf": True}, tmp_path, support=fake_support(True, control=False)
    )
    assert "--control" not in w.argv and w.pass_fds == ()
    shutil.copy(FIXTURES / "hw-supported.csv", w.output)
    assert w.collect(1)["scope"] == "whole_process"


def test_counters_config_dataclass_accepted(tmp_path):
    from harness.spec.workload import CountersSpec

    w = perf.wrap_command(["w", "S", "O"], CountersSpec(perf=False), tmp_path)
    assert w.counters_cfg["cachegrind_steps"] == 20


# -- TrainingRegion ------------------------------------------------------------------------------


def test_region_is_a_noop_without_perf():
    region = TrainingRegion.from_env({})
    assert not region.active
    region.enable()
    region.disable()  # nothing to talk to, nothing raised


def test_region_with_bad_env_is_a_noop(caplog):
    region = TrainingRegion.from_env({perf.CONTROL_ENV: "not,fds"})
    assert not region.active
    assert perf.CONTROL_ENV in caplog.text


def test_region_protocol_against_a_fake_perf():
    ctl_r, ctl_w = os.pipe()
    ack_r, ack_w = os.pipe()
    received: list[str] = []

    def fake_perf() -> None:
        with os.fdopen(ctl_r, "rb", buffering=0) as ctl:
            for line in iter(ctl.readline, b""):
                received.append(line.decode().strip())
                os.write(ack_w, b"ack\n\0")

    t = threading.Thread(target=fake_perf, daemon=True)
    t.start()
    region = TrainingRegion.from_env({perf.CONTROL_ENV: f"{ctl_w},{ack_r}"})
    assert region.active
    region.enable()
    region.enable()  # already on: not sent twice
    region.disable()
    region.enable()
    region.disable()
    os.close(ctl_w)
    t.join(5)
    os.close(ack_r)
    os.close(ack_w)
    assert received == ["enable", "disable", "enable", "disable"]
    assert region.toggles == 4 and region.failed is None


def test_region_gives_up_instead_of_hanging_when_perf_is_silent(caplog):
    ctl_r, ctl_w = os.pipe()
    ack_r, ack_w = os.pipe()
    try:
        region = TrainingRegion(ctl_w, ack_r, timeout_s=0.2)
        region.enable()
        assert region.failed and "no ack" in region.failed and not region.active
        region.disable()  # no-op now
    finally:
        for fd in (ctl_r, ctl_w, ack_r, ack_w):
            os.close(fd)


def test_region_under_valgrind_env_drives_vgdb():
    from harness.counters.cachegrind import ValgrindRegion

    region = TrainingRegion.from_env({perf.VALGRIND_CONTROL_ENV: "1"})
    assert isinstance(region, ValgrindRegion)


# -- this machine ------------------------------------------------------------------------------

needs_perf = pytest.mark.skipif(
    shutil.which("perf") is None, reason="perf not installed (Debian: linux-perf)"
)


@needs_perf
def test_probe_this_machine_is_cached_and_explains_itself():
    sup = perf.probe()
    assert perf.probe() is sup  # once per process
    if sup.usable:
        assert sup.events["page-faults"] == "counted"
        if not sup.hardware:
            assert "not supported" in sup.reason
    else:
        assert sup.reason


CHILD = r"""
import os, sys, json
from harness.counters.perf import TrainingRegion

def touch(mib):
    buf = bytearray(mib << 20)
    buf[::4096] = b"x" * (len(buf) // 4096)  # one write per page: one page fault each
    return buf

region = TrainingRegion.from_env()
keep = [touch(64)]            # outside: 16,384 faults that must not be counted
region.enable()
keep.append(touch(4))         # inside: 1,024 faults
region.disable()
keep.append(touch(64))        # outside again
json.dump({"active": region.active, "toggles": region.toggles}, open(sys.argv[2], "w"))
"""


@needs_perf
def test_training_region_isolates_counts_under_real_perf(tmp_path):
    sup = perf.probe()
    if not sup.usable or not sup.control:
        pytest.skip(f"perf cannot isolate a region here: {sup.reason}")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    out = tmp_path / "out.json"
    w = perf.wrap_command([sys.executable, str(script), "SPEC", str(out)], {"perf": True}, tmp_path / "work")
    env = {**os.environ, **w.env, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        w.argv, pass_fds=w.pass_fds, env=env, check=False, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(out.read_text()) == {"active": True, "toggles": 2}
    c = w.collect(samples=1024)
    assert c["source"] == "perf" and c["scope"] == "training_region"
    faults = c["events"]["page-faults"]
    assert 900 <= faults < 4000, faults  # the 32,768 faults outside the region are excluded
    assert c["per_sample"]["page-faults"] == pytest.approx(faults / 1024)


def fake_perf(tmp_path: Path, csv_fixture: str | None, control: bool, stat_error: str | None = None) -> str:
    """A stand-in `perf` binary: prints a version, answers `stat` with a fixture or an error."""
    script = tmp_path / "perf"
    stat = (
        f'echo "{stat_error}" >&2; exit 255'
        if stat_error
        else f'out=""; prev=""; for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done\n'
        f'cp "{FIXTURES / csv_fixture}" "$out"'
    )
    no_control = (
        ""
        if control
        else (
            'for a in "$@"; do [ "$a" = "--control" ] && { echo "unknown option control" >&2; exit 129; }; done'
        )
    )
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then echo "perf version 5.4.0"; exit 0; fi\n'
        f"{no_control}\n{stat}\n"
    )
    script.chmod(0o755)
    return str(script)


def test_probe_old_perf_without_control_falls_back_to_whole_process(tmp_path):
    sup = perf.probe.__wrapped__(fake_perf(tmp_path, "hw-supported.csv", control=False))
    assert sup.usable and sup.hardware and not sup.control and sup.version == "5.4.0"
    assert "--control" in sup.reason and "whole process" in sup.reason
    w = perf.wrap_command(["w", "S", "O"], {"perf": True}, tmp_path / "work", support=sup)
    assert w.scope == "whole_process" and "-D" not in w.argv


def test_probe_vm_without_pmu(tmp_path):
    sup = perf.probe.__wrapped__(fake_perf(tmp_path, "vm-not-supported.csv", control=True))
    assert sup.usable and not sup.hardware and sup.control
    assert sup.events["cycles"] == "not supported" and sup.events["page-faults"] == "counted"
    assert "hardware events <not supported>" in sup.reason


def test_probe_refused_by_the_kernel_says_why(tmp_path):
    err = "Error: No permission to enable task-clock event."
    sup = perf.probe.__wrapped__(fake_perf(tmp_path, None, control=True, stat_error=err))
    assert not sup.usable and err in sup.reason
