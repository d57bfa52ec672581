"""Executors (harness/run/executors.py): the local default, and Dask with one run per node.

The Dask tests start a LocalCluster in this process (two single-slot worker processes on
127.0.0.1, each advertising one `node` resource) and run the tiny numpy_dense workload of
test_runner through it. They skip, saying why, where `distributed` is not installed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_runner import records, write_workload

from harness.run import executors, runner
from harness.spec import workload
from harness.store import records as hrecords

REPO = Path(__file__).resolve().parent.parent
SLOW = "[engines.numpy_dense]\nsleep_per_step = 0.25"


def _distributed() -> Any:
    return pytest.importorskip(
        "distributed", reason="the Dask executor needs `distributed` (requirements.lock)"
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Two worker processes, one task slot and one `node` each, as `dask worker --nthreads 1
    --resources node=1` would start them on two machines; loopback only, closed at the end."""
    distributed = _distributed()
    import dask

    # This scheduler lives in the test process, so it reads this (as the executor would set it).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, resources={"node": 1},
            host="127.0.0.1", scheduler_port=0, dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR,
        )  # fmt: skip
    try:
        yield cluster
    finally:
        cluster.close(timeout=30)


@pytest.fixture
def executor(cluster: Any) -> Iterator[executors.DaskExecutor]:
    ex = executors.DaskExecutor(cluster.scheduler_address)
    try:
        yield ex
    finally:
        ex.close()


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without what legitimately differs between two executions of one run: the clocks
    and the host (load, time of day, memory use)."""
    out = json.loads(json.dumps(record))
    for key in ("timing", "throughput", "resources"):
        out.pop(key)
    for point in out["curve"]:
        point.pop("train_s")
        point.pop("wall_s")
    for key in ("utc_time", "load_avg", "hostname"):
        out["environment"].pop(key)
    return out


def _placements(res: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted((res / "runs").rglob("*.events.jsonl")):
        events = [json.loads(line) for line in path.read_text().splitlines()]
        found += [e for e in events if e["event"] == "placement"]
    return found


@pytest.mark.slow
def test_dask_records_equal_local_ones_and_runs_never_share_a_node(
    tmp_path: Path, cluster: Any, executor: executors.DaskExecutor
) -> None:
    w = workload.load(write_workload(tmp_path, seeds="[0, 1, 2]", max_steps=12))
    local = runner.run_campaign(w, tmp_path / "local")
    submitted: list[dict[str, Any]] = []
    submit = executor.client.submit

    def spy(*args: Any, **kwargs: Any) -> Any:
        submitted.append(kwargs)
        return submit(*args, **kwargs)

    executor.client.submit = spy  # type: ignore[method-assign]
    remote = runner.run_campaign(w, tmp_path / "dask", executor=executor)

    assert sorted(o.state for o in remote) == sorted(o.state for o in local) == ["budget_spent"] * 3
    assert [s["resources"] for s in submitted] == [{"node": 1}] * 3, "every run asks for a whole node"
    mine, theirs = records(tmp_path / "local"), records(tmp_path / "dask")
    assert [r["run_id"] for r in mine] == [r["run_id"] for r in theirs]
    for a, b in zip(mine, theirs):
        assert _comparable(a) == _comparable(b)
        assert a["data"]["batch_stream_sha256"] == b["data"]["batch_stream_sha256"]
    # The event log came back too, with where and when each run ran.
    places = _placements(tmp_path / "dask")
    assert len(places) == 3
    workers = {p["worker"] for p in places}
    assert workers <= set(cluster.scheduler_info["workers"]) and all("127.0.0.1" in p for p in workers)
    for worker in workers:
        spans = sorted((p["started_unix"], p["stopped_unix"]) for p in places if p["worker"] == worker)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"two runs overlapped on {worker}: {spans}"
    for path in (tmp_path / "dask" / "runs").rglob("*.events.jsonl"):
        kinds = [json.loads(x)["event"] for x in path.read_text().splitlines()]
        assert kinds[0] == "run_start" and "run_stop" in kinds
    assert not (tmp_path / "dask" / "work").exists(), "no scratch folder on the client"
    # Nothing left in the workers' scratch space either.
    local_dirs = executor.client.run(lambda dask_worker: dask_worker.local_directory)
    assert not [p for d in local_dirs.values() for p in Path(d).glob("slidebench-*")]
    # The runs did not inherit what the Nanny adds to its workers' environment (malloc trimming).
    leftover = executor.client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"), workers=list(workers))
    assert set(leftover.values()) == {None}
    # A second invocation skips what is recorded, as a local one does.
    again = runner.run_campaign(w, tmp_path / "dask", executor=executor)
    assert [o.state for o in again] == ["skipped"] * 3


def _training_run_on(client: Any) -> tuple[str, Path] | None:
    """(worker address, events file) of a run that is training on one of the cluster's workers."""
    for addr, local in client.run(lambda dask_worker: dask_worker.local_directory).items():
        for events in Path(local).glob("slidebench-*/results-*/runs/*/*/*.events.jsonl"):
            with contextlib.suppress(FileNotFoundError):
                if "train_start" in events.read_text():
                    return addr, events
    return None


