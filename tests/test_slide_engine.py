"""SlideEngine: parameters, agreement with a dense numpy reference on every kernel path,
determinism, save/load, LSH retrieval recall, and the debug serialisation switch."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from engines.slide import DEFAULTS, SlideEngine
from harness.spec.engine import OptimizerSpec

try:  # tests/ is on sys.path under pytest's default import mode; the package path otherwise
    from slide_helpers import all_weights, engine, learnable, meta, native, needs_native
    from tf_numpy_ref import NumpyAdamModel
except ImportError:  # pragma: no cover
    from tests.slide_helpers import all_weights, engine, learnable, meta, native, needs_native
    from tests.tf_numpy_ref import NumpyAdamModel

# ---- parameters (no native module needed) --------------------------------------------------------


def test_check_params_fills_defaults() -> None:
    p = SlideEngine.check_params({})
    assert p == DEFAULTS


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"nope": 1}, "unknown parameter(s) nope"),
        ({"K": "6"}, "'K' must be int"),
        ({"hash": "md5"}, "'hash' must be one of"),
        ({"K": 0}, "'K' must be >= 1"),
        ({"bucket_bits": 30}, "'bucket_bits' must be in 1..24"),
        ({"min_active": 10, "max_active": 5}, "'min_active' must not exceed"),
        ({"selection": "topk"}, "needs 'max_active'"),
        ({"selection": "threshold", "threshold": 60}, "'threshold' (60) must not exceed 'L'"),
        ({"bf16": True}, "not implemented"),
        ({"adam": "lazy"}, "'adam' must be one of"),
        ({"inference": "fast"}, "'inference' must be one of"),
        ({"adam_state": "fp16"}, "'adam_state' must be one of"),
        ({"padding": "shared"}, "'padding' must be one of"),
    ],
)
def test_check_params_refuses(params: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as err:
        SlideEngine.check_params(params)
    assert fragment in str(err.value)


# ---- numerics against the dense reference ---------------------------------------------------------


def _reference_for(e: SlideEngine, opt: OptimizerSpec) -> NumpyAdamModel:
    # Layout: the dense hidden layer is input-major (features x hidden) like the reference's W1;
    # the output layer is neuron-major (labels x hidden) like its W_out.
    return NumpyAdamModel(all_weights(e), opt)


@needs_native
@pytest.mark.parametrize("adam, steps", [("sparse", 1), ("dense", 3)])
def test_matches_dense_reference_on_every_kernel(adam: str, steps: int) -> None:
    """Every output active: loss and weights after the step(s) equal the float64 dense model.

    Sparse Adam equals dense Adam on the first step only (afterwards untouched rows keep their
    momentum in the dense model); dense mode is checked over three steps. eps = 1e-4 keeps the
    first Adam step a smooth function of the gradient, so float32 rounding cannot flip a sign.
    """
    rng = np.random.default_rng(1)
    batches = [learnable(rng, 8, 40, 12, 5) for _ in range(steps)]
    opt = OptimizerSpec(lr=0.01, eps=1e-4)
    mod = native()
    original = mod.kernel()
    try:
        for kernel in mod.kernels_supported():
            mod.select_kernel(kernel)
            m = meta(40, 12, hidden=(16,), lr=opt.lr, eps=opt.eps)
            e = engine({"min_active": 12, "adam": adam, "init_std": 0.3}, m)
            ref = _reference_for(e, opt)
            for b in batches:
                loss = e.fit_step(b).loss
                ref_loss = ref.step(b.features, b.labels)
                assert loss == pytest.approx(ref_loss, rel=1e-5), kernel
            for got, want in zip(all_weights(e), ref.w):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * opt.lr, err_msg=kernel)
    finally:
        mod.select_kernel(original)


@needs_native
def test_kernel_env_var_selects_path() -> None:
    supported = native().kernels_supported()
    code = "from engines.slide import _native; print(_native().kernel())"
    for kernel in supported:
        env = dict(os.environ, SLIDE_KERNEL=kernel)
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == kernel
    # An unusable value is refused by the adapter before any work.
    e = SlideEngine({})
    os.environ["SLIDE_KERNEL"] = "sse9"
    try:
        with pytest.raises(ValueError, match="SLIDE_KERNEL='sse9'"):
            e.set_threads(1)
    finally:
        del os.environ["SLIDE_KERNEL"]


@needs_native
def test_hashing_follows_the_kernel_selection() -> None:
    """`kernel = "scalar"` (or SLIDE_KERNEL=scalar) makes the hashing loops scalar too, and the
    vector kernels bring the AVX2 hashing loops back; the tables are the same either way."""
    mod = native()
    original = mod.kernel()
    rng = np.random.default_rng(3)
    batch = learnable(rng, 16, 60, 400, 8)
    try:
        candidates = {}
        for kernel in mod.kernels_supported():
            e = engine({"kernel": kernel, "hash": "dwta", "min_active": 16, "init_std": 0.1}, meta(60, 400))
            assert mod.kernel() == kernel
            assert mod.hash_kernel() == ("scalar" if kernel == "scalar" else "avx2")
            assert e.info()["build"]["hash_kernel"] == mod.hash_kernel()
            candidates[kernel] = e._net.lsh_candidates(
                batch.features.indptr, batch.features.indices, batch.features.values
            )
        first = next(iter(candidates.values()))
        for got in candidates.values():  # DWTA codes are arg-max positions: no rounding to differ
            np.testing.assert_array_equal(got[0], first[0])
            np.testing.assert_array_equal(got[1], first[1])
    finally:
        mod.select_kernel(original)
    env = dict(os.environ, SLIDE_KERNEL="scalar")
    code = "from engines.slide import _native; print(_native().hash_kernel())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "scalar"


@needs_native
def test_info_reports_build() -> None:
    e = engine({}, meta(30, 10))
    info = e.info()
    build = info["build"]
    for key in ("compiler", "cxx_flags", "openmp", "kernels_compiled", "kernel_selected"):
        assert build[key]
    assert "scalar" in build["kernels_compiled"]
    assert info["threads"] == 1 and info["memory_bytes"] > 0


# ---- determinism, save/load ----------------------------------------------------------------------


def _train(threads: int, serialize: bool = False) -> tuple[list[float], list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(7)
    m = meta(120, 60, hidden=(16,), lr=0.01, seed=3)
    e = engine(
        {"min_active": 10, "K": 3, "L": 8, "rebuild_n0": 3, "rehash_m": 5, "debug_serialize": serialize},
        m,
        threads,
    )
    losses = [e.fit_step(learnable(rng, 32, 120, 60, 6)).loss for _ in range(12)]
    test = learnable(np.random.default_rng(99), 20, 120, 60, 6)
    return losses, all_weights(e), e.predict_topk(test.features, 5)


@needs_native
def test_single_thread_runs_are_bit_identical() -> None:
    a, b = _train(1), _train(1)
    assert a[0] == b[0]
    for x, y in zip(a[1], b[1]):
        assert np.array_equal(x, y)
    assert np.array_equal(a[2], b[2])


@needs_native
def test_threads_and_debug_serialize_do_not_change_results() -> None:
    """The race-free design gives the same bits at 2 threads, serialised or not."""
    one, two, ser = _train(1), _train(2), _train(2, serialize=True)
    for other in (two, ser):
        assert one[0] == other[0]
        for x, y in zip(one[1], other[1]):
            assert np.array_equal(x, y)


def _train_wide(threads: int, batch: int = 48, **params: Any) -> Any:
    """Layers of many phase-2 row blocks (64 rows each at this width), so every thread updates rows."""
    rng = np.random.default_rng(11)
    m = meta(5000, 3000, hidden=(24,), lr=0.01, seed=5)
    e = engine({"min_active": 64, "K": 3, "L": 6, "rebuild_n0": 2, **params}, m, threads)
    for _ in range(4):
        e.fit_step(learnable(rng, batch, 5000, 3000, 10))
    return e


@needs_native
@pytest.mark.parametrize(
    "params", [{}, {"padding": "batch"}, {"adam_state": "bf16"}, {"adam_state": "bf16", "adam": "dense"}]
)
def test_row_blocks_do_not_change_results(params: dict[str, Any]) -> None:
    """Phase 2 splits the batch and the rows among threads; 1 to 4 threads must give the same bits."""
    one = all_weights(_train_wide(1, **params))
    for threads in (2, 3, 4):
        for x, y in zip(one, all_weights(_train_wide(threads, **params))):
            assert np.array_equal(x, y)


@needs_native
def test_batches_smaller_than_the_thread_count_train_alike() -> None:
    """Phase 2 splits the batch into one part per thread: a batch of 1 or 3 samples on 4 threads."""
    for batch in (1, 3):
        one = all_weights(_train_wide(1, batch=batch))
        for x, y in zip(one, all_weights(_train_wide(4, batch=batch))):
            assert np.array_equal(x, y)


@needs_native
@pytest.mark.parametrize("n_rows", [1, 3, 5, 130])
def test_exact_predict_blocks_cover_every_row(n_rows: int) -> None:
    """Exact top-k splits rows into per-thread blocks; fewer rows than blocks must still work."""
    m = meta(300, 2000, hidden=(16,), lr=0.01)
    e = engine({"min_active": 32}, m, threads=4)
    e.fit_step(learnable(np.random.default_rng(0), 32, 300, 2000, 8))
    x = learnable(np.random.default_rng(1), n_rows, 300, 2000, 8).features
    top4 = e.predict_topk(x, 5)
    e.set_threads(1)
    assert np.array_equal(top4, e.predict_topk(x, 5))
    scores = e._net.predict_scores(x.indptr, x.indices, x.values)
    assert np.array_equal(top4[:, 0], np.argmax(scores, axis=1))


@needs_native
@pytest.mark.parametrize("threads", [1, 4])
def test_exact_scores_match_a_dense_forward_of_the_weights(threads: int) -> None:
    """predict_scores (blocks of rows, chunks of outputs) against numpy on the engine's own weights."""
    m = meta(300, 2000, hidden=(16,), lr=0.01)
    e = engine({"min_active": 32}, m, threads=threads)
    e.fit_step(learnable(np.random.default_rng(0), 32, 300, 2000, 8))
    x = learnable(np.random.default_rng(1), 130, 300, 2000, 8).features
    w1, b1, w_out, b_out = e.get_weights()
    dense_x = np.zeros((x.n_rows, x.n_cols), dtype=np.float64)
    for i in range(x.n_rows):
        dense_x[i, x.indices[x.indptr[i] : x.indptr[i + 1]]] = x.values[x.indptr[i] : x.indptr[i + 1]]
    hidden = np.maximum(dense_x @ w1 + b1, 0.0)
    want = hidden @ w_out.T + b_out
    got = e._net.predict_scores(x.indptr, x.indices, x.values)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # Into a caller's buffer: written in place (stale contents overwritten) and returned as is.
    buf = np.full(want.shape, np.nan, dtype=np.float32)
    assert e._net.predict_scores(x.indptr, x.indices, x.values, out=buf) is buf
    assert np.array_equal(buf, got)


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@needs_native
@pytest.mark.parametrize(
    "out",
    [
        np.zeros((10, 2000)),  # float64
        np.zeros((9, 2000), np.float32),  # too few rows
        np.zeros((2000, 10), np.float32).T,  # the right shape, not C-contiguous
        _read_only(np.zeros((10, 2000), np.float32)),
        [[0.0] * 2000] * 10,  # not an array
    ],
    ids=["float64", "short", "transposed", "read_only", "list"],
)
def test_exact_scores_refuse_a_buffer_they_cannot_write_whole(out) -> None:
    m = meta(300, 2000, hidden=(16,), lr=0.01)
    e = engine({"min_active": 32}, m, threads=2)
    x = learnable(np.random.default_rng(1), 10, 300, 2000, 8).features
    with pytest.raises(ValueError, match=r"out must be a C-contiguous, writeable float32 array of shape \(10, 2000\)"):
        e._net.predict_scores(x.indptr, x.indices, x.values, out=out)


