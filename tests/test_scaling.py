"""harness.run.scaling: thread counts, the fresh-process throughput measurement, sweep records with speedup
and efficiency, reuse of existing records, time to target from training records, and the CLI."""

from __future__ import annotations

import argparse
import json
import logging
import tomllib
from pathlib import Path

import pytest

from harness.run import scaling
from harness.spec import workload
from harness.store import records
from harness.store.results import record_path

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke() -> workload.Workload:
    """The smoke workload restricted to the numpy_dense reference engine (fast, always importable)."""
    raw = tomllib.loads((REPO / "workloads" / "smoke.toml").read_text())
    raw["matrix"]["engines"] = ["numpy_dense"]
    return workload.parse(raw, "smoke")


@pytest.mark.parametrize(
    ("cores", "expected"),
    [(1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8]), (12, [1, 2, 4, 8, 12])],
)
def test_default_threads(cores, expected):
    assert scaling.default_threads(cores) == expected


def test_more_threads_than_cores_is_refused_unless_allowed(caplog):
    with pytest.raises(ValueError, match=r"threads \[8\] exceed the 2 cores.*--allow-oversubscribe"):
        scaling.check_threads([1, 8], 2, allow_oversubscribe=False)
    with caplog.at_level(logging.WARNING):
        assert scaling.check_threads([8, 1, 1], 2, allow_oversubscribe=True) == [1, 8]
    assert "exceed" in caplog.text


@pytest.mark.parametrize("bad", [[], [0], [2, -1]])
def test_bad_thread_counts(bad):
    with pytest.raises(ValueError, match="threads"):
        scaling.check_threads(bad, 4, allow_oversubscribe=False)


def test_measure_throughput_in_a_fresh_process(smoke):
    spec = smoke.expand(threads=[1])[0]
    m = scaling.measure_throughput(spec, threads=1, steps=4, warmup=1)
    assert m.steps == 4 and m.warmup_steps == 1
    assert m.samples == 4 * spec.training.batch_size
    assert m.samples_per_s == pytest.approx(m.samples / m.train_s)
    assert m.threads_in_effect == 1 and len(m.load_avg_before) == 3
    assert m.engine_info  # the engine's info() travelled back


def test_measure_throughput_reports_the_childs_error(smoke):
    spec = smoke.expand(threads=[1])[0]
    broken = type(spec)(**{**spec.__dict__, "engine_params": {"no_such_param": 1}})
    with pytest.raises(RuntimeError, match="no_such_param"):
        scaling.measure_throughput(broken, threads=1, steps=1, warmup=0)


@pytest.mark.parametrize(("steps", "warmup", "threads"), [(0, 0, 1), (1, -1, 1), (1, 0, 0)])
def test_measure_throughput_refuses_bad_protocol(smoke, steps, warmup, threads):
    with pytest.raises(ValueError):
        scaling.measure_throughput(smoke.expand(threads=[1])[0], threads=threads, steps=steps, warmup=warmup)


def plant_train_record(results: Path, threads: int, ttt: float, run_id: str) -> None:
    spec = {"workload": "smoke", "engine": "numpy_dense", "threads": threads}
    rec = records.build(records.TRAIN, run_id, spec, records.TARGET_REACHED, "", timing={"time_to_target_s": ttt})
    records.write(record_path(results, "smoke", "numpy_dense", run_id), rec)


def test_sweep_writes_scaling_records_and_reuses_them(smoke, tmp_path, monkeypatch):
    for i, ttt in enumerate((3.0, 1.0, 2.0)):
        plant_train_record(tmp_path, 1, ttt, f"train{i}")
    recs = scaling.run_sweep(
        smoke, threads=[2], steps=3, warmup=1, results_dir=tmp_path, allow_oversubscribe=True
    )
    assert [r["scaling"]["threads"] for r in recs] == [1, 2]  # one thread is always measured: the baseline
    one, two = recs
    assert one["kind"] == "scaling" and one["status"]["state"] == "budget_spent"
    assert one["scaling"]["speedup"] == pytest.approx(1.0) and one["scaling"]["efficiency"] == pytest.approx(
        1.0
    )
    assert two["scaling"]["speedup"] == pytest.approx(
        two["scaling"]["samples_per_s"] / one["scaling"]["samples_per_s"]
    )
    assert two["scaling"]["efficiency"] == pytest.approx(two["scaling"]["speedup"] / 2)
    assert one["scaling"]["time_to_target_s"] == 2.0  # median of the planted training records
    assert sorted(one["scaling"]["time_to_target_runs"]) == ["train0", "train1", "train2"]
    assert two["scaling"]["time_to_target_s"] is None
    assert len(one["scaling"]["load_avg_before"]) == 3
    files = sorted((tmp_path / "runs" / "smoke-scaling" / "numpy_dense").glob("*.json"))
    assert len(files) == 2
    stored = {records.read(f)["scaling"]["threads"]: records.read(f) for f in files}
    assert stored[2]["scaling"]["speedup"] == pytest.approx(two["scaling"]["speedup"])
    assert stored[1]["spec"]["threads"] == 1 and stored[1]["environment"]["cores"]

    def no_measuring(*_a, **_k):
        raise AssertionError("an existing record must be reused")

    monkeypatch.setattr(scaling, "measure_throughput", no_measuring)
    again = scaling.run_sweep(
        smoke, threads=[2], steps=3, warmup=1, results_dir=tmp_path, allow_oversubscribe=True
    )
    assert [r["run_id"] for r in again] == [r["run_id"] for r in recs]


