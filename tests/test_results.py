"""Records on disk: atomic writes, strict JSON, round trip, paths (harness/store/results.py, harness/store/records.py)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from harness.run import env
from harness.store import records, results


def minimal(state: str = "budget_spent") -> dict:
    return {
        "schema_version": records.SCHEMA_VERSION,
        "run_id": "abc",
        "kind": "train",
        "spec": {"workload": "w", "engine": "numpy_dense", "threads": 1, "seed": 0},
        "status": {"state": state, "message": ""},
        "curve": [{"step": 1, "loss": float("nan"), "p1": np.float32(0.5), "train_s": np.float64(1.5)}],
        "timing": {"steps": np.int64(3), "time_to_target_s": float("inf")},
    }


def test_round_trip_with_non_finite_and_numpy_values(tmp_path: Path) -> None:
    path = results.record_path(tmp_path, "w", "numpy_dense", "abc")
    assert path == tmp_path / "runs" / "w" / "numpy_dense" / "abc.json"
    records.write(path, minimal())
    text = path.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    back = records.read(path)
    assert back["curve"][0]["loss"] is None and back["timing"]["time_to_target_s"] is None
    assert back["curve"][0]["p1"] == 0.5 and back["timing"]["steps"] == 3
    assert isinstance(back["timing"]["steps"], int)


def test_refuses_incomplete_or_unknown_state(tmp_path: Path) -> None:
    rec = minimal()
    del rec["run_id"]
    with pytest.raises(ValueError, match="run_id"):
        records.write(tmp_path / "x.json", rec)
    with pytest.raises(ValueError, match="status.state"):
        records.write(tmp_path / "x.json", minimal(state="finished"))
    assert not list(tmp_path.iterdir()), "nothing written for a refused record"


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    records.write(path, minimal())
    before = path.read_text()
    bad = minimal()
    bad["curve"] = [object()]
    with pytest.raises(TypeError):
        records.write(path, bad)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_write_atomic_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.json"
    results.write_atomic(path, "one")
    results.write_atomic(path, "two")
    assert path.read_text() == "two" and len(os.listdir(path.parent)) == 1


def test_read_record_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        records.read(p)
    p.write_text("[1, 2]")
    with pytest.raises(ValueError, match="schema_version"):
        records.read(p)


def test_events_path_and_log(tmp_path: Path) -> None:
    rec = tmp_path / "id.json"
    assert results.events_path(rec).name == "id.events.jsonl"
    assert results.events_path(tmp_path / f"id{results.DRAFT_SUFFIX}").name == "id.events.jsonl"
    with results.EventLog(results.events_path(rec)) as log:
        log.emit("run_start", run_id="id")
        log.emit("eval_accuracy", step=3, p1=math.nan)
    lines = [json.loads(x) for x in results.events_path(rec).read_text().splitlines()]
    assert [x["event"] for x in lines] == ["run_start", "eval_accuracy"]
    assert lines[1]["p1"] is None and lines[1]["step"] == 3 and "utc" in lines[0] and "wall_s" in lines[0]


def test_environment_capture_has_the_schema_keys() -> None:
    e = env.capture({"engine": "x", "build_flags": "-O2", "compiler": "gcc 12"})
    for key in ("cpu_model", "cpu_flags", "cores", "kernel", "python", "numpy", "tensorflow", "native_build",
                "omp", "git_commit", "git_dirty", "utc_time", "load_avg"):  # fmt: skip
        assert key in e, key
    assert e["native_build"] == {"build_flags": "-O2", "compiler": "gcc 12"}
    assert env.capture(None)["native_build"] is None
    json.dumps(results.jsonable(e), allow_nan=False)


# -- paths built from names -------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["..", ".", "../x", "a/b", ".hidden", "", "a\\b", "é", "x" * 200, None])
@pytest.mark.parametrize("where", ["workload", "engine", "run_id"])
def test_record_path_refuses_names_that_are_not_one_plain_component(
    tmp_path: Path, bad: object, where: str
) -> None:
    names = {"workload": "w", "engine": "numpy_dense", "run_id": "abc"} | {where: bad}
    with pytest.raises(ValueError, match="cannot be used in a file name"):
        results.record_path(tmp_path, names["workload"], names["engine"], names["run_id"])
    assert not (tmp_path / "runs").exists()


def test_record_path_accepts_plain_names_and_stays_inside(tmp_path: Path) -> None:
    path = results.record_path(tmp_path, "amazon670k-full_2.x", "tf_dense", "0123abcd")
    assert path == tmp_path / "runs" / "amazon670k-full_2.x" / "tf_dense" / "0123abcd.json"
    # A symbolic link planted in runs/ cannot redirect records elsewhere either.
    (tmp_path / "runs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="outside"):
        results.run_dir(tmp_path, "link", "e")


# -- the results folder: default, lock, disk errors -------------------------------------------


def test_default_results_dir_is_env_or_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert results.default_results_dir() == Path(__file__).resolve().parent.parent / "results"
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path / "mine"))
    assert results.default_results_dir() == tmp_path / "mine"


def test_results_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError) as info:
        results.check_results_dir(f)
    assert info.value.filename == str(f)
    assert results.check_results_dir(tmp_path / "new") == tmp_path / "new"


def test_lock_refuses_a_second_holder_naming_the_first(tmp_path: Path) -> None:
    from tests.test_runner import lock_held_elsewhere

    with lock_held_elsewhere(tmp_path, "campaign held-by-test") as pid:  # noqa: SIM117 - pid needed below
        with pytest.raises(results.ResultsBusy, match=rf"pid {pid}: campaign held-by-test"):
            with results.locked(tmp_path, "second"):
                pytest.fail("a second holder got the lock")
    # The kernel releases the lock of a killed holder: the folder is usable again at once, and a
    # holder may take it again inside (a suite around its campaigns).
    with results.locked(tmp_path, "third"), results.locked(tmp_path, "nested in the same process"):
        assert (tmp_path / results.LOCK_NAME).read_text().startswith(f"pid {os.getpid()}: third")


def test_write_record_names_the_file_when_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    def full(path: Path, data: object) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(results, "write_atomic", full)
    path = tmp_path / "r.json"
    with pytest.raises(OSError) as info:
        records.write(path, minimal())
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
