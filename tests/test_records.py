"""The record's owner (harness.store.records): every record has every section, older versions are read
in the current shape, and the report reads old and new records alike."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.store import flags, records, results

FIXTURE_RECORDS = Path(__file__).parent / "fixtures" / "records"


def test_every_writer_gets_every_section() -> None:
    rec = records.build(records.SCALING, "r1", {"engine": "x"}, records.ERROR, "boom", timing={"steps": 0})
    assert set(rec) == {"schema_version", "run_id", "kind", "spec", "status", *records.SECTIONS}
    assert rec["schema_version"] == records.SCHEMA_VERSION
    assert set(rec["timing"]) == set(records.TIMING_KEYS) and rec["timing"]["steps"] == 0
    assert rec["counters"]["source"] == "unavailable" and rec["flags"] == []


def test_build_refuses_what_no_record_holds() -> None:
    with pytest.raises(ValueError, match="status.state 'finished'"):
        records.build(records.TRAIN, "r", {}, "finished", "")
    with pytest.raises(ValueError, match="record kind 'bench'"):
        records.build("bench", "r", {}, records.ERROR, "")
    with pytest.raises(ValueError, match="unknown record section.*scalling"):
        records.build(records.TRAIN, "r", {}, records.ERROR, "", scalling={})
    with pytest.raises(ValueError, match="unknown timing key.*train_seconds"):
        records.timing(train_seconds=1.0)


def test_unavailable_counters_list_the_events_as_null() -> None:
    c = records.unavailable_counters("no perf here", ("cycles", "instructions"))
    assert c["reason"] == "no perf here" and c["events"] == {"cycles": None, "instructions": None}


def test_a_version_1_record_reads_in_the_current_shape() -> None:
    path = min((FIXTURE_RECORDS / "runs" / "smoke").rglob("*.json"))
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 1 and "flags" not in raw and "popularity_p1" not in raw
    del raw["overrides"]  # a section every current record has
    raw["data"]["eval_rows"] = 500  # so that its six evaluations are read as too few
    rec = records.upgrade(raw, path)
    assert rec["schema_version"] == records.SCHEMA_VERSION and set(records.SECTIONS) <= set(rec)
    assert set(records.TIMING_KEYS) <= set(rec["timing"])
    assert rec["flags"] == [flags.FEW_EVALUATIONS]
    assert rec["curve"] == raw["curve"] and rec["overrides"] == {} and rec["popularity_p1"] is None
    assert "overrides" not in raw and raw["schema_version"] == 1, "the input is left alone"
    assert records.read(path)["flags"] == [], "without eval_rows, no flag can be computed"


def test_upgrade_keeps_stored_flags_and_computes_missing_ones() -> None:
    base = {
        "schema_version": 2,
        "run_id": "r",
        "spec": {},
        "status": {"state": "budget_spent", "message": ""},
    }
    assert records.upgrade({**base, "flags": ["falling"]})["flags"] == ["falling"]
    scaling = {**base, "schema_version": 1, "kind": "scaling", "scaling": {"efficiency": 1.3}}
    assert records.upgrade(scaling)["flags"] == [flags.EFFICIENCY_ABOVE_1]
    with pytest.raises(records.RecordError, match="x.json: unknown schema_version 99"):
        records.upgrade({**base, "schema_version": 99}, "x.json")
    with pytest.raises(records.RecordError, match="no schema_version"):
        records.upgrade([1, 2], "x.json")


def test_write_refuses_an_older_version(tmp_path: Path) -> None:
    old = {"schema_version": 1, "run_id": "r", "kind": "train", "spec": {}, "status": {"state": "error"}}
    with pytest.raises(ValueError, match="schema_version 1, writing"):
        records.write(tmp_path / "r.json", old)
    assert not list(tmp_path.iterdir())


def test_the_report_reads_every_version_alike(tmp_path: Path) -> None:
    from harness.reporting import report

    # The fixture campaign as stored (version 1), as version 2 wrote it (popularity and flags,
    # sections as before), and as this version writes it: one report.
    old, v2, new = tmp_path / "v1", tmp_path / "v2", tmp_path / "v3"
    shutil.copytree(FIXTURE_RECORDS, old)
    for target in (v2, new):
        for path in sorted((old / "runs").rglob("*.json")):
            if path.name.endswith(".events.jsonl"):
                continue
            dest = target / path.relative_to(old)
            dest.parent.mkdir(parents=True, exist_ok=True)
            rec = dict(records.read(path))
            if target is v2:
                raw = json.loads(path.read_text())
                rec = {**raw, "schema_version": 2, "popularity_p1": None, "flags": rec["flags"]}
                results.write_atomic(dest, results.dumps(rec))
            else:
                records.write(dest, rec)
    assert {json.loads(p.read_text())["schema_version"] for p in (new / "runs").rglob("*.json")} == {3}
    rendered = [
        report.render(d, tmp_path / f"out-{d.name}").read_text().replace(str(d), "RESULTS")
        for d in (old, v2, new)
    ]
    assert "file(s) were skipped" not in rendered[0] and "## Workload" in rendered[0]
    assert rendered[0] == rendered[1] == rendered[2]
