"""Worker and runner: batch stream, stop rules, failure paths, resume after a kill (harness/run/worker.py,
harness/run/runner.py). Runs the numpy_dense reference engine on the synthetic `tiny` preset: each run
is a fresh process of about a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from harness.run import runner
from harness.run.loop import batch_order, eval_rows
from harness.spec import workload
from harness.store import records as hrecords
from harness.store import results

REPO = Path(__file__).resolve().parent.parent


def write_workload(tmp: Path, name: str = "tw", engine_params: str = "", **over: object) -> Path:
    opts = {
        "engines": '["numpy_dense"]',
        "seeds": "[0]",
        "max_steps": "12",
        "every_steps": "4",
        "target": "",
        "extra_training": "",
    }
    opts.update({k: str(v) for k, v in over.items()})
    text = f"""
name = "{name}"
description = "test workload"
target_source = "test"
[dataset]
synthetic = "tiny"
[model]
hidden = [16]
[training]
batch_size = 64
lr = 0.005
max_steps = {opts["max_steps"]}
{opts["extra_training"]}
[evaluation]
every_steps = {opts["every_steps"]}
subset = 200
k = 5
{opts["target"]}
[matrix]
engines = {opts["engines"]}
threads = [1]
seeds = {opts["seeds"]}
[counters]
perf = false
{engine_params}
"""
    path = tmp / f"{name}.toml"
    path.write_text(text)
    return path


def records(results_dir: Path) -> list[dict]:
    return [hrecords.read(p) for p in sorted((results_dir / "runs").rglob("*.json"))]


# -- batch stream -----------------------------------------------------------------------------


def stream_hash(n: int, bs: int, seed: int, epochs: int) -> str:
    h = hashlib.sha256()
    for epoch in range(epochs):
        for idx in batch_order(n, bs, seed, epoch):
            h.update(idx.astype("<i8").tobytes())
    return h.hexdigest()


def test_batch_order_is_a_seeded_partition() -> None:
    batches = batch_order(10, 4, seed=3, epoch=0)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    assert stream_hash(1000, 64, 0, 3) == stream_hash(1000, 64, 0, 3)
    assert stream_hash(1000, 64, 0, 3) != stream_hash(1000, 64, 1, 3)
    e0, e1 = batch_order(1000, 64, 0, 0), batch_order(1000, 64, 0, 1)
    assert not np.array_equal(np.concatenate(e0), np.concatenate(e1)), "each epoch reshuffles"
    with pytest.raises(ValueError, match="batch_size"):
        batch_order(10, 0, 0, 0)


def test_eval_subset_is_fixed_and_shuffled() -> None:
    a, b = eval_rows(1000, 100, 0), eval_rows(1000, 100, 0)
    assert np.array_equal(a, b) and len(set(a.tolist())) == 100
    assert not np.array_equal(np.sort(a), np.arange(100)), "not the first rows of a (possibly sorted) file"
    assert len(eval_rows(50, 100, 0)) == 50


def test_batch_stream_identical_across_engines(tmp_path: Path) -> None:
    # Two differently configured engines (different init) and a second seed: the recorded
    # fingerprint of the batches trained on depends on the seed only.
    path = write_workload(tmp_path, seeds="[0, 1]", engines='["numpy_dense"]')
    w = workload.load(path)
    res = tmp_path / "res"
    runner.run_campaign(w, res)
    w2 = workload.load(
        write_workload(
            tmp_path, name="tw2", seeds="[0]", engine_params="[engines.numpy_dense]\ninit_scale = 0.5"
        )
    )
    runner.run_campaign(w2, res)
    by = {(r["spec"]["workload"], r["spec"]["seed"]): r for r in records(res)}
    assert by[("tw", 0)]["data"]["batch_stream_sha256"] == by[("tw2", 0)]["data"]["batch_stream_sha256"]
    assert by[("tw", 0)]["data"]["batch_stream_sha256"] != by[("tw", 1)]["data"]["batch_stream_sha256"]
    assert (
        by[("tw", 0)]["final"] != by[("tw2", 0)]["final"] or by[("tw", 0)]["curve"] != by[("tw2", 0)]["curve"]
    )
    # The fingerprint is the one a test can recompute from batch_order alone.
    n_train = by[("tw", 0)]["data"]["train_rows"]
    h = hashlib.sha256()
    for idx in batch_order(n_train, 64, 0, 0)[:12]:
        h.update(idx.astype("<i8").tobytes())
    assert by[("tw", 0)]["data"]["batch_stream_sha256"] == h.hexdigest()


# -- a normal run and its record --------------------------------------------------------------


def test_record_of_a_finished_run(tmp_path: Path) -> None:
    w = workload.load(write_workload(tmp_path, max_steps=40, every_steps=10, target="target_p1 = 0.99"))
    out = runner.run_campaign(w, tmp_path / "res")
    assert [o.state for o in out] == ["budget_spent"]
    (rec,) = records(tmp_path / "res")
    assert rec["schema_version"] == hrecords.SCHEMA_VERSION == 3 and rec["kind"] == "train"
    assert rec["run_id"] == w.expand()[0].run_id
    assert Path(out[0].path).name == f"{rec['run_id']}.json"
    t = rec["timing"]
    n = rec["data"]["train_rows"]
    lengths = [len(b) for e in range(3) for b in batch_order(n, 64, 0, e)][:40]
    assert t["steps"] == 40 and t["samples"] == sum(lengths) and t["train_s"] > 0 and t["eval_s"] > 0
    assert t["epochs"] == pytest.approx(sum(lengths) / n)
    assert t["time_to_target_s"] is None
    assert t["loop_s"] >= t["train_s"] + t["eval_s"]
    steps = [p["step"] for p in rec["curve"]]
    assert steps == [0, 10, 20, 30, 40]
    assert all(a["train_s"] <= b["train_s"] for a, b in zip(rec["curve"], rec["curve"][1:]))
    assert rec["curve"][0]["loss"] is None and rec["curve"][-1]["loss"] > 0
    # The popularity floor of this evaluation subset, and the flags the harness derived from the curve.
    assert 0 <= rec["popularity_p1"] <= 1 and isinstance(rec["flags"], list)
    assert rec["final"]["p1"] == rec["curve"][-1]["p1"] and rec["final"]["p1"] > 0.05
    assert set(rec["final"]) == {"p1", "p3", "p5", "ndcg1", "ndcg3", "ndcg5"}
    assert rec["counters"]["source"] in ("perf", "cachegrind", "unavailable")
    assert rec["environment"]["omp"]["OMP_NUM_THREADS"] == "1"
    assert rec["resources"]["peak_rss_mb"] > 0
    assert rec["throughput"]["samples_per_s"] == pytest.approx(t["samples"] / t["train_s"])
    events = [json.loads(x) for x in results.events_path(Path(out[0].path)).read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_stop" and kinds.count("eval_accuracy") == 5
    assert not (tmp_path / "res" / "work" / rec["run_id"]).exists(), "scratch folder removed"


def test_the_cachegrind_slice_is_a_step_of_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With perf off and cachegrind asked for, the runner replays the worker after the run."""
    calls = []

    def fake_slice(worker_argv, workdir, steps, *, timeout_s):
        calls.append((list(worker_argv), Path(workdir), steps, timeout_s))
        return {
            "method": "stand-in",
            "events": {"D1_misses": 7},
            "per_sample": {"D1_misses": 0.1},
            "error": None,
        }

    monkeypatch.setattr(runner.counter_source.cachegrind, "run_slice", fake_slice)
    counters = "cachegrind = true\ncachegrind_steps = 3\ncachegrind_timeout_s = 60"
    w = workload.load(write_workload(tmp_path, engine_params=counters))
    runner.run_campaign(w, tmp_path / "res")
    (rec,) = records(tmp_path / "res")
    ((argv, workdir, steps, timeout_s),) = calls
    assert argv[1:3] == ["-m", "harness.run.worker"] and "perf" not in argv[0], "the worker itself, unwrapped"
    assert workdir.name == rec["run_id"] and (steps, timeout_s) == (3, 60.0)
    assert rec["counters"]["source"] == "cachegrind" and rec["counters"]["events"] == {"D1_misses": 7}
    assert rec["counters"]["cachegrind"]["perf"] is None