def test_min_seconds_times_more_steps_and_every_thread_count_the_same(smoke, tmp_path, monkeypatch):
    """The floor is filled at one thread; the other counts time exactly those steps."""
    real, asked = scaling.measure_throughput, []

    def spy(spec, threads, steps, warmup, **k):
        asked.append((threads, steps, k.get("min_seconds")))
        return real(spec, threads, steps, warmup, **k)

    monkeypatch.setattr(scaling, "measure_throughput", spy)
    recs = scaling.run_sweep(
        smoke, threads=[1, 2], steps=2, warmup=0, results_dir=tmp_path, allow_oversubscribe=True, min_seconds=0.5
    )
    one, two = (r["scaling"] for r in recs)
    assert one["steps"] > 2 and one["train_s"] >= 0.5  # numpy_dense on smoke: ms a step, not 250
    assert asked == [(1, 2, 0.5), (2, one["steps"], 0.0)]
    assert two["steps"] == one["steps"]
    with pytest.raises(ValueError, match="min_seconds"):
        scaling.run_sweep(smoke, threads=[1], results_dir=tmp_path, min_seconds=-1.0)


def test_failed_measurement_is_recorded_and_the_sweep_goes_on(smoke, tmp_path, monkeypatch):
    real = scaling.measure_throughput

    def flaky(spec, threads, *a, **k):
        if threads == 2:
            raise RuntimeError("numpy_dense at 2 threads: measurement failed: boom")
        return real(spec, threads, *a, **k)

    monkeypatch.setattr(scaling, "measure_throughput", flaky)
    recs = scaling.run_sweep(
        smoke, threads=[1, 2], steps=2, warmup=0, results_dir=tmp_path, allow_oversubscribe=True
    )
    states = {r["scaling"]["threads"]: r["status"] for r in recs}
    assert states[1]["state"] == "budget_spent"
    assert states[2]["state"] == "error" and "boom" in states[2]["message"]
    assert recs[1]["scaling"]["speedup"] is None and recs[1]["scaling"]["samples_per_s"] is None
    assert len(list((tmp_path / "runs" / "smoke-scaling" / "numpy_dense").glob("*.json"))) == 2


def test_sweep_refuses_unknown_engine_before_measuring(smoke, tmp_path):
    with pytest.raises(ValueError, match="no_such_engine"):
        scaling.run_sweep(smoke, engines=["no_such_engine"], threads=[1], results_dir=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_cli_sweep(tmp_path, capsys):
    from harness.commands import scaling as command

    wl = tmp_path / "tinyscale.toml"
    text = (REPO / "workloads" / "smoke.toml").read_text()
    text = text.replace('name = "smoke"', 'name = "tinyscale"')
    text = text.replace('engines = ["slide", "tf_dense", "tf_sampled"]', 'engines = ["numpy_dense"]')
    wl.write_text(text)
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    args = parser.parse_args(["scaling", str(wl), "--threads", "1", "--steps", "2", "--warmup", "0",
                              "--results-dir", str(tmp_path / "res")])  # fmt: skip
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "numpy_dense" in out and "samples/s" in out
    (rec,) = (tmp_path / "res" / "runs" / "tinyscale-scaling" / "numpy_dense").glob("*.json")
    assert json.loads(rec.read_text())["scaling"]["steps"] == 2
    too_many = parser.parse_args(
        ["scaling", str(wl), "--threads", "4096", "--results-dir", str(tmp_path / "res")]
    )
    with pytest.raises(ValueError, match="--allow-oversubscribe"):
        too_many.func(too_many)