@needs_native
def test_bf16_moments_learn_like_fp32_and_save_exactly(tmp_path) -> None:
    """BF16 moments (stochastic rounding) track the fp32 run; a saved model reloads bit-exactly."""
    m = meta(200, 50, hidden=(32,), lr=0.01)
    final = {}
    for state in ("fp32", "bf16"):
        rng = np.random.default_rng(0)
        e = engine({"min_active": 12, "K": 3, "L": 10, "adam_state": state}, m)
        losses = [e.fit_step(learnable(rng, 64, 200, 50, 8)).loss for _ in range(40)]
        final[state] = float(np.mean(losses[-5:]))
        assert final[state] < 0.7 * np.mean(losses[:5]), (state, losses)
    assert abs(final["bf16"] - final["fp32"]) < 0.1 * final["fp32"], final
    # Round trip with every output active (hash tables are rebuilt on load, not saved, so an
    # LSH-sampled next step could differ for that reason alone).
    rng = np.random.default_rng(0)
    e = engine({"min_active": 50, "adam_state": "bf16"}, m)
    for _ in range(5):
        e.fit_step(learnable(rng, 64, 200, 50, 8))
    path = tmp_path / "bf16.slide"
    e._net.save(str(path))
    back = native().Network.load(str(path))
    batch = learnable(np.random.default_rng(1), 16, 200, 50, 8)
    x, y = batch.features, batch.labels
    # One more step from the saved state and from the live one: identical only if the BF16
    # moments (and everything else) survived the round trip exactly.
    e._net.train_batch(x.indptr, x.indices, x.values, y.indptr, y.indices)
    back.train_batch(x.indptr, x.indices, x.values, y.indptr, y.indices)
    for i in range(len(back.layer_shapes())):
        for a, b in zip(e._net.get_weights(i), back.get_weights(i)):
            assert np.array_equal(a, b)