def test_target_reached_stops_the_run(tmp_path: Path) -> None:
    w = workload.load(write_workload(tmp_path, max_steps=400, every_steps=5, target="target_p1 = 0.2"))
    (out,) = runner.run_campaign(w, tmp_path / "res")
    (rec,) = records(tmp_path / "res")
    assert out.state == "target_reached", out.message
    assert rec["timing"]["steps"] < 400
    assert rec["timing"]["time_to_target_s"] == rec["curve"][-1]["train_s"]
    assert rec["curve"][-1]["p1"] >= 0.2 > max(p["p1"] for p in rec["curve"][:-1])


def test_nan_loss_ends_run_as_diverged(tmp_path: Path) -> None:
    w = workload.load(write_workload(tmp_path, engine_params="[engines.numpy_dense]\nnan_at_step = 3"))
    (out,) = runner.run_campaign(w, tmp_path / "res")
    (rec,) = records(tmp_path / "res")
    assert out.state == "diverged" and "step 3" in rec["status"]["message"]
    assert rec["timing"]["steps"] == 3


def test_engine_error_is_recorded_and_campaign_goes_on(tmp_path: Path) -> None:
    w = workload.load(
        write_workload(tmp_path, seeds="[0, 1]", engine_params="[engines.numpy_dense]\nraise_at_step = 2")
    )
    out = runner.run_campaign(w, tmp_path / "res")
    assert [o.state for o in out] == ["error", "error"]
    rec = records(tmp_path / "res")[0]
    assert "raise_at_step" in rec["status"]["message"] and rec["status"]["message"].startswith("RuntimeError")


