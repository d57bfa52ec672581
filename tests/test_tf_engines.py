"""TF baselines (tf_dense, tf_sampled): parameters, exactness against numpy, contract, learning."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines.tf import TFDenseEngine, TFSampledEngine
from harness.datasets.sparse import Csr
from harness.spec.engine import Batch, ModelSpec, OptimizerSpec, TrainMeta

try:
    from tf_numpy_ref import NumpyAdamModel, dense, random_csr
except ImportError:  # tests/ imported as a package
    from tests.tf_numpy_ref import NumpyAdamModel, dense, random_csr

ROOT = Path(__file__).resolve().parents[1]
# Skip without importing TF: the engine sets its allocator/oneDNN switches before TF's import.
if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("TensorFlow not installed", allow_module_level=True)
pytestmark = pytest.mark.tf
THREADS = 2  # TF's pools are process-wide: every test in this process asks for the same count


def make(cls, meta: TrainMeta, **params):
    engine = cls(params)
    assert engine.set_threads(THREADS) >= 1
    engine.prepare(meta)
    return engine


def small_meta(hidden=(8,), features=40, labels=25, lr=0.01, seed=0) -> TrainMeta:
    return TrainMeta(
        num_features=features,
        num_labels=labels,
        num_train=64,
        batch_size=16,
        model=ModelSpec(hidden=tuple(hidden)),
        optimizer=OptimizerSpec(lr=lr),
        seed=seed,
        label_counts=np.arange(labels) % 7,  # for tf_sampled's default sampler, "unigram"
    )


def small_batch(meta: TrainMeta, seed=1, n=16) -> Batch:
    rng = np.random.default_rng(seed)
    f = random_csr(rng, n, meta.num_features, 4, values=True)
    y = random_csr(rng, n, meta.num_labels, 2, values=None)
    return Batch(f, y)


# ---- parameters ---------------------------------------------------------------------------------


def test_check_params_defaults_and_refusals():
    p = TFSampledEngine.check_params({})
    assert p["num_sampled"] == 4096 and p["remove_accidental_hits"] is True and p["xla"] is False
    assert p["sampled_loss"] == "per_sample"
    assert TFDenseEngine.check_params({"xla": True})["xla"] is True
    with pytest.raises(ValueError, match="num_sampled"):
        TFDenseEngine.check_params({"num_sampled": 10})  # a sampled-only key
    with pytest.raises(ValueError, match="'xla'"):
        TFDenseEngine.check_params({"xla": "yes"})
    with pytest.raises(ValueError, match="num_sampled"):
        TFSampledEngine.check_params({"num_sampled": 0})
    with pytest.raises(ValueError, match="sampler"):
        TFSampledEngine.check_params({"sampler": "zipf"})
    with pytest.raises(ValueError, match="init"):
        TFDenseEngine.check_params({"init": "he"})
    with pytest.raises(ValueError, match="remove_accidental_hits"):
        TFSampledEngine.check_params({"xla": True, "sampled_loss": "tf_nn"})
    with pytest.raises(ValueError, match="sampled_loss.*per_sample.*got 'pairs'"):
        TFSampledEngine.check_params({"sampled_loss": "pairs"})
    assert p["candidates"] == "batch" and p["sampler"] == "unigram" and p["unigram_power"] == 0.75
    with pytest.raises(ValueError, match="'candidates' must be one of batch, sample, got 'row'"):
        TFSampledEngine.check_params({"candidates": "row"})
    with pytest.raises(ValueError, match="'candidates' = 'sample' needs 'sampled_loss' = 'per_sample'.*'tf_nn'"):
        TFSampledEngine.check_params({"candidates": "sample", "sampled_loss": "tf_nn", "sampler": "uniform"})
    with pytest.raises(ValueError, match="'candidates' = 'sample' needs.*'unigram'"):
        TFSampledEngine.check_params({"candidates": "sample"})
    with pytest.raises(ValueError, match="'unigram_power' must be in \\[0, 1\\], got 1.5"):
        TFSampledEngine.check_params({"sampler": "unigram", "unigram_power": 1.5})
    with pytest.raises(ValueError, match="eval_chunk"):
        TFDenseEngine.check_params({"eval_chunk": -1})


def test_check_params_does_not_import_tensorflow():
    code = (
        "import sys; from harness.spec.registry import engine_class\n"
        "for n in ('tf_dense', 'tf_sampled'): engine_class(n).check_params({})\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


# ---- exactness of tf_dense against a numpy reference -------------------------------------------


@pytest.mark.parametrize("hidden,xla", [((8,), False), ((8, 6), False), ((8, 6), True)])
def test_dense_steps_match_numpy_reference(hidden, xla):
    meta = small_meta(hidden=hidden)
    engine = make(TFDenseEngine, meta, xla=xla)
    rng = np.random.default_rng(7)
    # Non-trivial start: random biases too, so every term of the update is exercised.
    start = [(rng.standard_normal(w.shape) * 0.3).astype(np.float32) for w in engine.get_weights()]
    engine.set_weights(start)
    ref = NumpyAdamModel(start, meta.optimizer)
    batches = [small_batch(meta, seed=s) for s in (1, 2, 3)]
    # A sample with no labels must contribute zero loss and zero gradient.
    b0 = batches[0]
    ind = b0.labels.indptr.copy()
    removed = ind[1] - ind[0]
    ind[1:] -= removed
    batches[0] = Batch(b0.features, Csr(ind, b0.labels.indices[removed:], None, b0.labels.n_cols))
    for batch in batches:  # three steps: bias correction with t = 1, 2, 3
        loss = engine.fit_step(batch).loss
        ref_loss = ref.step(batch.features, batch.labels)
        assert loss == pytest.approx(ref_loss, rel=1e-5, abs=1e-6)
    for got, want in zip(engine.get_weights(), ref.w):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def test_set_weights_round_trip_and_refusals():
    meta = small_meta()
    engine = make(TFDenseEngine, meta)
    w = engine.get_weights()
    assert [a.shape for a in w] == [(40, 8), (8,), (25, 8), (25,)]
    assert all(a.dtype == np.float32 for a in w)
    new = [a + 1.0 for a in w]
    engine.set_weights(new)
    for a, b in zip(engine.get_weights(), new):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="shape"):
        engine.set_weights([w[0].T, w[1], w[2], w[3]])
    with pytest.raises(ValueError, match="expected 4"):
        engine.set_weights(w[:3])
    bad = [a.copy() for a in w]
    bad[1][0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        engine.set_weights(bad)


def test_initialisation_is_seeded():
    a = make(TFDenseEngine, small_meta(seed=3)).get_weights()
    b = make(TFDenseEngine, small_meta(seed=3)).get_weights()
    c = make(TFDenseEngine, small_meta(seed=4)).get_weights()
    np.testing.assert_array_equal(a[0], b[0])
    # prepare's warm-up step (traces the graphs) must leave the initial weights untouched.
    from engines.tf.graph import initial_weights

    want = initial_weights(40, 25, (8,), "normal", 0.01, seed=3)
    for engine_weights in (
        a,
        make(TFDenseEngine, small_meta(seed=3), xla=True).get_weights(),
        make(TFSampledEngine, small_meta(seed=3), num_sampled=5).get_weights(),
    ):
        for got, ref in zip(engine_weights, want):
            np.testing.assert_array_equal(got, ref)
    assert not np.array_equal(a[0], c[0])
    assert abs(float(a[2].std()) - 0.01) < 0.003  # N(0, 0.01^2) by default
    assert not a[1].any() and not a[3].any()  # biases start at zero


# ---- predict_topk --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [TFDenseEngine, TFSampledEngine])
def test_predict_topk_exact_best_first(cls):
    meta = small_meta()
    params = {"num_sampled": 10} if cls is TFSampledEngine else {}
    engine = make(cls, meta, **params)
    rng = np.random.default_rng(5)
    engine.set_weights([(rng.standard_normal(w.shape)).astype(np.float32) for w in engine.get_weights()])
    features = small_batch(meta, seed=9, n=23).features
    top = engine.predict_topk(features, 5)
    assert top.dtype == np.int32 and top.shape == (23, 5)
    w1, b1, w2, b2 = [a.astype(np.float64) for a in engine.get_weights()]
    scores = np.maximum(dense(features) @ w1 + b1, 0) @ w2.T + b2
    picked = np.take_along_axis(scores, top.astype(np.int64), axis=1)
    assert np.all(np.diff(picked, axis=1) <= 1e-6), "not best first"
    kth_best = -np.sort(-scores, axis=1)[:, 4]
    np.testing.assert_allclose(picked[:, 4], kth_best, rtol=1e-5, atol=1e-5)
    # Chunked scoring gives the same answer as one chunk.
    chunked = cls({**params, "eval_chunk": 4})
    chunked.set_threads(THREADS)
    chunked.prepare(meta)
    chunked.set_weights(engine.get_weights())
    np.testing.assert_array_equal(chunked.predict_topk(features, 5), top)
    with pytest.raises(ValueError, match="k must be"):
        engine.predict_topk(features, meta.num_labels + 1)


def test_bad_input_refused():
    meta = small_meta()
    engine = TFDenseEngine({})
    with pytest.raises(RuntimeError, match="prepare"):
        engine.fit_step(small_batch(meta))
    engine.set_threads(THREADS)
    engine.prepare(meta)
    b = small_batch(meta)
    wide = Batch(Csr(b.features.indptr, b.features.indices, b.features.values, 99), b.labels)
    with pytest.raises(ValueError, match="feature columns"):
        engine.fit_step(wide)
    bad_ids = b.labels.indices.copy()
    bad_ids[-1] = meta.num_labels  # out of range, but Csr itself does not know n_cols limits
    with pytest.raises(ValueError, match="label id out of range"):
        engine.fit_step(Batch(b.features, Csr(b.labels.indptr, bad_ids, None, meta.num_labels)))
    with pytest.raises(ValueError, match="hidden layer"):
        TFDenseEngine({}).prepare(
            TrainMeta(num_features=4, num_labels=3, num_train=1, batch_size=1, model=ModelSpec(hidden=()))
        )


def test_zero_sized_model_refused_before_tensorflow_runs():
    # oneDNN aborts the process on a zero-sized matmul, so this runs in a subprocess; the refusal
    # comes before TensorFlow is imported, which also keeps the subprocess quick.
    code = (
        "import sys\n"
        "from engines.tf import TFDenseEngine, TFSampledEngine\n"
        "from harness.spec.engine import ModelSpec, TrainMeta\n"
        "for cls in (TFDenseEngine, TFSampledEngine):\n"
        "    for labels, hidden in ((10, (0,)), (10, (8, 0)), (0, (8,))):\n"
        "        try:\n"
        "            cls({}).prepare(TrainMeta(20, labels, 100, 8, ModelSpec(hidden)))\n"
        "        except ValueError as exc:\n"
        "            print(exc)\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"rc {proc.returncode} (negative: killed by a signal)\n{proc.stderr[-2000:]}"
    for name in ("tf_dense", "tf_sampled"):
        assert f"{name}: model.hidden[0] must be >= 1, got 0" in proc.stdout
        assert f"{name}: model.hidden[1] must be >= 1, got 0" in proc.stdout
        assert f"{name}: num_labels must be >= 1, got 0" in proc.stdout


# ---- tf_sampled ----------------------------------------------------------------------------------


def test_sampled_lazy_adam_touches_only_used_rows():
    meta = small_meta(features=60, labels=200)
    engine = make(TFSampledEngine, meta, num_sampled=5)
    batch = small_batch(meta, seed=4, n=6)
    before = engine.get_weights()
    engine.fit_step(batch)
    after1 = engine.get_weights()
    present = np.unique(batch.features.indices)
    absent = np.setdiff1d(np.arange(meta.num_features), present)
    np.testing.assert_array_equal(after1[0][absent], before[0][absent])  # untouched input rows
    assert np.all(np.any(after1[0][present] != before[0][present], axis=1))
    changed = np.flatnonzero(np.any(after1[2] != before[2], axis=1))
    true = np.unique(batch.labels.indices)
    assert set(true) <= set(changed)
    assert len(changed) <= len(true) + 5  # true labels plus at most num_sampled candidates
    # Lazy, not dense: a row touched in step 1 but not in step 2 keeps its value (dense Adam would
    # still move it by its first moment).
    other = Batch(
        Csr(np.array([0, 1], np.int64), np.array([present[0]], np.int32), np.ones(1, np.float32), 60),
        Csr(np.array([0, 1], np.int64), np.array([true[0]], np.int32), None, 200),
    )
    engine.fit_step(other)
    after2 = engine.get_weights()
    np.testing.assert_array_equal(after2[0][present[1:]], after1[0][present[1:]])


def test_sampled_clamps_num_sampled_to_label_count():
    meta = small_meta(labels=25)
    engine = make(TFSampledEngine, meta)  # default 4096 > 25 labels
    assert engine.info()["num_sampled_effective"] == 24
    stats = engine.fit_step(small_batch(meta))
    assert np.isfinite(stats.loss) and stats.active_outputs >= 24


@pytest.mark.parametrize(
    "params",
    [
        {"xla": True, "remove_accidental_hits": False},
        {"sampler": "log_uniform"},
        {"sampler": "uniform"},
        {"sampler": "uniform", "candidates": "sample"},
        {"sampler": "uniform", "candidates": "sample", "xla": True},
    ],
    ids=["xla", "log_uniform", "uniform", "per_sample_candidates", "per_sample_candidates_xla"],
)
def test_sampled_variants_train(params):
    meta = small_meta()
    engine = make(TFSampledEngine, meta, num_sampled=10, **params)
    batch = small_batch(meta)
    losses = [engine.fit_step(batch).loss for _ in range(20)]
    assert all(np.isfinite(losses)) and np.mean(losses[-3:]) < np.mean(losses[:3])


def test_info_reports_version_device_threads():
    engine = make(TFDenseEngine, small_meta())
    import tensorflow as tf

    info = engine.info()
    assert info["tensorflow"] == tf.__version__
    assert "CPU" in info["device"] or "GPU" in info["device"]
    assert info["threads"] >= 1 and info["xla"] is False


# ---- learning ------------------------------------------------------------------------------------


def learnable_problem(n: int, seed: int) -> tuple[Csr, Csr]:
    """Each sample has 1-2 labels; each label owns 3 features that appear when the label does."""
    rng = np.random.default_rng(seed)
    num_labels, per = 20, 3
    rows_f, rows_y = [], []
    for _ in range(n):
        labels = np.sort(rng.choice(num_labels, rng.integers(1, 3), replace=False))
        feats = np.concatenate([lab * per + np.arange(per) for lab in labels])
        noise = rng.choice(num_labels * per, 2, replace=False)
        rows_f.append(np.unique(np.concatenate([feats, noise])))
        rows_y.append(labels)

    def pack(rows, n_cols, values):
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum([len(r) for r in rows], out=indptr[1:])
        idx = np.concatenate(rows).astype(np.int32)
        return Csr(indptr, idx, np.ones(len(idx), np.float32) if values else None, n_cols)

    return pack(rows_f, num_labels * per, True), pack(rows_y, num_labels, False)


@pytest.mark.parametrize("cls,params", [(TFDenseEngine, {}), (TFSampledEngine, {"num_sampled": 8})])
def test_loss_falls_and_learns(cls, params):
    features, labels = learnable_problem(512, seed=0)
    meta = TrainMeta(
        num_features=features.n_cols,
        num_labels=labels.n_cols,
        num_train=512,
        batch_size=32,
        model=ModelSpec(hidden=(16,)),
        optimizer=OptimizerSpec(lr=0.01),
        label_counts=np.bincount(labels.indices, minlength=labels.n_cols),
    )
    engine = make(cls, meta, **params)
    losses = []
    for epoch in range(8):
        for start in range(0, 512, 32):
            rows = np.arange(start, start + 32)
            losses.append(engine.fit_step(Batch(features.take(rows), labels.take(rows))).loss)
    assert np.mean(losses[-16:]) < 0.5 * np.mean(losses[:4])
    test_f, test_y = learnable_problem(200, seed=1)
    top1 = engine.predict_topk(test_f, 1)[:, 0]
    p1 = np.mean([top1[i] in test_y.row(i) for i in range(200)])
    assert p1 > 0.9


def test_lazy_adam_update_matches_numpy_over_two_steps():
    """The row-wise Adam of tf_sampled, fed hand-made sparse gradients with repeated ids."""
    meta = small_meta(features=10, labels=6)
    engine = make(TFSampledEngine, meta, num_sampled=2)
    import tensorflow as tf

    model = engine._model  # white-box: drive the optimiser directly
    opt = meta.optimizer
    w = engine.get_weights()[2].astype(np.float64)  # W_out, 6 x 8
    m, v = np.zeros_like(w), np.zeros_like(w)
    rng = np.random.default_rng(0)
    steps = [np.array([4, 1, 4], np.int32), np.array([1, 2], np.int32)]
    for t, ids in enumerate(steps, start=1):
        values = rng.standard_normal((len(ids), 8)).astype(np.float32)
        model.t.assign(t)
        c1, c2 = model._bias_terms()
        model._lazy_adam(2, tf.IndexedSlices(tf.constant(values), tf.constant(ids)), c1, c2)
        g = np.zeros_like(w)
        np.add.at(g, ids, values)  # repeated ids sum
        rows = np.unique(ids)
        m[rows] = opt.beta1 * m[rows] + (1 - opt.beta1) * g[rows]
        v[rows] = opt.beta2 * v[rows] + (1 - opt.beta2) * g[rows] ** 2
        m_hat, v_hat = m[rows] / (1 - opt.beta1**t), v[rows] / (1 - opt.beta2**t)
        w[rows] -= opt.lr * m_hat / (np.sqrt(v_hat) + opt.eps)
    np.testing.assert_allclose(engine.get_weights()[2], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.m[2].numpy(), m, rtol=1e-5, atol=1e-7)


def test_features_without_values_mean_ones():
    meta = small_meta()
    engine = make(TFDenseEngine, meta)
    f = small_batch(meta, seed=6).features
    ones = Csr(f.indptr, f.indices, np.ones(f.nnz, np.float32), f.n_cols)
    binary = Csr(f.indptr, f.indices, None, f.n_cols)
    np.testing.assert_array_equal(engine.predict_topk(binary, 5), engine.predict_topk(ones, 5))


@pytest.mark.parametrize("remove_hits", [True, False])
def test_shared_sampled_loss_equals_tf_nn_sampled_softmax(remove_hits):
    """Given the same candidates, the "shared" loss and tf.nn.sampled_softmax_loss agree, gradients too."""
    import tensorflow as tf

    meta = small_meta(features=30, labels=50)
    engines = {
        kind: make(
            TFSampledEngine, meta, num_sampled=12, sampled_loss=kind, remove_accidental_hits=remove_hits
        )
        for kind in ("tf_nn", "shared")
    }
    rng = np.random.default_rng(8)
    start = [(rng.standard_normal(w.shape) * 0.5).astype(np.float32) for w in engines["shared"].get_weights()]
    batch = small_batch(meta, seed=12, n=10)
    from engines.tf import feed

    f = feed.feature_arrays(batch.features, meta.num_features)
    y = feed.label_arrays(batch.labels, meta.num_labels, f.n_rows)
    # Candidates chosen to include some of the batch's true labels, so accidental hits occur.
    hits = np.unique(batch.labels.indices)[:4]
    fill = np.setdiff1d(np.arange(meta.num_labels), hits)[::5][: 12 - len(hits)]
    s_ids = tf.constant(np.concatenate([hits, fill]), tf.int64)  # exactly num_sampled = 12
    sampled = (s_ids, tf.fill([len(y.idx), 1], 0.3), tf.fill(tf.shape(s_ids), 0.2))
    out = {}
    for kind, engine in engines.items():
        engine.set_weights(start)
        model = engine._model
        with tf.GradientTape() as tape:
            loss = model._sampled_loss(
                f.idx, f.val, f.row, y.idx, y.row, y.weight, np.int32(f.n_rows), sampled
            )
        grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.vars)]
        out[kind] = (float(loss), grads)
    assert out["shared"][0] == pytest.approx(out["tf_nn"][0], rel=1e-5)
    for a, b in zip(out["shared"][1], out["tf_nn"][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _per_sample_softmax_reference(h, w_out, b_out, n, rows):
    """Loss and output-layer gradients of the per-sample sampled softmax, one sample at a time.

    rows: (i, labels, q_true, cand, q_cand) per sample with labels; cand are the candidates left in
    its softmax. Each softmax holds the labels then the candidates, every logit minus log(q).
    """
    loss, g_w, g_b = 0.0, np.zeros_like(w_out), np.zeros_like(b_out)
    for i, labels, q_true, cand, q_cand in rows:
        ids = np.concatenate([labels, cand])
        z = h[i] @ w_out[ids].T + b_out[ids] - np.log(np.concatenate([q_true, q_cand]))
        lse = np.log(np.exp(z - z.max()).sum()) + z.max()
        target = np.zeros(len(ids))
        target[: len(labels)] = 1.0 / len(labels)
        loss += float(target @ (lse - z)) / n
        dz = (np.exp(z - lse) - target) / n
        np.add.at(g_b, ids, dz)
        np.add.at(g_w, ids, dz[:, None] * h[i][None, :])
    return loss, g_w, g_b


@pytest.mark.parametrize("remove_hits", [True, False])
def test_per_sample_sampled_loss_matches_its_formula(remove_hits):
    """One softmax per sample over its true labels and the candidates, loss and output gradients in numpy.

    loss = mean_i sum_{j in y_i} (1/|y_i|) (lse_i - t_ij) with every logit corrected by -log(expected
    count); with hit removal a candidate equal to any of the sample's labels leaves its softmax.
    """
    import tensorflow as tf

    from engines.tf import feed

    meta = small_meta(features=30, labels=50)
    engine = make(
        TFSampledEngine, meta, num_sampled=12, sampled_loss="per_sample", remove_accidental_hits=remove_hits
    )
    rng = np.random.default_rng(9)
    start = [(rng.standard_normal(w.shape) * 0.5).astype(np.float32) for w in engine.get_weights()]
    engine.set_weights(start)
    batch = small_batch(meta, seed=13, n=10)
    f = feed.feature_arrays(batch.features, meta.num_features)
    y = feed.label_arrays(batch.labels, meta.num_labels, f.n_rows)
    hits = np.unique(batch.labels.indices)[:4]  # candidates that are some samples' true labels
    fill = np.setdiff1d(np.arange(meta.num_labels), hits)[::5][: 12 - len(hits)]
    cand = np.concatenate([hits, fill])
    true_q = rng.uniform(0.2, 0.6, len(y.idx))
    cand_q = rng.uniform(0.1, 0.5, len(cand))
    sampled = (
        tf.constant(cand, tf.int64),
        tf.constant(true_q[:, None], tf.float32),
        tf.constant(cand_q, tf.float32),
    )
    model = engine._model
    with tf.GradientTape() as tape:
        loss = model._sampled_loss(f.idx, f.val, f.row, y.idx, y.row, y.weight, np.int32(f.n_rows), sampled)
    grads = tape.gradient(loss, model.vars)

    w1, b1, w_out, b_out = (w.astype(np.float64) for w in start)
    x = np.zeros((len(batch), meta.num_features))
    np.add.at(x, (f.row, f.idx), f.val)
    h = np.maximum(x @ w1 + b1, 0)
    n = len(batch)
    rows, pair = [], 0
    for i in range(n):
        labels = batch.labels.indices[batch.labels.indptr[i] : batch.labels.indptr[i + 1]]
        q_true = true_q[pair : pair + len(labels)]
        pair += len(labels)
        if len(labels):
            keep = ~np.isin(cand, labels) if remove_hits else np.ones(len(cand), bool)
            rows.append((i, labels, q_true, cand[keep], cand_q[keep]))
    want_loss, g_w, g_b = _per_sample_softmax_reference(h, w_out, b_out, n, rows)
    assert float(loss) == pytest.approx(want_loss, rel=1e-5)
    np.testing.assert_allclose(tf.convert_to_tensor(grads[-1]).numpy(), g_b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(tf.convert_to_tensor(grads[-2]).numpy(), g_w, rtol=1e-4, atol=1e-6)


def test_per_sample_candidates_loss_matches_its_formula():
    """candidates = "sample": each sample's own [S] candidates, repeats and own-label hits included.

    Every draw enters the sample's softmax (a repeated id twice), except draws equal to one of the
    sample's own labels, all of which leave it; another sample's label is an ordinary negative.
    """
    import tensorflow as tf

    from engines.tf import feed

    meta = small_meta(features=30, labels=50)
    engine = make(
        TFSampledEngine, meta, num_sampled=6, sampled_loss="per_sample", candidates="sample", sampler="uniform"
    )
    rng = np.random.default_rng(4)
    start = [(rng.standard_normal(w.shape) * 0.5).astype(np.float32) for w in engine.get_weights()]
    engine.set_weights(start)
    batch = small_batch(meta, seed=13, n=10)
    f = feed.feature_arrays(batch.features, meta.num_features)
    y = feed.label_arrays(batch.labels, meta.num_labels, f.n_rows)
    n = len(batch)
    own = [batch.labels.indices[batch.labels.indptr[i] : batch.labels.indptr[i + 1]] for i in range(n)]
    cand = rng.integers(0, meta.num_labels, (n, 6))
    for i in range(n):
        if len(own[i]):
            cand[i, :2] = own[i][0]  # the same own label drawn twice: both draws must go
        cand[i, 2] = cand[i, 3]  # a repeated negative: both draws stay
        cand[i, 4] = own[(i + 1) % n][0] if len(own[(i + 1) % n]) else 0  # a neighbour's label
    true_q = rng.uniform(0.2, 0.6, len(y.idx))
    cand_q = rng.uniform(0.1, 0.5, cand.shape)
    sampled = (
        tf.constant(cand, tf.int64),
        tf.constant(true_q[:, None], tf.float32),
        tf.constant(cand_q, tf.float32),
    )
    model = engine._model
    with tf.GradientTape() as tape:
        loss = model._sampled_loss(f.idx, f.val, f.row, y.idx, y.row, y.weight, np.int32(n), sampled)
    grads = tape.gradient(loss, model.vars)

    w1, b1, w_out, b_out = (w.astype(np.float64) for w in start)
    x = np.zeros((n, meta.num_features))
    np.add.at(x, (f.row, f.idx), f.val)
    h = np.maximum(x @ w1 + b1, 0)
    rows, pair = [], 0
    for i in range(n):
        labels = own[i]
        q_true = true_q[pair : pair + len(labels)]
        pair += len(labels)
        if len(labels):
            keep = ~np.isin(cand[i], labels)
            assert (~keep).sum() >= 2
            rows.append((i, labels, q_true, cand[i][keep], cand_q[i][keep]))
    want_loss, g_w, g_b = _per_sample_softmax_reference(h, w_out, b_out, n, rows)
    assert float(loss) == pytest.approx(want_loss, rel=1e-5)
    np.testing.assert_allclose(tf.convert_to_tensor(grads[-1]).numpy(), g_b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(tf.convert_to_tensor(grads[-2]).numpy(), g_w, rtol=1e-4, atol=1e-6)


def test_per_sample_loss_under_xla_equals_the_plain_step():
    """XLA pads the label pairs with weight-0 copies of a real pair: they must leave the loss alone
    (in the per-sample form they would otherwise enter that sample's normaliser)."""
    meta = small_meta()
    batch = small_batch(meta, seed=5)
    losses = {}
    for xla in (False, True):
        engine = make(TFSampledEngine, meta, num_sampled=10, xla=xla)
        losses[xla] = engine.fit_step(batch).loss  # the same seed: the same candidates and weights
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_per_sample_candidates_are_drawn_per_sample():
    """[n, S] uniform ids, seeded by the run seed; expected count S / L for every id."""
    meta = small_meta(labels=1000)
    draws = []
    for _ in range(2):
        engine = make(TFSampledEngine, meta, num_sampled=64, candidates="sample", sampler="uniform")
        ids, true_q, cand_q = engine._model._draw_candidates(np.array([3, 5, 7], np.int32), np.int32(4))
        draws.append(ids.numpy())
    ids = draws[0]
    assert ids.shape == (4, 64) and ids.min() >= 0 and ids.max() < 1000
    assert not np.array_equal(ids[0], ids[1])  # each sample its own draw
    np.testing.assert_array_equal(draws[0], draws[1])  # the same seed, the same draws
    np.testing.assert_allclose(cand_q.numpy(), 64 / 1000)
    np.testing.assert_allclose(true_q.numpy(), 64 / 1000)
    assert true_q.shape == (3, 1)


def test_unigram_sampler_follows_the_label_counts():
    """sampler = "unigram": TF's fixed-unigram sampler on (count + 1) ** unigram_power."""
    counts = np.zeros(200, np.int64)
    counts[:5] = [5000, 2000, 1000, 10, 0]
    meta = TrainMeta(
        num_features=40, num_labels=200, num_train=64, batch_size=16, model=ModelSpec(hidden=(8,)),
        label_counts=counts,
    )
    engine = make(TFSampledEngine, meta, num_sampled=20, sampler="unigram", unigram_power=1.0)
    seen = np.zeros(200)
    for _ in range(50):
        ids, true_q, _ = engine._model._draw_candidates(np.array([0, 4], np.int32), np.int32(2))
        seen[ids.numpy()] += 1
    # Weights 5001, 2001, 1001 against 1 for each of the other 197: the heavy three every time.
    assert seen[:3].tolist() == [50, 50, 50]
    assert seen[3:].sum() == 50 * 17
    q = true_q.numpy()[:, 0]
    assert q[0] > 0.99 and q[1] < 0.2  # expected counts follow the weights
    for bad, why in ((None, "got none"), (counts[:10], "got 10 of them")):
        meta_bad = TrainMeta(40, 200, 64, 16, ModelSpec(hidden=(8,)), label_counts=bad)
        with pytest.raises(ValueError, match=f"sampler 'unigram' needs the training rows per label.*200.*{why}"):
            make(TFSampledEngine, meta_bad, sampler="unigram")


def test_per_sample_sampled_loss_trains():
    meta = small_meta()
    engine = make(TFSampledEngine, meta, num_sampled=10, sampled_loss="per_sample")
    batch = small_batch(meta)
    losses = [engine.fit_step(batch).loss for _ in range(20)]
    assert all(np.isfinite(losses)) and np.mean(losses[-3:]) < np.mean(losses[:3])


def test_shared_sampled_loss_trains_with_xla():
    meta = small_meta()
    engine = make(TFSampledEngine, meta, num_sampled=10, sampled_loss="shared", xla=True)
    batch = small_batch(meta)
    losses = [engine.fit_step(batch).loss for _ in range(20)]
    assert all(np.isfinite(losses)) and np.mean(losses[-3:]) < np.mean(losses[:3])


# ---- device selection and placement ------------------------------------------------------------

CPU0 = "/job:localhost/replica:0/task:0/device:CPU:0"
GPU0 = "/job:localhost/replica:0/task:0/device:GPU:0"
GPU1 = "/job:localhost/replica:0/task:0/device:GPU:1"


@pytest.mark.parametrize(
    "want,gpus,expected",
    [
        ("auto", [GPU0, GPU1], GPU0),
        ("gpu", [GPU0, GPU1], GPU0),
        ("cpu", [GPU0, GPU1], CPU0),
        ("auto", [], CPU0),
        ("cpu", [], CPU0),
    ],
)
@pytest.mark.parametrize("cls", [TFDenseEngine, TFSampledEngine])
def test_device_choice_with_a_faked_gpu_list(monkeypatch, cls, want, gpus, expected):
    from engines.tf import engine as tf_engine

    listed = {"GPU": gpus, "CPU": [CPU0]}
    monkeypatch.setattr(tf_engine, "_logical_devices", lambda _tf, kind: list(listed[kind]))
    engine = cls({"device": want})
    assert engine._pick_device(None) == expected
    assert tf_engine.device_kind(expected) == ("gpu" if expected in (GPU0, GPU1) else "cpu")


def test_gpu_requested_without_one_says_why(monkeypatch):
    from engines.tf import engine as tf_engine

    monkeypatch.setattr(tf_engine, "_logical_devices", lambda _tf, kind: [CPU0] if kind == "CPU" else [])
    with pytest.raises(RuntimeError, match=r"device = 'gpu' requested but TensorFlow sees no GPU.*TF_VARIANT"):
        TFDenseEngine({"device": "gpu"})._pick_device(None)


def test_device_cpu_places_variables_and_reports_it():
    engine = make(TFDenseEngine, small_meta(), device="cpu")
    assert all("CPU" in v.device for v in engine._model.vars + engine._model.m + engine._model.v)
    engine.fit_step(small_batch(small_meta()))
    info = engine.info()
    assert info["device_kind"] == "cpu" and "CPU" in info["device"]
    assert "gpu" not in info
    assert set(info["tf_build"]) == {"is_cuda_build", "cuda_version", "cudnn_version"}
    assert info["tf32"] is False  # the default: float32 matmuls wherever the step runs


def _require_gpu():
    """Skip (with the reason) unless TensorFlow sees a GPU; imports TF after the engine set it up.

    SLIDEBENCH_REQUIRE_GPU=1 (benchmarks/gpu_check.sh) turns the skip into a failure: on the GPU
    machine, a GPU that TF cannot see is the finding, not a reason to pass.
    """
    TFDenseEngine({}).set_threads(THREADS)
    import tensorflow as tf

    from engines.tf.engine import _tf_build_name

    if not tf.config.list_physical_devices("GPU"):
        why = f"no GPU visible to TensorFlow (installed: {_tf_build_name()})"
        if os.environ.get("SLIDEBENCH_REQUIRE_GPU") == "1":
            pytest.fail(f"{why}, and SLIDEBENCH_REQUIRE_GPU=1")
        pytest.skip(why)
    return tf


# Ops that carry the step's work: one of them on the CPU means the GPU run is not a GPU run.
HOT_OPS = {
    "MatMul",
    "BatchMatMulV2",
    "ResourceGather",
    "GatherV2",
    "UnsortedSegmentSum",
    "ResourceApplyAdam",
    "ResourceScatterUpdate",
    "ResourceScatterSub",
    "TopKV2",
    "Unique",
    "Relu",
    "ReluGrad",
    "Softmax",
    "Max",
    "Sum",
}
_PLACEMENT = re.compile(r"\((\w+)\): (/job:\S+/device:(\w+):\d+)\s*$")


@pytest.mark.gpu
@pytest.mark.parametrize(
    "cls,params",
    [
        (TFDenseEngine, {}),
        (TFDenseEngine, {"xla": True}),
        (TFSampledEngine, {}),  # the default: per-sample loss, unigram sampler (on the CPU by design)
        (TFSampledEngine, {"sampled_loss": "shared"}),
        (TFSampledEngine, {"sampler": "uniform", "candidates": "sample"}),
    ],
)
def test_gpu_steps_run_on_the_gpu_without_fallback(capfd, cls, params):
    tf = _require_gpu()
    meta = small_meta(hidden=(16, 8), features=300, labels=500)
    # Soft placement off: an op without a GPU kernel inside the steps' GPU scope now fails instead
    # of silently running on the CPU (the candidate sampler is placed on the CPU explicitly).
    # The placement log names the device of every op of each function as it is placed.
    tf.config.set_soft_device_placement(False)
    tf.debugging.set_log_device_placement(True)
    try:
        engine = make(cls, meta, device="gpu", **params)
        for seed in (1, 2):
            engine.fit_step(small_batch(meta, seed=seed))
        top = engine.predict_topk(small_batch(meta).features, 5)
    finally:
        tf.debugging.set_log_device_placement(False)
        tf.config.set_soft_device_placement(True)
    assert top.shape == (16, 5)
    model = engine._model
    assert all("GPU" in v.device for v in model.vars + model.m + model.v + [model.t])
    assert engine.info()["device_kind"] == "gpu"
    log_text = capfd.readouterr()
    placed = [m.groups() for line in (log_text.out + log_text.err).splitlines() if (m := _PLACEMENT.search(line))]
    hot = [(op, dev) for op, _full, dev in placed if op in HOT_OPS]
    if not params.get("xla"):
        # (An XLA-compiled step runs as one cluster: its ops are not placed one by one.)
        assert hot, "the device placement log named no step op; its format may have changed"
    on_cpu = sorted({op for op, dev in hot if dev != "GPU"})
    assert not on_cpu, f"step ops placed on the CPU in a GPU run: {on_cpu}"


@pytest.mark.gpu
def test_gpu_and_cpu_train_the_same_model():
    _require_gpu()
    meta = small_meta(hidden=(16,), features=300, labels=500)
    gpu = make(TFDenseEngine, meta, device="gpu")
    cpu = make(TFDenseEngine, meta, device="cpu")
    start = cpu.get_weights()
    gpu.set_weights(start)
    for seed in (1, 2, 3):
        batch = small_batch(meta, seed=seed)
        assert gpu.fit_step(batch).loss == pytest.approx(cpu.fit_step(batch).loss, rel=1e-4, abs=1e-6)
    for g, c in zip(gpu.get_weights(), cpu.get_weights()):
        np.testing.assert_allclose(g, c, rtol=1e-4, atol=2e-5)
    feats = small_batch(meta, seed=9).features
    np.testing.assert_array_equal(gpu.predict_topk(feats, 5)[:, 0], cpu.predict_topk(feats, 5)[:, 0])


@pytest.mark.gpu
def test_gpu_info_names_the_gpu_and_the_cuda_build():
    _require_gpu()
    engine = make(TFDenseEngine, small_meta(), device="gpu")
    engine.fit_step(small_batch(small_meta()))
    info = engine.info()
    assert info["device_kind"] == "gpu" and "GPU" in info["device"]
    assert info["tf_build"]["is_cuda_build"] is True
    assert info["tf_build"]["cuda_version"] and info["tf_build"]["cudnn_version"]
    assert info["gpu"]["name"] and info["gpu"]["memory_peak_mb"] > 0, info["gpu"]