@needs_native
def test_batch_padding_shares_rows_across_the_batch() -> None:
    """One step: per-sample padding moves ~batch x min_active output rows, batch padding ~min_active.

    3,000 labels, 32 samples, min_active 200, and LSH disabled in effect (one table of 2^12 buckets
    holding 1 id each, so retrieval adds at most one neuron per sample). Per-sample padding draws
    32 x ~200 ids: ~3000 x (1 - e^(-6400/3000)) ~ 2,640 distinct rows. Shared padding: ~200 rows
    plus each sample's own labels and retrieved neuron (<= 32 x 3).
    """
    m = meta(400, 3000, hidden=(8,), lr=0.01)
    batch = learnable(np.random.default_rng(3), 32, 400, 3000, 6)
    changed = {}
    for padding in ("sample", "batch"):
        params = {
            "min_active": 200,
            "K": 2,
            "L": 1,
            "bucket_bits": 12,
            "bucket_capacity": 1,
            "padding": padding,
        }
        e = engine(params, m)
        before = e._net.get_weights(1)[0].copy()
        e.fit_step(batch)
        changed[padding] = int(np.sum(np.any(e._net.get_weights(1)[0] != before, axis=1)))
    assert changed["sample"] > 2000, changed
    assert 200 <= changed["batch"] <= 200 + 32 * 3, changed