def _procs_naming(text: str) -> list[Any]:
    import psutil

    return [
        p
        for p in psutil.process_iter(["cmdline", "status"])
        if any(text in arg for arg in (p.info.get("cmdline") or ())) and p.info.get("status") != "zombie"
    ]


@pytest.mark.slow
def test_interrupted_campaign_stops_its_runs_on_the_nodes(
    tmp_path: Path, executor: executors.DaskExecutor
) -> None:
    w = workload.load(write_workload(tmp_path, seeds="[0, 1]", max_steps=200, engine_params=SLOW))
    res = tmp_path / "res"

    def interrupt_once_training() -> None:
        t0 = time.monotonic()
        while _training_run_on(executor.client) is None and time.monotonic() - t0 < 60:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C reaching the client

    # A shell that started the tests in the background hands them SIGINT ignored; a Ctrl-C must arrive.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    t = threading.Thread(target=interrupt_once_training)
    t.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.run_campaign(w, res, executor=executor)
    finally:
        t.join(timeout=90)
        signal.signal(signal.SIGINT, previous)
    assert records(res) == [], "no record for an interrupted run"
    # The runs' worker processes on the nodes were ended, not left training for nobody.
    local_dirs = list(executor.client.run(lambda dask_worker: dask_worker.local_directory).values())
    t0 = time.monotonic()
    while any(_procs_naming(d) for d in local_dirs) and time.monotonic() - t0 < 15:
        time.sleep(0.2)
    assert not any(_procs_naming(d) for d in local_dirs), "a run went on training on its node"


