"""The asv suite's own plumbing (benchmarks/bench_*.py): discovery, fixtures, thread checks.

Timings are not asserted here (they are asv's job); these tests check what would silently
mislabel a measurement: a thread count not in effect, a shared setup_cache, a scaling benchmark
that drifted from the scaling-check workload.
"""

from __future__ import annotations

import importlib
import inspect
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench_common
from harness.run.scaling import core_count

ROOT = Path(__file__).resolve().parent.parent
MODULES = ("bench_train", "bench_slide", "bench_quality", "bench_data")


@pytest.fixture(autouse=True)
def _keep_thread_env(monkeypatch):
    """build_fixture sets the thread variables of this process: restore them after each test."""
    from harness.run.worker import thread_env

    for name in thread_env(1):
        monkeypatch.setenv(name, "1")


def _benchmark_classes():
    for name in MODULES:
        module = importlib.import_module(f"benchmarks.{name}")
        for attr, obj in vars(module).items():
            ours = inspect.isclass(obj) and not attr.startswith("_") and obj.__module__ == module.__name__
            if ours and any(m.startswith(("time_", "peakmem_", "track_")) for m in dir(obj)):
                yield obj


def test_every_setup_cache_is_its_own():
    # asv keys setup_cache results by module and source line: two classes sharing one function
    # would share one cache run, and the second shape's data would never be prepared up front.
    keys = {}
    for cls in _benchmark_classes():
        fn = getattr(cls, "setup_cache", None)
        if fn is None:
            continue
        key = (fn.__module__, inspect.getsourcelines(fn)[1])
        assert key not in keys, f"{cls.__name__} shares setup_cache with {keys[key]}"
        keys[key] = cls.__name__
    assert len(keys) >= 7


def test_benchmark_params_match_names():
    for cls in _benchmark_classes():
        params = getattr(cls, "params", [])
        names = getattr(cls, "param_names", [])
        assert len(params) == len(names), cls.__name__


def test_too_many_threads_is_a_skip():
    bench_common.skip_if_too_many_threads(1)
    with pytest.raises(NotImplementedError, match="core"):
        bench_common.skip_if_too_many_threads(core_count() + 1)


def test_fixture_is_built_once_and_advances(monkeypatch):
    monkeypatch.setitem(
        bench_common.SHAPES, "t", bench_common.Shape("t", "tiny", 1.0, hidden=16, batch_size=64)
    )
    monkeypatch.setattr(bench_common, "_FIXTURES", {})
    first = bench_common.engine_fixture("t", "numpy_dense", 1)
    assert bench_common.engine_fixture("t", "numpy_dense", 1) is first
    assert first.loop.clock.step == bench_common.WARMUP_STEPS
    loss = first.step()
    assert first.loop.clock.step == bench_common.WARMUP_STEPS + 1 and math.isfinite(loss)
    assert first.test_features.n_rows == 256 and len(first.batches) == 2000 // 64 + 1


def test_thread_count_not_in_effect_fails(monkeypatch):
    from engines.reference import NumpyDenseEngine
    from harness.spec import registry

    class Stubborn(NumpyDenseEngine):
        def set_threads(self, n: int) -> int:
            super().set_threads(n)
            return n + 1

    monkeypatch.setitem(
        bench_common.SHAPES, "t", bench_common.Shape("t", "tiny", 1.0, hidden=16, batch_size=64)
    )
    real = registry.engine_class
    monkeypatch.setattr(registry, "engine_class", lambda name: Stubborn if name == "stubborn" else real(name))
    with pytest.raises(RuntimeError, match="asked for 1 threads"):
        bench_common.build_fixture("t", "stubborn", 1)


def test_scaling_benchmark_matches_scaling_check_workload():
    from benchmarks.bench_quality import scaling_spec
    from harness.spec import workload

    wl = workload.load(ROOT / "workloads" / "scaling-check.toml")
    spec = scaling_spec("slide")
    assert spec.dataset == wl.dataset
    assert spec.model == wl.model
    assert spec.training.batch_size == wl.training.batch_size and spec.training.lr == wl.training.lr
    # The workload's slide parameters differ from the defaults only where the benchmark agrees.
    assert spec.engine_params == wl.params_for("slide")
    assert type(spec).from_dict(spec.to_dict()) == spec


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("asv", path=str(Path(sys.executable).parent)) is None, reason="asv not installed"
)
def test_asv_check_passes():
    asv = shutil.which("asv", path=str(Path(sys.executable).parent))
    res = subprocess.run(
        [asv, "check", "--python=same"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No problems found" in res.stdout
