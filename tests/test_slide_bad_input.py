"""Every kind of bad input to the native SLIDE engine raises ValueError with a clear message and
never crashes the process: arrays (dtype, shape, contiguity, CSR structure, sortedness, id ranges,
finiteness, batch sizes and widths), configuration, engine parameters, thread counts, weights,
prediction arguments, kernel names and model files. Running out of memory raises MemoryError.
What used to kill the process (a signal, an abort, libgomp's exit) is tried in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from engines.slide import SlideEngine, max_threads
from harness.datasets.sparse import Csr
from harness.spec.engine import Batch

try:
    from slide_helpers import engine, meta, native, native_config, needs_native
except ImportError:  # pragma: no cover
    from tests.slide_helpers import engine, meta, native, native_config, needs_native

ROOT = Path(__file__).resolve().parents[1]

pytestmark = needs_native

N_FEATURES, N_LABELS = 20, 10


SMALL = {"K": 2, "L": 4, "bucket_bits": 4, "bucket_capacity": 8, "min_active": 4}


def _config(**over) -> dict:
    cfg = native_config(N_FEATURES, N_LABELS, **SMALL)
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def net():
    return native().Network(_config())


def _good():
    x = {
        "indptr": np.array([0, 2, 3], np.int64),
        "indices": np.array([1, 5, 19], np.int32),
        "values": np.array([1.0, 0.5, 2.0], np.float32),
    }
    y = {"label_indptr": np.array([0, 1, 3], np.int64), "label_indices": np.array([0, 2, 9], np.int32)}
    return x, y


def test_good_batch_trains(net) -> None:
    x, y = _good()
    loss, active = net.train_batch(**x, **y)
    assert np.isfinite(loss) and active >= 4


BAD_BATCHES = [
    # (change to features or labels, message fragment)
    ({"indices": np.array([1, 5, 19], np.int64)}, "features.indices must have dtype int32"),
    ({"indptr": np.array([0, 2, 3], np.int32)}, "features.indptr must have dtype int64"),
    ({"values": np.array([1.0, 0.5, 2.0], np.float64)}, "features.values must have dtype float32"),
    ({"indices": [1, 5, 19]}, "features.indices must be a numpy array"),
    ({"indices": np.array([[1, 5, 19]], np.int32)}, "must be 1-dimensional"),
    ({"values": np.array([1.0, 9.0, 0.5, 9.0, 2.0, 9.0], np.float32)[::2]}, "C-contiguous"),
    ({"values": np.array([1.0, 0.5], np.float32)}, "features.values has 2 entries, indices has 3"),
    ({"indices": np.array([5, 1, 19], np.int32)}, "strictly increasing"),
    ({"indices": np.array([5, 5, 19], np.int32)}, "strictly increasing"),
    ({"indices": np.array([1, 5, 20], np.int32)}, "id 20 outside [0, 20)"),
    ({"indices": np.array([-1, 5, 19], np.int32)}, "id -1 outside"),
    ({"values": np.array([1.0, np.nan, 2.0], np.float32)}, "non-finite value"),
    ({"values": np.array([1.0, np.inf, 2.0], np.float32)}, "non-finite value"),
    ({"indptr": np.array([1, 2, 3], np.int64)}, "indptr[0] must be 0"),
    ({"indptr": np.array([0, 2, 4], np.int64)}, "must equal the number of indices"),
    ({"indptr": np.array([0, 3, 2, 3], np.int64)}, "non-decreasing"),
    (
        {
            "indptr": np.array([0], np.int64),
            "indices": np.zeros(0, np.int32),
            "values": np.zeros(0, np.float32),
        },
        "batch is empty",
    ),
    ({"indptr": np.zeros(0, np.int64)}, "at least one entry"),
    ({"label_indices": np.array([0, 2, 10], np.int32)}, "labels: row 1 has id 10 outside [0, 10)"),
    ({"label_indices": np.array([0, 9, 2], np.int32)}, "labels: row 1 ids must be strictly increasing"),
    ({"label_indices": np.array([0, 2, 9], np.int64)}, "labels.indices must have dtype int32"),
    ({"label_indptr": np.array([0, 1, 2, 3], np.int64)}, "labels: 3 rows, but features have 2"),
]


@pytest.mark.parametrize(("change", "fragment"), BAD_BATCHES)
def test_bad_batch_refused(net, change: dict, fragment: str) -> None:
    x, y = _good()
    for key, value in change.items():
        (y if key.startswith("label") else x)[key] = value
    step = net.step
    with pytest.raises(ValueError) as err:
        net.train_batch(**x, **y)
    assert fragment in str(err.value)
    assert net.step == step  # refused before any work


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"k": 0}, "k must be in 1..num_labels"),
        ({"k": N_LABELS + 1}, "k must be in 1..num_labels"),
        ({"mode": "fast"}, "mode must be 'exact' or 'lsh'"),
        ({"indices": np.array([1, 5, 25], np.int32)}, "id 25 outside"),
    ],
)
def test_bad_predict_refused(net, kwargs: dict, fragment: str) -> None:
    x, _ = _good()
    args = dict(x, k=3, mode="exact")
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        net.predict_topk(**args)
    assert fragment in str(err.value)


def _layer(**over) -> dict:
    out = dict(_config()["layers"][-1])
    out.update(over)
    return out


BAD_CONFIGS = [
    ({"num_features": 0}, "num_features must be >= 1"),
    ({"num_features": -3}, "num_features must be >= 1"),
    ({"num_features": 2**40}, "out of range"),
    ({"num_features": "20"}, "num_features has the wrong type"),
    ({"layers": []}, "at least the output layer"),
    ({"layers": "128"}, "'layers' must be a list"),
    ({"layers": [5]}, "layers[0] must be a dict"),
    ({"layers": [{"size": 0, "sampled": False}]}, "layers[0].size must be >= 1"),
    ({"layers": [_layer(K=0)]}, "layers[0]"),
    ({"layers": [_layer(L=0)]}, "layers[0]"),
    ({"layers": [_layer(bucket_bits=30)]}, "layers[0]"),
    ({"layers": [_layer(bucket_capacity=0)]}, "bucket_capacity must be >= 1"),
    ({"layers": [_layer(min_active=5, max_active=3)]}, "min_active (5) must not exceed max_active (3)"),
    ({"layers": [_layer(selection="threshold", threshold=9)]}, "threshold must be in 1..L"),
    ({"layers": [_layer(selection="topk")]}, "max_active must be > 0 for selection 'topk'"),
    ({"layers": [_layer(hash="md5")]}, "layers[0].hash"),
    ({"layers": [_layer(insertion="lifo")]}, "layers[0].insertion"),
    ({"layers": [_layer(colour="red")]}, "unknown key 'colour'"),
    ({"layers": [_layer(sampled="yes")]}, "sampled has the wrong type"),
    ({"layers": [{"size": 2**30, "sampled": False}, _layer()]}, "model too large"),
    (
        {"layers": [{"size": 8, "sampled": False, "K": 2}, _layer()]},
        "a dense layer ('sampled': False) takes only",
    ),
    ({"layers": [_layer(L=100, bucket_bits=24, bucket_capacity=2**16)]}, "hash tables would take"),
    ({"lr": -1.0}, "lr must be a finite number > 0"),
    ({"lr": float("nan")}, "lr must be a finite number > 0"),
    ({"beta1": 1.0}, "beta1 must be in [0, 1)"),
    ({"eps": 0.0}, "eps must be a finite number > 0"),
    ({"adam": "lazy"}, "adam must be 'sparse' or 'dense'"),
    ({"threads": 0}, "threads must be in 1.."),
    ({"threads": max_threads() + 1}, f"threads must be in 1..{max_threads()} (4 per logical CPU"),
    ({"rebuild_n0": 0}, "rebuild_n0 must be >= 1"),
    ({"rebuild_decay": -1.0}, "rebuild_decay must be in [0, 10]"),
    ({"rehash_m": -1}, "rehash_m must be >= 0"),
    ({"seed": -1}, "seed = -1 must be >= 0"),
    ({"colour": 1}, "unknown key 'colour'"),
]


@pytest.mark.parametrize(("over", "fragment"), BAD_CONFIGS)
def test_bad_config_refused(over: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as err:
        native().Network(_config(**over))
    assert fragment in str(err.value)


def test_bad_weights_and_files_refused(net, tmp_path) -> None:
    with pytest.raises(ValueError, match="layer index 5 out of range"):
        net.get_weights(5)
    with pytest.raises(ValueError, match=r"must be C-contiguous float32 of shape \(20, 8\)"):
        net.set_weights(0, np.zeros((8, 20), np.float32), np.zeros(8, np.float32))
    with pytest.raises(ValueError, match=r"threads must be in 1\.\."):
        net.set_threads(0)
    with pytest.raises(ValueError, match="cannot open model file"):
        native().Network.load(str(tmp_path / "absent.model"))
    bad = tmp_path / "bad.model"
    net.save(str(bad))
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(ValueError, match="truncated"):
        native().Network.load(str(bad))
    with pytest.raises(ValueError, match="unknown kernel"):
        native().select_kernel("sse9")


# ---- what used to crash, and other gaps ------------------------------------------------------------


def _run(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter (a crash there must not take pytest down with it)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _assert_clean(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"rc {proc.returncode} (negative: killed by a signal)\n{proc.stderr[-2000:]}"


def test_arrays_changed_by_another_thread_during_training() -> None:
    # The core runs without the GIL: it must work on copies, not on arrays another thread changes.
    proc = _run(
        """
        import threading, time
        import numpy as np
        from engines.slide import _native
        from tests.slide_helpers import native_config
        net = _native().Network(native_config(20, 10, K=2, L=4, bucket_bits=4, bucket_capacity=8, min_active=4))
        n = 64
        ptr = np.arange(0, 3 * n + 1, 3, dtype=np.int64)
        idx = np.tile(np.array([1, 5, 19], np.int32), n)
        val = np.ones(3 * n, np.float32)
        y_ptr, y_idx = np.arange(n + 1, dtype=np.int64), np.zeros(n, np.int32)
        stop = False
        def flip():  # a far out-of-range id, then a valid one again, as fast as Python goes
            while not stop:
                idx[0] = 2**30
                idx[0] = 1
        t = threading.Thread(target=flip)
        t.start()
        steps = refused = 0
        end = time.monotonic() + 1.0
        try:
            while time.monotonic() < end:
                try:
                    net.train_batch(ptr, idx, val, y_ptr, y_idx)
                    steps += 1
                except ValueError as exc:  # the copy caught the bad id: refused, fine
                    assert "outside [0, 20)" in str(exc), exc
                    refused += 1
        finally:
            stop = True
            t.join()
        print("steps", steps, "refused", refused)
        """
    )
    _assert_clean(proc)
    assert "steps" in proc.stdout


linux_only = pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_AS and /proc/self/status")


@linux_only
def test_allocation_failure_inside_openmp_region_is_memory_error() -> None:
    # Tiny tables but L = 65536: the per-thread buffer of the table build (64 x L codes, 16 MiB)
    # is allocated inside an OpenMP region. Address-space limits a little above the process's
    # current size make some allocation fail, before or inside the region: always MemoryError.
    proc = _run(
        """
        import resource
        from engines.slide import _native
        from tests.slide_helpers import native_config
        m = _native()
        def config(L):
            return native_config(8, 2, hidden=(), K=1, L=L, bucket_bits=1, bucket_capacity=1, min_active=1,
                                 wta_bin_size=2)
        m.Network(config(4))  # everything loaded and initialised before the limit
        def vm_size():
            with open("/proc/self/status") as fh:
                return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmSize"))
        errors = 0
        for mib in (12, 16, 20, 24):
            resource.setrlimit(resource.RLIMIT_AS, (vm_size() + (mib << 20), resource.RLIM_INFINITY))
            try:
                m.Network(config(65536))
            except MemoryError:
                errors += 1
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        print("memory errors", errors)
        """
    )
    _assert_clean(proc)
    assert "memory errors" in proc.stdout and "memory errors 0" not in proc.stdout


def test_too_many_threads_refused() -> None:
    bound = max_threads()
    assert bound == min(1024, 4 * (os.cpu_count() or 1))
    with pytest.raises(ValueError, match=rf"threads must be in 1\.\.{bound} \(4 per logical CPU"):
        SlideEngine({}).set_threads(bound + 1)
    with pytest.raises(ValueError, match=rf"threads must be in 1\.\.{bound} "):
        native().Network(_config(threads=bound + 1))
    net = native().Network(_config())
    with pytest.raises(ValueError, match=rf"threads must be in 1\.\.{bound} "):
        net.set_threads(bound + 1)
    assert net.threads == 1


@linux_only
@pytest.mark.skipif(max_threads() >= 512, reason="512 threads are allowed on a machine this large")
def test_512_threads_under_memory_limit_is_a_value_error() -> None:
    # libgomp exits the process when it cannot create a thread: the count must be refused first.
    proc = _run(
        """
        import resource
        from engines.slide import SlideEngine, _native
        from harness.spec.engine import ModelSpec, TrainMeta
        from tests.slide_helpers import native_config
        config = dict(native_config(20, 10), threads=512)
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, resource.RLIM_INFINITY))
        e = SlideEngine({})
        try:
            e.set_threads(512)
        except ValueError as exc:
            print("wrapper:", exc)
        e.prepare(TrainMeta(20, 10, 100, 8, ModelSpec((8,))))
        try:
            _native().Network(config)
        except ValueError as exc:
            print("binding:", exc)
        """
    )
    _assert_clean(proc)
    assert "wrapper: threads must be in 1.." in proc.stdout
    assert "binding: config: threads must be in 1.." in proc.stdout


def test_batch_wider_than_the_model_refused() -> None:
    m = meta(N_FEATURES, N_LABELS, hidden=(8,))
    e = engine({"min_active": N_LABELS}, m)
    x, y = _good()
    features = Csr(x["indptr"], x["indices"], x["values"], N_FEATURES + 5)
    labels = Csr(y["label_indptr"], y["label_indices"], None, N_LABELS)
    with pytest.raises(ValueError, match="features: 25 columns, but the network has num_features = 20"):
        e.fit_step(Batch(features, labels))
    with pytest.raises(ValueError, match="features: 25 columns, but the network has num_features = 20"):
        e.predict_topk(features, 3)
    features = Csr(x["indptr"], x["indices"], x["values"], N_FEATURES)
    wide_labels = Csr(y["label_indptr"], y["label_indices"], None, N_LABELS + 1)
    with pytest.raises(ValueError, match="labels: 11 columns, but the network has num_labels = 10"):
        e.fit_step(Batch(features, wide_labels))
    assert e._net.step == 0
    e.fit_step(Batch(features, labels))  # the declared widths are the model's: fine
    with pytest.raises(ValueError, match="features: 21 columns"):
        e._net.predict_scores(x["indptr"], x["indices"], x["values"], n_cols=N_FEATURES + 1)


def test_path_with_nul_byte_refused(net, tmp_path) -> None:
    target = tmp_path / "model"
    with pytest.raises(ValueError, match="path must not contain a NUL byte"):
        net.save(str(target) + "\0.bak")
    assert not target.exists()  # not silently written to the path before the NUL
    net.save(str(target))
    with pytest.raises(ValueError, match="path must not contain a NUL byte"):
        native().Network.load(str(target) + "\0.bak")


@pytest.mark.parametrize(("layer", "array", "value"), [(0, "weights", np.nan), (1, "bias", np.inf)])
def test_non_finite_weights_refused(layer: int, array: str, value: float) -> None:
    net = native().Network(_config())
    w, b = (a.copy() for a in net.get_weights(layer))
    (w if array == "weights" else b).flat[3] = value
    with pytest.raises(ValueError, match=rf"set_weights: layer {layer} {array} has a non-finite value"):
        net.set_weights(layer, w, b)
    kept_w, kept_b = net.get_weights(layer)
    assert np.all(np.isfinite(kept_w)) and np.all(np.isfinite(kept_b))  # nothing stored


def test_engine_set_weights_refuses_non_finite() -> None:
    e = engine({"min_active": N_LABELS}, meta(N_FEATURES, N_LABELS, hidden=(8,)))
    weights = e.get_weights()
    weights[2][0, 0] = -np.inf  # the output layer's weights
    with pytest.raises(ValueError, match="set_weights: layer 1 weights has a non-finite value"):
        e.set_weights(weights)


@pytest.mark.parametrize("name", ["", "AVX2", "sse9"])
def test_unknown_kernel_name_refused(name: str) -> None:
    before = native().kernel()
    with pytest.raises(ValueError, match=r"unknown kernel '.*' \(expected scalar, avx2, avx512 or auto\)"):
        native().select_kernel(name)
    assert native().kernel() == before


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"L": 2**40}, "parameter 'L' must be <= 65536"),
        ({"K": 2**40}, "parameter 'K' must be <= 1024"),
        ({"K": 64, "L": 65536}, "'K' * 'L' must be <= 1048576"),
        ({"min_active": -1}, "parameter 'min_active' must be >= 0"),
        ({"min_active": 2**40}, "parameter 'min_active' must be <= 2147483647"),
        ({"hidden_min_active": -5}, "parameter 'hidden_min_active' must be >= 0"),
        ({"max_active": 2**31}, "parameter 'max_active' must be <= 2147483647"),
        ({"rebuild_n0": 2**40}, "parameter 'rebuild_n0' must be <= 2147483647"),
        ({"rehash_m": 2**33}, "parameter 'rehash_m' must be <= 2147483647"),
        ({"bucket_capacity": 2**20}, "parameter 'bucket_capacity' must be <= 65536"),
        ({"wta_bin_size": 1}, "parameter 'wta_bin_size' must be in 2..256"),
        ({"wta_bin_size": 1000}, "parameter 'wta_bin_size' must be <= 256"),
    ],
)
def test_impossible_engine_params_refused_before_any_work(params: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as err:
        SlideEngine.check_params(params)
    assert fragment in str(err.value)
    assert str(err.value).startswith("engines.slide: ")


def _missing_cases() -> list[tuple[str, str]]:
    cfg = native_config(N_FEATURES, N_LABELS, **SMALL)
    return [("top", k) for k in cfg if k != "layers"] + [("output", k) for k in cfg["layers"][-1]]


@pytest.mark.parametrize(("where", "key"), _missing_cases())
def test_every_key_is_required(where: str, key: str) -> None:
    # The engine's defaults live only in DEFAULTS (engines/slide/__init__.py): the binding has none
    # to fall back on, so a config that lacks a key is refused, naming it.
    cfg = _config()
    cfg["layers"] = [dict(layer) for layer in cfg["layers"]]
    del (cfg if where == "top" else cfg["layers"][-1])[key]
    with pytest.raises(ValueError, match=rf"missing key '{key}' \(every setting is required"):
        native().Network(cfg)
