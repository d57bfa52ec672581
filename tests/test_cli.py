"""The command line (harness/cli.py, harness/commands/): exit statuses, --version, list, --dry-run,
the one default results folder, argument checks, and system errors as one line.

Campaigns here use the numpy_dense reference engine on the synthetic `tiny` preset (about a second
a run), through the workload files tests/test_runner.py writes.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli
from harness.run import runner
from harness.spec import workload
from harness.store import results
from tests.test_runner import lock_held_elsewhere, records, write_workload

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_results_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLIDEBENCH_RESULTS", raising=False)


# -- failed runs make the command fail ---------------------------------------------------------


def test_run_exits_1_and_names_each_failed_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_workload(tmp_path, engine_params="[engines.numpy_dense]\nraise_at_step = 2")
    res = tmp_path / "res"
    assert cli.main(["run", str(path), "--results-dir", str(res)]) == 1
    err = capsys.readouterr().err
    (rec,) = records(res)
    record = results.record_path(res, "tw", "numpy_dense", rec["run_id"])
    line = next(x for x in err.splitlines() if x.startswith("FAILED"))
    assert line.startswith(f"FAILED tw/numpy_dense/{rec['run_id']}: error: RuntimeError")
    assert line.endswith(f"(record: {record})")
    # Run again: the recorded error is skipped, nothing failed in this invocation.
    assert cli.main(["run", str(path), "--results-dir", str(res)]) == 0


def test_reproduce_exits_1_when_a_run_diverged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.commands import run as run_cmd

    wdir = tmp_path / "workloads"
    wdir.mkdir()
    write_workload(wdir, name="ok", max_steps=3)
    write_workload(wdir, name="nan", engine_params="[engines.numpy_dense]\nnan_at_step = 2")
    (wdir / "suites.toml").write_text('[mini]\nworkloads = ["ok", "nan"]\n')
    monkeypatch.setattr(workload, "WORKLOADS_DIR", wdir)
    monkeypatch.setattr(run_cmd, "SUITES_FILE", wdir / "suites.toml")
    from harness.reporting import report
    from harness.run import scaling

    monkeypatch.setattr(scaling, "run_sweep", lambda *a, **k: None)
    monkeypatch.setattr(report, "render", lambda *a, **k: tmp_path / "report.md")
    assert cli.main(["reproduce", "--suite", "mini", "--results-dir", str(tmp_path / "res")]) == 1
    failed = [x for x in capsys.readouterr().err.splitlines() if x.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith("FAILED nan/numpy_dense/")
    assert ": diverged: loss became nan at step 2 (record: " in failed[0]


# -- --version, list, --dry-run ----------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"slidebench \d+\.\d+\.\d+\S*( \(git [0-9a-f]{12}(, modified)?\))?\n", out), out

    def missing(name: str) -> str:
        raise cli.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(cli.importlib.metadata, "version", missing)
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert cli.package_version() == declared


def test_list_all_and_each_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "workloads:" in out and "engines:" in out and "suites:" in out
    assert "  smoke: Smoke test: the synthetic `tiny` preset" in out
    assert "  numpy_dense: `numpy_dense`: the exact dense model" in out
    assert "  default: smoke, amazon670k, delicious200k" in out
    assert cli.main(["list", "engines"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [x.split(":")[0] for x in lines] == ["numpy_dense", "slide", "tf_dense", "tf_sampled"]
    code = (
        "import sys; from harness import cli; cli.main(['list']);"
        "sys.exit(any(m.split('.')[0] == 'tensorflow' or m.startswith('engines.') for m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    # The `engines` package itself (a docstring) is imported to locate the sources; no engine is.
    assert proc.returncode == 0, "list imported an engine or TensorFlow"


def test_dry_run_prints_the_matrix_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_workload(tmp_path, seeds="[0, 1]")
    res = tmp_path / "res"
    specs = workload.load(path).expand()
    done = specs[0]
    from harness.store import records

    record = records.build(records.TRAIN, done.run_id, done.to_dict(), records.BUDGET_SPENT, "")
    records.write(results.record_path(res, "tw", "numpy_dense", done.run_id), record)
    before = sorted(p for p in res.rglob("*"))
    assert cli.main(["run", str(path), "--results-dir", str(res), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tw: 2 run(s), 1 recorded, 1 to run; dry run, nothing started" in out
    row0 = next(x for x in out.splitlines() if done.run_id in x)
    row1 = next(x for x in out.splitlines() if specs[1].run_id in x)
    assert row0.split()[:3] == ["numpy_dense", "1", "0"] and "recorded, skipped" in row0
    assert row1.split()[:3] == ["numpy_dense", "1", "1"] and row1.rstrip().endswith("would run")
    assert sorted(p for p in res.rglob("*")) == before, "a dry run writes nothing"
    cli.main(["run", str(path), "--results-dir", str(res), "--dry-run", "--force"])
    assert "recorded, would run again (--force)" in capsys.readouterr().out


# -- one default results folder ----------------------------------------------------------------


COMMANDS = [["run", "smoke"], ["reproduce"], ["scaling", "smoke"], ["report"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_command_has_the_same_results_default(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.commands import common

    monkeypatch.chdir(tmp_path)  # not the repository: ./results must not be what is meant
    args = cli.build_parser().parse_args(argv)
    assert common.results_dir(args) == REPO / "results"
    monkeypatch.setenv("SLIDEBENCH_RESULTS", str(tmp_path / "elsewhere"))
    args = cli.build_parser().parse_args(argv)
    assert common.results_dir(args) == tmp_path / "elsewhere"
    args = cli.build_parser().parse_args([*argv, "--results-dir", "given"])
    assert common.results_dir(args) == Path("given")


@pytest.mark.parametrize("command", ["run", "reproduce", "scaling", "report"])
def test_results_default_is_documented_in_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "$SLIDEBENCH_RESULTS" in help_text and "repository's results/" in help_text


def test_report_from_another_folder_reads_the_repository_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import harness.reporting.report

    seen = []
    monkeypatch.setattr(harness.reporting.report, "render", lambda d, out=None: seen.append(d) or Path(d) / "report.md")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report"]) == 0
    assert seen == [REPO / "results"]


# -- argument checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "-inf", "soon"])
def test_timeout_must_be_a_positive_finite_number(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["run", "smoke"], ["reproduce"]):
        with pytest.raises(SystemExit) as info:
            cli.build_parser().parse_args([*command, f"--timeout={value}"])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "--timeout" in err and repr(value) in err
    assert cli.build_parser().parse_args(["run", "smoke", "--timeout", "2.5"]).timeout == 2.5


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "big"])
def test_scale_is_refused_before_any_work(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    # At argument parsing: `data twin` would otherwise fit a real set for seconds before refusing it.
    for command in (["data", "twin", "bibtex", "--out", "x"], ["data", "synth", "tiny"], ["data", "info", "tiny"]):
        with pytest.raises(SystemExit) as info:
            cli.build_parser().parse_args([*command, f"--scale={value}"])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "--scale" in err and repr(value) in err
    assert cli.build_parser().parse_args(["data", "synth", "tiny", "--scale", "0.5"]).scale == 0.5


# -- system errors: one line, no traceback -----------------------------------------------------


@pytest.mark.parametrize("argv", [["run", "WORKLOAD"], ["report"], ["reproduce", "--suite", "nope"]])
def test_results_dir_that_is_a_file_is_refused_up_front(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    argv = [str(write_workload(tmp_path)) if a == "WORKLOAD" else a for a in argv]
    rc = cli.main([*argv, "--results-dir", str(blocker)])
    err = capsys.readouterr().err
    if argv[0] == "reproduce":  # the unknown suite is the first thing wrong there
        assert rc == 2
        return
    assert rc == 1
    assert err.strip() == f"slidebench: error: the results folder is a file, not a folder ({blocker})"
    assert blocker.read_text() == "not a folder"


def test_full_disk_is_one_line_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full(path: Path, data: object) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # The worker (another process) writes its draft; the runner's final record write fails.
    monkeypatch.setattr(results, "write_atomic", full)
    path = write_workload(tmp_path, max_steps=2)
    res = tmp_path / "res"
    assert cli.main(["run", str(path), "--results-dir", str(res)]) == 1
    err = capsys.readouterr().err
    (spec,) = workload.load(path).expand()
    record = results.record_path(res, "tw", "numpy_dense", spec.run_id)
    assert f"slidebench: error: No space left on device ({record})" in err.splitlines()
    assert "Traceback" not in err


def test_busy_results_folder_is_refused_naming_the_holder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = tmp_path / "res"
    path = write_workload(tmp_path)
    with lock_held_elsewhere(res, "campaign held-by-test") as pid:
        assert cli.main(["run", str(path), "--results-dir", str(res)]) == 1
    err = capsys.readouterr().err
    assert f"is in use by another campaign (pid {pid}: campaign held-by-test)" in err
    assert not (res / "runs").exists()


def test_run_and_scaling_take_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.run import scaling

    held = []

    def sweep(*_a: object, results_dir: Path, **_k: object) -> list:
        lock = results_dir / results.LOCK_NAME
        held.append(lock.resolve() in results._held)
        return []

    monkeypatch.setattr(scaling, "run_sweep", sweep)
    monkeypatch.setattr(scaling, "summary_table", lambda records: "")
    assert cli.main(["scaling", "smoke", "--results-dir", str(tmp_path)]) == 0
    assert held == [True]
    assert runner  # run_campaign's own locking is exercised in tests/test_runner.py