def test_existing_records_are_skipped_and_force_keeps_the_old_one(tmp_path: Path) -> None:
    w = workload.load(write_workload(tmp_path, max_steps=4))
    res = tmp_path / "res"
    first = runner.run_campaign(w, res)
    again = runner.run_campaign(w, res)
    assert [o.state for o in again] == ["skipped"]
    forced = runner.run_campaign(w, res, force=True)
    assert [o.state for o in forced] == ["budget_spent"]
    folder = Path(first[0].path).parent
    assert len(list(folder.glob("*.json"))) == 1
    assert len(list(folder.glob("*.json.replaced-*"))) == 1


def test_max_steps_override_is_recorded(tmp_path: Path) -> None:
    w = workload.load(write_workload(tmp_path, max_steps=50))
    (spec,) = w.expand()
    out = runner.run_one(
        spec, tmp_path / "res", extra_env={"SLIDEBENCH_MAX_STEPS": "3", "SLIDEBENCH_NO_EVAL": "1"}
    )
    rec = hrecords.read(out.path)
    assert rec["timing"]["steps"] == 3 and rec["curve"] == []
    assert rec["overrides"] == {"max_steps": 3, "no_eval": True} and "overrides" in rec["status"]["message"]


# -- crashes, kills, interrupts ---------------------------------------------------------------


def _campaign_cmd(path: Path, res: Path) -> list[str]:
    code = (
        "import sys; from pathlib import Path; from harness.run import runner; from harness.spec import workload;"
        "runner.run_campaign(workload.load(Path(sys.argv[1])), Path(sys.argv[2]))"
    )
    return [sys.executable, "-c", code, str(path), str(res)]


