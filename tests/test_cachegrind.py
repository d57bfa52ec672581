"""harness.counters.cachegrind: real valgrind output parsing, the host cache geometry and valgrind's rules,
and the simulated training slice on this machine (the fallback where perf has no hardware events)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.counters import cachegrind, counter_source, perf
from harness.counters.cachegrind import CacheGeometry, CacheLevel

FIXTURES = Path(__file__).parent / "fixtures" / "cachegrind"
REPO = Path(__file__).resolve().parent.parent
LINES_4MIB = (4 << 20) // 64

needs_valgrind = pytest.mark.skipif(
    shutil.which("valgrind") is None or shutil.which("vgdb") is None,
    reason="valgrind not installed (Debian: valgrind)",
)


# -- output files --------------------------------------------------------------------------------


def test_parse_real_cachegrind_output():
    c = cachegrind.parse_output((FIXTURES / "tiny.cachegrind.out").read_text())
    assert c.events["Ir"] == 692658
    # tiny.c writes 2 x 65,536 distinct lines; the second pass misses D1 again but hits the 32 MiB LL.
    assert 2 * LINES_4MIB <= c.events["D1mw"] < 2 * LINES_4MIB + 1000
    assert LINES_4MIB <= c.events["DLmw"] < LINES_4MIB + 1000
    assert c.desc["LL cache"].startswith("33554432 B, 64 B, 16-way")
    d = cachegrind.derived(c.events)
    assert d["D1_misses"] == c.events["D1mr"] + c.events["D1mw"]
    assert d["LL_misses"] == c.events["ILmr"] + c.events["DLmr"] + c.events["DLmw"]


def test_parse_real_callgrind_output_prefers_totals():
    c = cachegrind.parse_output((FIXTURES / "tiny.callgrind.out").read_text())
    assert c.events["Ir"] == 691649  # totals:, not summary: (691651)
    assert 2 * LINES_4MIB <= c.events["D1mw"] < 2 * LINES_4MIB + 1000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("summary: 1 2\n", "no 'events:' line"),
        ("events: Ir D1mr\n", "no 'summary:' or 'totals:'"),
        ("events: Ir\nsummary: 1 2 3\n", "line 2: 3 totals for 1 events"),
        ("events: Ir D1mr\nsummary: 1 x\n", "not integers"),
    ],
)
def test_parse_refuses_broken_files(text, message):
    with pytest.raises(ValueError, match=message):
        cachegrind.parse_output(text, "f.out")


def test_trailing_zero_totals_may_be_omitted():
    assert cachegrind.parse_output("events: Ir D1mr DLmr\nsummary: 7\n").events == {
        "Ir": 7,
        "D1mr": 0,
        "DLmr": 0,
    }


# -- geometry -----------------------------------------------------------------------------------


def test_lscpu_json_of_this_vm():
    geo = cachegrind.parse_lscpu_json((FIXTURES / "lscpu-epyc-vm.json").read_text())
    assert geo.D1 == CacheLevel(32768, 8, 64) and geo.I1 == CacheLevel(32768, 8, 64)
    assert geo.LL == CacheLevel(32 << 20, 16, 64)
    assert geo.valgrind_args() == ["--I1=32768,8,64", "--D1=32768,8,64", "--LL=33554432,16,64"]


def write_sysfs(root: Path, entries: list[tuple[int, str, str, int, int]]) -> Path:
    for i, (level, kind, size, ways, line) in enumerate(entries):
        d = root / f"index{i}"
        d.mkdir(parents=True)
        for name, value in (("level", level), ("type", kind), ("size", size), ("ways_of_associativity", ways),
                            ("coherency_line_size", line), ("number_of_sets", 64)):  # fmt: skip
            (d / name).write_text(f"{value}\n")
    return root


def test_sysfs_reading_picks_the_last_level(tmp_path):
    root = write_sysfs(
        tmp_path,
        [(1, "Data", "48K", 12, 64), (1, "Instruction", "32K", 8, 64), (2, "Unified", "2048K", 16, 64),
         (3, "Unified", "30720K", 20, 64)],
    )  # fmt: skip
    geo = cachegrind.read_sysfs(root)
    assert geo.D1 == CacheLevel(48 << 10, 12, 64)
    assert geo.LL == CacheLevel(30 << 20, 20, 64)


def test_sysfs_without_caches_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no cache index"):
        cachegrind.read_sysfs(tmp_path)


def test_this_machines_geometry_is_readable():
    geo = cachegrind.host_geometry()
    assert geo.D1.size >= 4096 and geo.LL.size >= geo.D1.size


def test_fit_keeps_a_valid_level():
    level = CacheLevel(32768, 8, 64)
    assert cachegrind.fit_level("D1", level) == (level, None)


def test_fit_changes_associativity_to_keep_the_size():
    # 30 MiB, 20-way: 24,576 sets, not a power of two; 15 ways keep 30 MiB with 32,768 sets.
    level, note = cachegrind.fit_level("LL", CacheLevel(30 << 20, 20, 64))
    assert level == CacheLevel(30 << 20, 15, 64)
    assert "20-way" in note and "15-way" in note


def test_fit_rounds_the_size_down_when_no_associativity_fits():
    level, note = cachegrind.fit_level("LL", CacheLevel(64 * 3 * 7, 7, 64))
    assert level == CacheLevel(64 * 2 * 7, 7, 64) and "2 sets" in note


def test_fit_refuses_what_valgrind_cannot_simulate():
    with pytest.raises(ValueError, match="line size 48"):
        cachegrind.fit_level("D1", CacheLevel(48 * 64, 8, 48))


def test_fit_valgrind_records_notes():
    geo = CacheGeometry(
        CacheLevel(32768, 8, 64), CacheLevel(49152, 12, 64), CacheLevel(30 << 20, 20, 64), "test"
    )
    fitted = cachegrind.fit_valgrind(geo)
    assert fitted.D1 == geo.D1  # 48 KiB 12-way: 64 sets, fine
    assert fitted.LL.assoc == 15 and len(fitted.notes) == 1
    assert fitted.to_dict()["notes"] == list(fitted.notes)


# -- the slice ----------------------------------------------------------------------------------


def test_slice_refuses_bad_requests(tmp_path):
    assert "must be >= 1" in cachegrind.run_slice(["python", "S", "O"], tmp_path, 0)["error"]
    missing = cachegrind.run_slice(["python", str(tmp_path / "nope.json"), "O"], tmp_path, 3)["error"]
    assert missing and "nope.json" in missing


def test_valgrind_region_outside_valgrind_fails_softly():
    region = cachegrind.ValgrindRegion(timeout_s=30)
    region.enable()  # vgdb finds no valgrind process: logged, not raised
    assert region.failed is not None and not region.active


FAKE_WORKER = r"""
import json, sys
from harness.counters.perf import TrainingRegion
spec, out = sys.argv[-2], sys.argv[-1]
json.load(open(spec))
region = TrainingRegion.from_env()
outside = bytearray(16 << 20)
buf = bytearray(4 << 20)
region.enable()
bytes(outside[::64])              # warm-up: 262,144 line reads, not counted
region.disable()
bytes(outside[::64])              # the evaluation that ends the warm-up: not counted
region.enable()
bytes(buf[::64])                  # the slice: 65,536 line reads
region.disable()
bytes(outside[::64])              # after the region: not counted
curve = [{"step": 0, "samples": 0}, {"step": 2, "samples": 128}, {"step": 6, "samples": 384}]
json.dump({"status": {"state": "budget_spent"}, "timing": {"steps": 6, "samples": 384}, "curve": curve}, open(out, "w"))
"""


def test_valgrind_region_skips_the_warmup_enable_without_calling_vgdb():
    region = cachegrind.ValgrindRegion.from_env({cachegrind.VALGRIND_SKIP_ENV: "1"})
    region.enable()  # skipped: vgdb is not run, so nothing can fail even outside valgrind
    assert region.enabled and not region.instrumented and region.failed is None
    region.disable()
    assert region.failed is None and region.toggles == 0


def test_slice_spec_copy_trains_warmup_plus_steps_without_target(smoke_spec_file, tmp_path):
    geo = cachegrind.parse_lscpu_json((FIXTURES / "lscpu-epyc-vm.json").read_text())
    argv, _out, record = cachegrind.slice_command(
        ["python", "-m", "harness.run.worker", str(smoke_spec_file), "real.json"],
        tmp_path,
        geo,
        steps=5,
        warmup=2,
    )
    assert argv[0] == "valgrind" and "--instr-atstart=no" in argv and "--LL=33554432,16,64" in argv
    assert argv[-1] == str(record) and record.parent == tmp_path
    doc = json.loads(Path(argv[-2]).read_text())
    assert doc["events"].startswith(str(tmp_path))
    from harness.spec.workload import RunSpec

    spec = RunSpec.from_dict(doc["spec"])
    assert (
        spec.training.max_steps == 7
        and spec.training.max_epochs is None
        and spec.training.max_seconds is None
    )
    assert spec.evaluation.every_steps == 2 and spec.evaluation.target_p1 is None
    assert spec.evaluation.subset == cachegrind.WARMUP_EVAL_SUBSET


@needs_valgrind
def test_slice_counts_only_the_training_region(tmp_path, monkeypatch):
    """The fallback on this machine, fast: a stand-in worker under callgrind, toggled through vgdb."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"spec": {}, "events": str(tmp_path / "real.events.jsonl")}))
    result = cachegrind.run_slice(
        [sys.executable, str(script), str(spec), str(tmp_path / "real.json")], tmp_path / "cg", 4
    )
    assert result["error"] is None, result["error"]
    assert result["samples"] == 384 - 128 and result["steps"] == 4 and result["warmup_steps"] == 2
    d1 = result["events"]["D1mr"]
    assert LINES_4MIB <= d1 < 3 * LINES_4MIB, d1  # ~65,536; the 786,432 reads outside are excluded
    assert result["per_sample"]["D1_misses"] == pytest.approx(result["events"]["D1_misses"] / 256)
    assert result["geometry"]["LL"]["size"] == cachegrind.fit_valgrind(cachegrind.host_geometry()).LL.size
    assert result["env"]["SLIDE_KERNEL"] == "avx2"
    assert not (tmp_path / "real.json").exists() and not (tmp_path / "real.events.jsonl").exists()


