"""benchmarks/gpu_check.sh with the GPU faked (dry run: nothing built, installed or trained), and
the verdict of benchmarks/gpu_check_summary.py on records with and without GPU runs."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import gpu_check_summary
from harness.reporting.plots.records import load_runs

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
FIXTURES = ROOT / "tests" / "fixtures" / "records"
SH = shutil.which("sh") or "/bin/sh"


def _dry_run(tmp_path: Path, listed: bool, **settings: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "nvidia-smi"
    if listed:
        fake.write_text(f"#!{SH}\necho 'GPU 0: NVIDIA H200 (UUID: GPU-1234)'\n")
    else:
        fake.write_text(f"#!{SH}\necho 'No devices were found'\nexit 6\n")
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPU_CHECK_", "MAKEFLAGS"))}
    env.update(
        PATH=os.pathsep.join([str(bin_dir), env.get("PATH", "")]),
        GPU_CHECK_DRY_RUN="1",
        GPU_CHECK_RESULTS=str(tmp_path / "results"),
        OUT=str(tmp_path / "out"),
        **settings,
    )
    return subprocess.run([SH, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_dry_run_plans_the_whole_check(tmp_path):
    out = _dry_run(tmp_path, listed=True)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    steps = [
        "+ make install TF_VARIANT=cuda",
        "+ env SLIDEBENCH_REQUIRE_GPU=1",
        "-m gpu tests/test_tf_engines.py",
        # The generated workloads were loaded and validated.
        "amazon670k-gpu: batch 128, devices ['gpu', 'cpu'], target P@1 0.4048",  # amazon670k's derived one
        "amazon670k-gpu-b1024: batch 1024, devices ['gpu'], target P@1 0.3",
        "+ env SLIDEBENCH_MAX_STEPS=50 SLIDEBENCH_NO_EVAL=1",
        "amazon670k-gpu.toml --engines slide,tf_dense",
        "slidebench report --results-dir",
        "gpu_check_summary.py",
    ]
    positions = [text.index(s) for s in steps]  # every step, in this order
    assert positions == sorted(positions)
    assert text.count("SLIDEBENCH_MAX_STEPS=50") == 2  # batch 128 and batch 1,024
    assert not (tmp_path / "out").exists()  # a dry run copies nothing


def test_dry_run_gpu_only(tmp_path):
    out = _dry_run(tmp_path, listed=True, GPU_CHECK_CPU_RUNS="0", GPU_CHECK_STEPS="20")
    assert out.returncode == 0, out.stderr
    assert "amazon670k-gpu: batch 128, devices ['gpu'], target P@1 0.4048" in out.stdout
    assert "amazon670k-gpu.toml --engines tf_dense --threads" in out.stdout
    assert "--engines slide" not in out.stdout
    assert out.stdout.count("SLIDEBENCH_MAX_STEPS=20") == 2


def test_refuses_a_machine_without_a_gpu(tmp_path):
    out = _dry_run(tmp_path, listed=False)
    assert out.returncode == 2
    assert "lists no NVIDIA GPU" in out.stderr
    assert "make install" not in out.stdout


def _results(tmp_path: Path, gpu_batches: tuple[int, ...], wrong_device: bool = False) -> Path:
    """The fixture's delicious tf_dense records, plus a GPU copy per batch size given."""
    root = tmp_path / "results"
    src = FIXTURES / "runs" / "delicious" / "tf_dense"
    dst = root / "runs" / "delicious" / "tf_dense"
    shutil.copytree(src, dst)
    record = json.loads(next(iter(sorted(src.glob("*.json")))).read_text())
    for i, batch in enumerate(gpu_batches):
        r = copy.deepcopy(record)
        r["run_id"] = f"{i:x}" + r["run_id"][1:]
        r["spec"]["training"]["batch_size"] = batch
        r["spec"]["engine_params"] = {"device": "gpu"}
        r["engine_info"]["device_kind"] = "cpu" if wrong_device else "gpu"
        (dst / f"{r['run_id']}.json").write_text(json.dumps(r))
    return root


def test_summary_wants_tf_dense_on_the_gpu_at_both_batches(tmp_path):
    runs = [r for r in load_runs(_results(tmp_path, ())) if r.kind == "train"]
    assert gpu_check_summary.problems(runs) == [
        "no tf_dense record on the GPU at batch 128",
        "no tf_dense record on the GPU at batch 1024",
    ]


def test_summary_passes_gpu_records(tmp_path, capsys):
    root = _results(tmp_path, (128, 1024))
    assert gpu_check_summary.main([str(root)]) == 0
    out = capsys.readouterr().out
    assert "GPU check: ok" in out
    assert sum(" gpu " in line for line in out.splitlines()) == 2


def test_summary_catches_a_run_on_the_wrong_device(tmp_path):
    runs = load_runs(_results(tmp_path, (128, 1024), wrong_device=True))
    found = gpu_check_summary.problems(runs)
    assert len([p for p in found if "asked for device gpu, ran on cpu" in p]) == 2


@pytest.mark.parametrize("argv", [[]])
def test_summary_without_folders_shows_usage(argv, capsys):
    assert gpu_check_summary.main(argv) == 2
    assert "gpu_check_summary.py RESULTS_DIR" in capsys.readouterr().err
