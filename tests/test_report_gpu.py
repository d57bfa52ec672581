"""The report of a workload with GPU records: devices in every label, the seed claim's headline plot."""

from __future__ import annotations

import copy
import html
import json
import shutil
from pathlib import Path

import pytest

from harness.reporting.plots import group, style
from harness.reporting.plots.records import load_runs, run_device
from harness.reporting.report import render

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "records"
GPU_NAME = "NVIDIA H200"
CPU_NAME = "Intel(R) Xeon(R) Gold 6226R CPU @ 2.90GHz"  # the fixtures' environment


def _gpu_twin(record: dict, speed: float) -> dict:
    """The same tf_dense run, as if on a GPU `speed` times faster (train clock and throughput)."""
    r = copy.deepcopy(record)
    r["run_id"] = "9" + r["run_id"][1:]
    r["spec"]["engine_params"] = {**r["spec"]["engine_params"], "device": "gpu"}
    r["engine_info"].update(
        device="/job:localhost/replica:0/task:0/device:GPU:0",
        device_kind="gpu",
        gpu={"name": GPU_NAME, "compute_capability": "9.0", "memory_peak_mb": 2100.0},
        tf_build={"is_cuda_build": True, "cuda_version": "12.5.1", "cudnn_version": "9"},
    )
    for point in r["curve"]:
        point["train_s"] /= speed
    if r["timing"].get("time_to_target_s") is not None:
        r["timing"]["time_to_target_s"] /= speed
    r["timing"]["train_s"] /= speed
    r["throughput"]["samples_per_s"] *= speed
    return r


@pytest.fixture(scope="module")
def gpu_results(tmp_path_factory) -> Path:
    """The fixture campaign's delicious records plus a GPU twin of each tf_dense run (10x faster)."""
    root = tmp_path_factory.mktemp("gpu") / "results"
    shutil.copytree(FIXTURES / "runs" / "delicious", root / "runs" / "delicious")
    for path in sorted((root / "runs" / "delicious" / "tf_dense").glob("*.json")):
        twin = _gpu_twin(json.loads(path.read_text()), 10.0)
        (path.parent / f"{twin['run_id']}.json").write_text(json.dumps(twin))
    return root


def test_run_device_from_engine_info_or_spec():
    assert run_device({"device_kind": "gpu"}, {}) == "gpu"
    assert run_device({"device": "/job:localhost/replica:0/task:0/device:GPU:0"}, {}) == "gpu"
    assert run_device({"device": "/job:localhost/replica:0/task:0/device:CPU:0"}, {}) == "cpu"
    assert run_device({}, {"engine_params": {"device": "gpu"}}) == "gpu"  # e.g. a run that failed early
    assert run_device({}, {"engine_params": {"device": "auto"}}) == "cpu"
    assert run_device({"build": {"kernel": "avx2"}}, {"engine_params": {}}) == "cpu"  # slide


def test_labels_name_the_device_only_where_a_workload_has_gpu_records(gpu_results):
    runs = load_runs(gpu_results)
    labels = set(group(runs)["delicious"])
    assert labels == {"slide[cpu]", "tf_dense[cpu]", "tf_dense[gpu]", "tf_sampled[cpu]"}
    assert all(len(rs) == 3 for rs in group(runs)["delicious"].values())
    # The CPU-only fixture campaign keeps its plain labels.
    train = [r for r in load_runs(FIXTURES) if r.kind == "train"]
    assert set(group(train)["delicious"]) == {"slide", "tf_dense", "tf_sampled"}
    assert style.engine_order(labels) == ["slide[cpu]", "tf_dense[gpu]", "tf_dense[cpu]", "tf_sampled[cpu]"]
    assert style.parse_label("tf_dense[gpu]@4") == ("tf_dense", "gpu", 4)
    assert style.base_engine("tf_dense[gpu]@4") == "tf_dense"


def test_report_leads_with_slide_on_cpu_against_tf_dense_on_gpu(gpu_results):
    report = render(gpu_results, workloads_dir=None).read_text(encoding="utf-8")
    plots = gpu_results / "plots"
    images = [line for line in report.splitlines() if line.startswith("![")]
    assert "delicious-seed-comparison.png" in images[0], images
    svg = html.unescape((plots / "delicious-seed-comparison.svg").read_text(encoding="utf-8"))
    # The legend names engine, device and the hardware; only the seed claim's two series are drawn.
    assert f"slide on CPU ({CPU_NAME}, 16 thread(s)) (3 seeds)" in svg
    assert f"tf_dense on GPU ({GPU_NAME}) (3 seeds)" in svg
    assert "tf_dense on CPU" not in svg and "tf_sampled on" not in svg
    # Throughput panel: every engine on every device.
    for label in ("slide[cpu]", "tf_dense[gpu]", "tf_dense[cpu]", "tf_sampled[cpu]"):
        assert label in svg
    # Tables: the reference is tf_dense on the GPU. The fixtures' slide median time to target is
    # 41.2 s and tf_dense's 130.4 s, so against the 10x faster GPU twin slide's speedup is 0.32x.
    slide_row = next(line for line in report.splitlines() if line.startswith("| slide[cpu] |"))
    assert "0.32×" in slide_row
    assert "the reference is tf_dense on the GPU" in report


def test_cpu_only_campaign_has_no_seed_comparison(tmp_path):
    shutil.copytree(FIXTURES / "runs" / "delicious", tmp_path / "runs" / "delicious")
    render(tmp_path, workloads_dir=None)
    assert not (tmp_path / "plots" / "delicious-seed-comparison.png").exists()
    assert (tmp_path / "plots" / "delicious-time-to-accuracy.png").exists()