@pytest.fixture
def smoke_spec_file(tmp_path):
    """A runner-style SPEC.json: the smoke workload on numpy_dense, perf and cachegrind asked for."""
    import tomllib

    from harness.spec import workload

    raw = tomllib.loads((REPO / "workloads" / "smoke.toml").read_text())
    raw["matrix"]["engines"] = ["numpy_dense"]
    raw["counters"] = {"perf": True, "cachegrind": True, "cachegrind_steps": 3}
    spec = workload.parse(raw, "smoke").expand(threads=[1])[0]
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"spec": spec.to_dict(), "run_id": "t", "events": str(tmp_path / "ev.jsonl")}))
    return path


@needs_valgrind
@pytest.mark.slow
def test_fallback_through_the_real_worker(tmp_path, smoke_spec_file):
    """perf (software events) over the run + the cachegrind slice, as the runner will call it."""
    from harness.spec.workload import RunSpec

    spec_file, out = smoke_spec_file, tmp_path / "out.json"
    spec = RunSpec.from_dict(json.loads(spec_file.read_text())["spec"])
    argv = [sys.executable, "-m", "harness.run.worker", str(spec_file), str(out)]
    w = perf.wrap_command(argv, spec.counters, tmp_path / "work")
    env = {**os.environ, **w.env, "PYTHONPATH": str(REPO), "SLIDEBENCH_MAX_STEPS": "10"}
    res = subprocess.run(
        w.argv, pass_fds=w.pass_fds, env=env, check=False, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr[-2000:]
    record = json.loads(out.read_text())
    samples = record["timing"]["samples"]
    cfg = spec.to_dict()["counters"]
    sup = perf.probe()
    if not counter_source.needs_slice(cfg, w.support, samples):
        assert sup.hardware and w.collect(samples)["source"] == "perf"  # real counters: no simulation
        return
    c = counter_source.combine(w.collect(samples), counter_source.cachegrind_slice(argv, w.workdir, cfg))
    assert c["source"] == "cachegrind", c["reason"]
    assert c["cachegrind"]["error"] is None
    assert c["cachegrind"]["steps"] == 3 and c["cachegrind"]["samples"] == 3 * spec.training.batch_size
    assert c["events"]["D1_misses"] > 0 and c["per_sample"]["LL_misses"] is not None
    if sup.usable:
        assert c["cachegrind"]["perf"]["events"]["page-faults"] > 0