@needs_native
def test_learns_and_predicts_shape(tmp_path) -> None:
    rng = np.random.default_rng(0)
    m = meta(200, 50, hidden=(32,), lr=0.01)
    e = engine({"min_active": 12, "K": 3, "L": 10}, m)
    losses = [e.fit_step(learnable(rng, 64, 200, 50, 8)).loss for _ in range(40)]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    test = learnable(np.random.default_rng(5), 200, 200, 50, 8)
    top = e.predict_topk(test.features, 5)
    assert top.dtype == np.int32 and top.shape == (200, 5)
    hits = np.mean([top[i, 0] in set(test.labels.row(i)) for i in range(200)])
    assert hits > 0.8
    assert all(len(set(r)) == 5 for r in top.tolist())
    top_lsh = e._net.predict_topk(test.features.indptr, test.features.indices, test.features.values, 5, "lsh")
    assert top_lsh.shape == (200, 5) and all(len(set(r)) == 5 for r in top_lsh.tolist())

    path = tmp_path / "model.slide"
    e._net.save(str(path))
    back = native().Network.load(str(path))
    assert back.step == e._net.step
    again = back.predict_topk(test.features.indptr, test.features.indices, test.features.values, 5, "exact")
    assert np.array_equal(again, top)
    path.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="not a SLIDE model"):
        native().Network.load(str(path))


# ---- LSH retrieval ----------------------------------------------------------------------------------


@needs_native
def test_lsh_retrieval_recall() -> None:
    """Neurons with planted high inner products are retrieved.

    2,000 random output neurons in 64 dims (no hidden layer: the raw dense input is the query).
    Each query is a random neuron's vector plus noise (cosine ~0.8 to it). With SimHash K=6, L=20,
    a table collides with that neuron with p ~ (1 - acos(0.8)/pi)^6 = 0.25, so the neuron is found
    in some table with p ~ 1 - 0.75^20 = 0.997, while a random neuron is retrieved in about 27% of
    queries (20 tables x 1/64). Stated threshold: the exact top-1 neuron is the LSH top-1 in >= 90%
    of queries, and LSH scores far fewer neurons than all of them.
    """
    rng = np.random.default_rng(2)
    n_labels, dim, n_q = 2000, 64, 300
    m = meta(dim, n_labels, hidden=())
    params = {
        "hash": "simhash",
        "K": 6,
        "L": 20,
        "bucket_bits": 6,
        "bucket_capacity": 128,
        "min_active": 0,
        "simhash_density": 1.0,
        "inference": "lsh",
    }
    e = engine(params, m)
    w = rng.standard_normal((n_labels, dim)).astype(np.float32)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    e._net.set_weights(0, w, np.zeros(n_labels, np.float32))
    target = rng.integers(n_labels, size=n_q)
    noise = rng.standard_normal((n_q, dim)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    q = (w[target] + 0.75 * noise).astype(np.float32)
    indptr = np.arange(0, (n_q + 1) * dim, dim, dtype=np.int64)
    indices = np.tile(np.arange(dim, dtype=np.int32), n_q)
    values = q.ravel()
    exact = e._net.predict_topk(indptr, indices, values, 1, "exact")[:, 0]
    lsh = e._net.predict_topk(indptr, indices, values, 1, "lsh")[:, 0]
    assert np.array_equal(exact, np.argmax(q @ w.T, axis=1))
    recall = float(np.mean(exact == lsh))
    assert recall >= 0.9, recall