def _wait_for(predicate, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _training_started(res: Path) -> bool:
    return any("train_start" in p.read_text() for p in (res / "runs").rglob("*.events.jsonl"))


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_killed_campaign_leaves_no_partial_record_and_resumes(tmp_path: Path, how: int) -> None:
    slow = "[engines.numpy_dense]\nsleep_per_step = 0.2"
    path = write_workload(tmp_path, seeds="[0, 1]", max_steps=20, engine_params=slow)
    res = tmp_path / "res"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # A shell that started the tests in the background hands them SIGINT ignored; the campaign under
    # test must get it as a user's Ctrl-C would.
    proc = subprocess.Popen(
        _campaign_cmd(path, res), cwd=REPO, env=env, start_new_session=True,
        preexec_fn=_default_sigint,  # noqa: PLW1509 - no threads of this test exist yet
    )  # fmt: skip
    try:
        _wait_for(lambda: _training_started(res))
        os.killpg(proc.pid, how)  # the whole campaign: runner and worker, like a Ctrl-C or a crash
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert rc != 0
    assert records(res) == [], "no record for a run that did not finish"
    assert not list((res / "runs").rglob("*.tmp"))
    # Resume: both runs complete (the slow one still takes ~4 s).
    out = runner.run_campaign(workload.load(path), res)
    assert sorted(o.state for o in out) == ["budget_spent", "budget_spent"]
    assert len(records(res)) == 2


@pytest.mark.slow
def test_killed_worker_is_recorded_as_error_and_campaign_goes_on(tmp_path: Path) -> None:
    slow = "[engines.numpy_dense]\nsleep_per_step = 0.2"
    w = workload.load(write_workload(tmp_path, seeds="[0, 1]", max_steps=15, engine_params=slow))
    res = tmp_path / "res"
    killed: list[int] = []

    def killer() -> None:
        # Kill the first worker process once it is training.
        _wait_for(lambda: _training_started(res))
        out = subprocess.run(
            ["pgrep", "-f", f"harness.run.worker {res}"], capture_output=True, text=True, check=False
        )
        pids = [int(x) for x in out.stdout.split()]
        for pid in pids[:1]:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    import threading

    t = threading.Thread(target=killer)
    t.start()
    out = runner.run_campaign(w, res)
    t.join()
    assert killed
    states = [o.state for o in out]
    assert states == ["error", "budget_spent"], [o.message for o in out]
    rec = hrecords.read(out[0].path)
    assert "SIGKILL" in rec["status"]["message"]
    assert rec["curve"] and rec["curve"][0]["step"] == 0, "partial curve recovered from the event log"
    # Skipped on the next campaign, rerun with retry_errors.
    assert [o.state for o in runner.run_campaign(w, res)] == ["skipped", "skipped"]
    retried = runner.run_campaign(w, res, retry_errors=True)
    assert [o.state for o in retried] == ["skipped", "budget_spent"]


# -- progress and the reproduce command -------------------------------------------------------


class _Tty:
    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


def test_progress_line_on_a_tty(tmp_path: Path) -> None:
    w = workload.load(write_workload(tmp_path, max_steps=100))
    spec = w.expand()[0]
    tty = _Tty()
    p = runner.Progress(3, stream=tty)
    p.run_started(2, spec)
    p.event({"event": "eval_accuracy", "step": 50, "epoch": 1.6, "p1": 0.4321, "train_s": 2.0})
    assert "\r[2/3] tw numpy_dense" in tty.text and "step 50" in tty.text and "P@1 0.4321" in tty.text
    assert "ETA" in tty.text  # half the step budget is spent


def test_reproduce_runs_suite_then_scaling_then_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.commands import run as run_cmd

    wdir = tmp_path / "workloads"
    wdir.mkdir()
    write_workload(wdir, name="a", max_steps=3)
    write_workload(wdir, name="b", max_steps=3)
    (wdir / "suites.toml").write_text(
        '[mini]\nworkloads = ["a"]\nrealdata = ["b"]\nscaling = "a"\nscaling_steps = 2\n'
    )
    monkeypatch.setattr(workload, "WORKLOADS_DIR", wdir)
    monkeypatch.setattr(run_cmd, "SUITES_FILE", wdir / "suites.toml")
    calls: list[tuple[str, object]] = []

    from harness.reporting import report
    from harness.run import scaling

    def fake(func: str):
        def call(*args, **kwargs):
            calls.append((func, kwargs))
            return tmp_path / "report.md" if func == "render" else None

        return call

    monkeypatch.setattr(scaling, "run_sweep", fake("run_sweep"))
    monkeypatch.setattr(report, "render", fake("render"))
    import argparse

    args = argparse.Namespace(
        suite="mini", data_dir=None, results_dir=str(tmp_path / "res"), timeout=None, no_scaling=False
    )
    assert run_cmd.cmd_reproduce(args) == 0
    done = {r["spec"]["workload"] for r in records(tmp_path / "res")}
    assert done == {"a", "b"}  # b's data is synthetic, so always "available"
    assert [c[0] for c in calls] == ["run_sweep", "render"]
    assert calls[0][1]["steps"] == 2 and "warmup" not in calls[0][1]
    args.suite = "nope"
    with pytest.raises(ValueError, match="unknown suite"):
        run_cmd.cmd_reproduce(args)


def test_row_slice_matches_take() -> None:
    from harness.datasets.sparse import Csr
    from harness.run.loop import row_slice

    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 5, size=20)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    m = Csr(
        indptr,
        rng.integers(0, 50, size=int(indptr[-1])).astype(np.int32),
        rng.random(int(indptr[-1])).astype(np.float32),
        50,
    )
    for a, b in [(0, 20), (3, 9), (19, 20), (5, 5)]:
        s, t = row_slice(m, a, b), m.take(np.arange(a, b))
        assert np.array_equal(s.indptr, t.indptr) and np.array_equal(s.indices, t.indices)
        assert np.array_equal(s.values, t.values) and s.n_cols == 50