def test_workers_with_other_engine_sources_are_refused(
    tmp_path: Path, executor: executors.DaskExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = workload.load(write_workload(tmp_path, max_steps=2))
    # As if this checkout's numpy_dense sources differed from the nodes'.
    monkeypatch.setattr(executors, "build_id", lambda engine: f"{engine}-edited-here")
    with pytest.raises(executors.ExecutorUnavailable, match="other sources for numpy_dense"):
        runner.run_campaign(w, tmp_path / "res", executor=executor)
    assert records(tmp_path / "res") == []


@pytest.mark.slow
def test_cli_campaign_through_a_scheduler_address(tmp_path: Path, cluster: Any) -> None:
    path = write_workload(tmp_path, seeds="[0, 1]", max_steps=4)
    args = ["run", str(path), "--results-dir", str(tmp_path / "res"), "--executor", "dask"]
    proc = _cli([*args, "--scheduler", cluster.scheduler_address])
    assert proc.returncode == 0, proc.stderr
    assert "tw: 2 budget_spent" in proc.stdout
    assert "one per node (2 node(s) now)" in proc.stderr
    assert [r["status"]["state"] for r in records(tmp_path / "res")] == ["budget_spent"] * 2
    again = _cli(args, env={executors.SCHEDULER_ENV: cluster.scheduler_address})
    assert again.returncode == 0 and "tw: 2 skipped" in again.stdout, again.stderr


@pytest.mark.slow
def test_node_lost_mid_run_is_an_error_record_and_the_campaign_goes_on(
    tmp_path: Path, cluster: Any, executor: executors.DaskExecutor
) -> None:
    distributed = _distributed()
    w = workload.load(write_workload(tmp_path, seeds="[0, 1]", max_steps=16, engine_params=SLOW))
    res = tmp_path / "res"
    killed: list[tuple[str, Path]] = []
    problems: list[BaseException] = []

    def kill_a_node() -> None:
        # Kill -9 the Dask worker process of the first run seen training, as a node failure would.
        try:
            with distributed.Client(cluster.scheduler_address, timeout=30, set_as_default=False) as client:
                t0 = time.monotonic()
                while (found := _training_run_on(client)) is None:
                    assert time.monotonic() - t0 < 60, "no run started training"
                    time.sleep(0.1)
                addr, events = found
                pid = client.run(os.getpid, workers=[addr])[addr]
                os.kill(pid, signal.SIGKILL)
                killed.append((addr, events))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread, which fails with it
            problems.append(exc)

    t = threading.Thread(target=kill_a_node)
    t.start()
    try:
        out = runner.run_campaign(w, res, executor=executor)
    finally:
        t.join(timeout=90)
    assert not problems, problems
    assert killed
    states = sorted(o.state for o in out)
    assert states == ["budget_spent", "error"], [o.message for o in out]
    (lost,) = [o for o in out if o.state == "error"]
    rec = hrecords.read(lost.path)
    assert rec["status"]["state"] == "error" and "node was lost during the run" in rec["status"]["message"]
    assert "KilledWorker" in rec["status"]["message"] and killed[0][0] in rec["status"]["message"]
    assert rec["run_id"] == lost.run_id and rec["spec"]["seed"] in (0, 1)
    (done,) = [o for o in out if o.state == "budget_spent"]
    assert hrecords.read(done.path)["timing"]["steps"] == 16
    # The run's own worker process died with its node (parent-death signal), nothing trains on.
    scratch = killed[0][1].parents[4]
    t0 = time.monotonic()
    while _procs_naming(str(scratch)) and time.monotonic() - t0 < 10:
        time.sleep(0.2)
    assert _procs_naming(str(scratch)) == [], "the killed node's run went on"
    # Rerunning the campaign skips both recorded runs, the error included (as locally).
    again = runner.run_campaign(w, res, executor=executor)
    assert [o.state for o in again] == ["skipped", "skipped"]


# -- command line: errors, and the local path without distributed (no cluster needed) ---------


def _cli(
    args: list[str], prelude: str = "", timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`slidebench ARGS` in a fresh interpreter, after running `prelude`; no scheduler in its environment
    unless `env` sets one."""
    code = f"import sys\n{prelude}\nfrom harness.cli import main\nsys.exit(main(sys.argv[1:]))"
    environ = {k: v for k, v in os.environ.items() if k != executors.SCHEDULER_ENV}
    environ.update(PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env=environ, check=False,
    )  # fmt: skip


def _problem_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "ERROR" in line or "error:" in line]


def test_dask_executor_without_distributed_is_one_line_exit_2(tmp_path: Path) -> None:
    path = write_workload(tmp_path, max_steps=2)
    # None in sys.modules makes `import distributed` fail, as on a machine without it.
    proc = _cli(
        ["run", str(path), "--results-dir", str(tmp_path / "res"), "--executor", "dask",
         "--scheduler", "tcp://127.0.0.1:8786"],
        prelude="sys.modules['distributed'] = None",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "needs the Python package `distributed`" in proc.stderr
    assert not (tmp_path / "res" / "runs").exists()


def test_unreachable_scheduler_is_one_line_exit_2_naming_it(tmp_path: Path) -> None:
    _distributed()
    with socket.socket() as s:  # a port on loopback that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    path = write_workload(tmp_path, max_steps=2)
    t0 = time.monotonic()
    proc = _cli(
        ["run", str(path), "--results-dir", str(tmp_path / "res"), "--executor", "dask"],
        prelude="import harness.run.executors as e; e.CONNECT_TIMEOUT_S = 2",
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr  # no --scheduler and no $SLIDEBENCH_SCHEDULER
    assert "needs the scheduler's address" in proc.stderr
    args = ["run", str(path), "--results-dir", str(tmp_path / "res"), "--executor", "dask"]
    short = "import harness.run.executors as e; e.CONNECT_TIMEOUT_S = 2"
    proc = _cli([*args, "--scheduler", address], prelude=short, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert _problem_lines(proc.stderr) == lines and len(lines) == 1, proc.stderr
    assert f"Dask scheduler at {address} within 2 s" in lines[0]
    assert time.monotonic() - t0 < 45, "bounded by the connect timeout"
    assert not (tmp_path / "res" / "runs").exists()
    # The same address from the environment.
    env_proc = _cli(args, prelude=short, timeout=60, env={executors.SCHEDULER_ENV: address})
    assert env_proc.returncode == 2 and address in env_proc.stderr


def test_scheduler_option_needs_the_dask_executor() -> None:
    with (
        pytest.raises(executors.ExecutorUnavailable, match="--scheduler is for --executor dask"),
        executors.open_executor("local", "tcp://127.0.0.1:8786"),
    ):
        pass
    with (
        pytest.raises(executors.ExecutorUnavailable, match="unknown executor"),
        executors.open_executor("slurm"),
    ):
        pass


def test_local_campaign_does_not_import_distributed(tmp_path: Path) -> None:
    path = write_workload(tmp_path, max_steps=2, every_steps=2)
    check = (
        "import atexit\n"
        "atexit.register(lambda: print('IMPORTED', sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('dask', 'distributed'))))"
    )
    proc = _cli(["run", str(path), "--results-dir", str(tmp_path / "res")], prelude=check)
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED []" in proc.stdout, proc.stdout
    assert [r["status"]["state"] for r in records(tmp_path / "res")] == ["budget_spent"]