def test_realdata_availability(tmp_path: Path) -> None:
    from harness.commands.run import realdata_available

    w = workload.load("delicious")
    reason = realdata_available(w, tmp_path)
    assert reason is not None and "delicious_train.txt" in reason
    assert realdata_available(workload.load(write_workload(tmp_path)), tmp_path) is None  # synthetic
    shared = os.environ.get("SLIDEBENCH_DATA")
    if shared and (Path(shared) / "delicious").is_dir():
        assert realdata_available(w, Path(shared)) is None


def test_run_command_refuses_missing_real_data_before_any_run(tmp_path: Path) -> None:
    import argparse

    from harness.commands.run import cmd_run

    args = argparse.Namespace(
        workload="delicious", engines=["numpy_dense"], threads=None, seeds=None, force=False,
        retry_errors=False, data_dir=str(tmp_path), results_dir=str(tmp_path / "res"), timeout=None,
    )  # fmt: skip
    with pytest.raises(FileNotFoundError, match="delicious_train.txt"):
        cmd_run(args)
    assert not (tmp_path / "res").exists()


# -- one campaign per results folder ----------------------------------------------------------


HOLD_LOCK = """
import sys, time
from harness.store import results
with results.locked(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    time.sleep(30)
"""


@contextlib.contextmanager
def lock_held_elsewhere(res: Path, command: str) -> Iterator[int]:
    """The results folder's lock held by another process (as another campaign would); yields its pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(res), command], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_second_campaign_on_a_folder_is_refused_at_once(tmp_path: Path) -> None:
    res = tmp_path / "res"
    with lock_held_elsewhere(res, "campaign first") as pid:
        t0 = time.monotonic()
        with pytest.raises(results.ResultsBusy, match=rf"{res}.*pid {pid}: campaign first"):
            runner.run_campaign(workload.load(write_workload(tmp_path)), res)
        assert time.monotonic() - t0 < 5, "refused at once, not after waiting"
    assert not (res / "runs").exists() and not (res / "work").exists()


# -- orphaned workers -------------------------------------------------------------------------

# Stands in for `perf stat`: a process between the runner and the worker, which it runs as a child.
WRAPPER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


class _Wrapped(runner._Unwrapped):
    def __init__(self, argv: list[str]) -> None:
        super().__init__([sys.executable, "-c", WRAPPER, *argv], "wrapped by a test stand-in for perf")


def _procs_naming(text: str) -> list:
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any(text in arg for arg in (p.info.get("cmdline") or ())) and p.pid != os.getpid():
            found.append(p)
    return found


def _wait_gone(text: str, timeout: float = 8.0) -> list:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        left = [p for p in _procs_naming(text) if p.status() != "zombie"]
        if not left:
            return []
        time.sleep(0.1)
    return left


def _kill_all(text: str) -> None:
    import psutil

    for p in _procs_naming(text):
        with contextlib.suppress(psutil.Error):
            p.kill()


@pytest.mark.slow
def test_timeout_ends_the_worker_behind_its_wrapper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = "[engines.numpy_dense]\nsleep_per_step = 0.2"
    w = workload.load(write_workload(tmp_path, max_steps=200, engine_params=slow))
    (spec,) = w.expand()
    res = tmp_path.resolve() / "res"
    monkeypatch.setattr(runner.perf, "wrap_command", lambda argv, counters, workdir: _Wrapped(argv))
    try:
        out = runner.run_one(spec, res, timeout_s=4)
        assert out.state == "error" and "timed out after 4 s" in out.message
        assert "run_start" in results.events_path(out.path).read_text(), "the worker was running"
        assert _wait_gone(f"{res}/work/") == [], "worker (or wrapper) still running after the timeout"
    finally:
        _kill_all(f"{res}/work/")


def _campaign_with_wrapper_cmd(path: Path, res: Path, wrapped: bool) -> list[str]:
    code = (
        "import sys; from pathlib import Path; from harness.run import runner; from harness.spec import workload\n"
        f"W = {WRAPPER!r}\n"
        "class Wrapped(runner._Unwrapped):\n"
        "    def __init__(self, argv):\n"
        "        super().__init__([sys.executable, '-c', W, *argv], 'test')\n"
        f"if {wrapped}: runner.perf.wrap_command = lambda argv, counters, workdir: Wrapped(argv)\n"
        "runner.run_campaign(workload.load(Path(sys.argv[1])), Path(sys.argv[2]))"
    )
    return [sys.executable, "-c", code, str(path), str(res)]


@pytest.mark.slow
@pytest.mark.parametrize("wrapped", [True, False], ids=["behind-a-wrapper", "direct"])
def test_worker_dies_with_its_campaign_on_kill_9(tmp_path: Path, wrapped: bool) -> None:
    slow = "[engines.numpy_dense]\nsleep_per_step = 0.2"
    path = write_workload(tmp_path, max_steps=200, engine_params=slow)
    res = tmp_path.resolve() / "res"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        _campaign_with_wrapper_cmd(path, res, wrapped), cwd=REPO, env=env, start_new_session=True
    )
    try:
        _wait_for(lambda: _training_started(res))
        assert _procs_naming(f"{res}/work/"), "a worker is running"
        os.kill(proc.pid, signal.SIGKILL)  # the campaign process alone, as `kill -9 PID` would
        proc.wait(timeout=10)
        assert _wait_gone(f"{res}/work/") == [], "the worker outlived its campaign"
    finally:
        _kill_all(f"{res}/work/")
        if proc.poll() is None:
            proc.kill()


def test_worker_watch_pipe_ends_the_worker_when_the_campaign_closes_it() -> None:
    from harness.run.worker import PARENT_FD_ENV

    r, w = os.pipe()
    code = "from harness.run.worker import watch_campaign; import time; watch_campaign(); time.sleep(30)"
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, pass_fds=(r,), env=dict(os.environ, **{PARENT_FD_ENV: str(r)})
    )
    os.close(r)
    try:
        time.sleep(0.5)
        assert child.poll() is None, "alive while the campaign's end of the pipe is open"
        os.close(w)  # what the kernel does when the campaign dies, however it dies
        assert child.wait(timeout=5) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_resumed_run_ends_a_worker_left_from_an_earlier_campaign(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = workload.load(write_workload(tmp_path, max_steps=4))
    (spec,) = w.expand()
    res = tmp_path.resolve() / "res"
    spec_file = res.resolve() / "work" / spec.run_id / "spec.json"
    spec_file.parent.mkdir(parents=True)
    # An orphan of a killed campaign: its command line names this run's spec file.
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", str(spec_file)], start_new_session=True
    )
    try:
        with caplog.at_level("WARNING", logger="slidebench.runner"):
            out = runner.run_one(spec, res)
        orphan.wait(timeout=5)  # ended (it would sleep a minute otherwise); the runner reaped it
        assert out.state == "budget_spent"
        assert f"pid {orphan.pid}" in caplog.text and "earlier campaign" in caplog.text
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


# -- campaign-level progress ------------------------------------------------------------------


def test_progress_shows_the_campaign_eta_from_remaining_budgets(tmp_path: Path) -> None:
    w = workload.load(write_workload(tmp_path, seeds="[0, 1, 2]", max_steps=100))
    specs = w.expand()
    tty = _Tty()
    p = runner.Progress(3, stream=tty, specs=specs)
    p.run_started(1, specs[0])
    assert "campaign 0/3 done" in tty.text and "left" not in tty.text, "nothing measured: no number"
    # 0.04 s per step measured: each remaining run's 100 steps take ~4 s of train clock.
    p.event({"event": "eval_accuracy", "step": 50, "epoch": 1.6, "p1": 0.4, "train_s": 2.0})
    assert "campaign 0/3 done, ~8s left (train clock)" in tty.text
    p.run_started(3, specs[2])
    assert "campaign 2/3 done, ~4s left" in tty.text


def test_progress_counts_runs_it_cannot_estimate(tmp_path: Path) -> None:
    w1 = workload.load(write_workload(tmp_path, max_steps=100))
    w2 = workload.load(
        write_workload(tmp_path, name="secs", max_steps=100, extra_training="max_seconds = 30")
    )
    w3 = workload.load(write_workload(tmp_path, name="other", max_steps=100))
    specs = [w1.expand()[0], w2.expand()[0], w3.expand()[0]]
    tty = _Tty()
    p = runner.Progress(3, stream=tty, specs=specs)
    p.run_started(1, specs[0])
    p.event({"event": "eval_accuracy", "step": 50, "epoch": 1.6, "p1": 0.4, "train_s": 2.0})
    # w2: min(30 s budget, 100 steps at a rate not measured for it) -> 30 s; w3: nothing known.
    assert "~30s left (train clock) + 1 run(s) not estimated yet" in tty.text
