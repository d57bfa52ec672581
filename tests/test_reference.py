"""The numpy_dense oracle itself: its gradients, its determinism, its weight layout."""

from __future__ import annotations

import numpy as np
import pytest

from engines.reference import NumpyDenseEngine, topk_desc
from harness.datasets.sparse import Csr
from harness.spec.engine import Batch, ModelSpec, OptimizerSpec, TrainMeta

F, L = 12, 9


def make_batch(rng: np.random.Generator, n: int = 5) -> Batch:
    nnz = 4
    cols = (
        np.stack([np.sort(rng.choice(F, size=nnz, replace=False)) for _ in range(n)]).ravel().astype(np.int32)
    )
    x = Csr(
        np.arange(0, n * nnz + 1, nnz, dtype=np.int64),
        cols,
        rng.uniform(0.2, 1.0, n * nnz).astype(np.float32),
        F,
    )
    label_rows = [[1, 4], [0], [], [2, 3, 8], [7]][:n]
    indptr = np.zeros(n + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(r) for r in label_rows])
    y = Csr(indptr, np.asarray([i for r in label_rows for i in r], dtype=np.int32), None, L)
    return Batch(x, y)


def make_engine(hidden: tuple[int, ...] = (6,), seed: int = 0, lr: float = 0.01) -> NumpyDenseEngine:
    e = NumpyDenseEngine({})
    e.set_threads(1)
    e.prepare(TrainMeta(F, L, 100, 5, ModelSpec(hidden=hidden), OptimizerSpec(lr=lr), seed=seed))
    return e


@pytest.mark.parametrize("hidden", [(6,), (5, 4)])
def test_gradients_match_finite_differences(hidden: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    engine = make_engine(hidden)
    batch = make_batch(rng)
    weights = [w.astype(np.float64) for w in engine.get_weights()]
    _, grads = engine.loss_and_grads(batch)
    eps = 3e-3  # small enough not to cross a ReLU kink, large enough for float32 losses
    for wi, w in enumerate(weights):
        for _ in range(4):
            idx = tuple(rng.integers(0, s) for s in w.shape)
            plus = [x.copy() for x in weights]
            minus = [x.copy() for x in weights]
            plus[wi][idx] += eps
            minus[wi][idx] -= eps
            engine.set_weights(plus)
            lp, _ = engine.loss_and_grads(batch)
            engine.set_weights(minus)
            lm, _ = engine.loss_and_grads(batch)
            numeric = (lp - lm) / (2 * eps)
            assert grads[wi][idx] == pytest.approx(numeric, abs=2e-3, rel=2e-2), (wi, idx)


def test_loss_is_mean_cross_entropy_with_split_targets() -> None:
    rng = np.random.default_rng(3)
    engine = make_engine()
    batch = make_batch(rng)
    # Zero weights: uniform softmax, so each labelled row's loss is log(L); the unlabelled row is 0.
    engine.set_weights([np.zeros_like(w) for w in engine.get_weights()])
    loss, _ = engine.loss_and_grads(batch)
    assert loss == pytest.approx(4 * np.log(L) / 5, rel=1e-5)


def test_deterministic_given_seed_and_layout() -> None:
    rng = np.random.default_rng(1)
    batches = [make_batch(rng) for _ in range(5)]
    a, b = make_engine(seed=7), make_engine(seed=7)
    for batch in batches:
        a.fit_step(batch)
        b.fit_step(batch)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        assert np.array_equal(wa, wb)
    shapes = [w.shape for w in a.get_weights()]
    assert shapes == [(F, 6), (6,), (L, 6), (L,)]
    assert not np.array_equal(make_engine(seed=8).get_weights()[0], make_engine(seed=7).get_weights()[0])


def test_adam_first_step_moves_each_weight_by_lr() -> None:
    # Adam's bias-corrected first step is lr * g / (|g| + eps) ~ lr * sign(g).
    rng = np.random.default_rng(2)
    engine = make_engine(lr=0.05)
    batch = make_batch(rng)
    before = engine.get_weights()
    _, grads = engine.loss_and_grads(batch)
    engine.fit_step(batch)
    after = engine.get_weights()
    moved = before[-1] - after[-1]
    assert np.allclose(moved, 0.05 * np.sign(grads[-1]), atol=1e-6)


def test_topk_desc_breaks_ties_by_lower_id() -> None:
    scores = np.array([[0.1, 0.9, 0.9, 0.5], [1.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    assert topk_desc(scores, 3).tolist() == [[1, 2, 3], [0, 1, 2]]
    assert topk_desc(scores, 4).dtype == np.int32
    with pytest.raises(ValueError, match="k must be"):
        topk_desc(scores, 5)


def test_test_hooks() -> None:
    rng = np.random.default_rng(4)
    engine = NumpyDenseEngine({"nan_at_step": 2, "raise_at_step": 3})
    engine.set_threads(1)
    engine.prepare(TrainMeta(F, L, 100, 5, ModelSpec(hidden=(4,)), OptimizerSpec(), seed=0))
    assert np.isfinite(engine.fit_step(make_batch(rng)).loss)
    assert np.isnan(engine.fit_step(make_batch(rng)).loss)
    with pytest.raises(RuntimeError, match="raise_at_step"):
        engine.fit_step(make_batch(rng))
    with pytest.raises(ValueError, match="sleep_per_step"):
        NumpyDenseEngine.check_params({"sleep_per_step": "slow"})


# ---- refusals: exactly what the native SLIDE engine refuses, with the same messages ----------------

try:
    from slide_helpers import HAVE_NATIVE
except ImportError:  # pragma: no cover
    from tests.slide_helpers import HAVE_NATIVE


def _bad(
    feat_ptr=None, feat_idx=None, feat_val=None, lab_ptr=None, lab_idx=None, n_cols=F, n_labels=L
) -> Batch:
    """A 2-row batch with the given parts replaced (Csr itself checks only dtypes and the ends of indptr)."""
    x = Csr(
        np.array(feat_ptr or [0, 2, 3], np.int64),
        np.array(feat_idx or [1, 5, 11], np.int32),
        np.array(feat_val or [1.0, 0.5, 2.0], np.float32),
        n_cols,
    )
    y = Csr(
        np.array(lab_ptr or [0, 1, 3], np.int64), np.array(lab_idx or [0, 2, 8], np.int32), None, n_labels
    )
    return Batch(x, y)


BAD_BATCHES = [
    (_bad(feat_idx=[1, 5, 12]), "features: row 1 has id 12 outside [0, 12)"),
    (_bad(feat_idx=[-1, 5, 11]), "features: row 0 has id -1 outside [0, 12)"),
    (
        _bad(feat_idx=[5, 1, 11]),
        "features: row 0 ids must be strictly increasing (sorted, no duplicates); 5 is",
    ),
    (_bad(feat_idx=[5, 5, 11]), "features: row 0 ids must be strictly increasing"),
    (_bad(feat_val=[1.0, float("nan"), 2.0]), "features: row 0 id 5 has a non-finite value (nan)"),
    (_bad(feat_val=[1.0, 2.0, float("inf")]), "features: row 1 id 11 has a non-finite value (inf)"),
    (
        _bad(feat_ptr=[0, 3, 2, 3]),
        "features: indptr must be non-decreasing and within [0, nnz]; row 1 spans [3, 2)",
    ),
    (_bad(n_cols=F + 3), f"features: {F + 3} columns, but the network has num_features = {F}"),
    (_bad(lab_idx=[0, 2, 9]), "labels: row 1 has id 9 outside [0, 9)"),
    (_bad(lab_idx=[0, 8, 2]), "labels: row 1 ids must be strictly increasing"),
    (_bad(lab_idx=[0, 2, 2]), "labels: row 1 ids must be strictly increasing"),
    (_bad(lab_ptr=[0, 1, 2, 3]), "labels: 3 rows, but features have 2"),
    (_bad(lab_ptr=[0, 3], lab_idx=[0, 2, 8]), "labels: 1 rows, but features have 2"),
    (_bad(n_labels=L + 1), f"labels: {L + 1} columns, but the network has num_labels = {L}"),
    (
        Batch(
            Csr(np.zeros(1, np.int64), np.zeros(0, np.int32), None, F),
            Csr(np.zeros(1, np.int64), np.zeros(0, np.int32), None, L),
        ),
        "features: the batch is empty (0 rows)",
    ),
]


def _slide_engine(hidden: tuple[int, ...] = (6,), lr: float = 0.01):
    from engines.slide import SlideEngine

    e = SlideEngine({"min_active": L})
    e.set_threads(1)
    e.prepare(TrainMeta(F, L, 100, 5, ModelSpec(hidden=hidden), OptimizerSpec(lr=lr), seed=0))
    return e


@pytest.mark.parametrize(("batch", "fragment"), BAD_BATCHES)
def test_bad_batch_refused_like_the_slide_engine(batch: Batch, fragment: str) -> None:
    engine = make_engine()
    before = engine.get_weights()
    with pytest.raises(ValueError) as err:
        engine.fit_step(batch)
    assert fragment in str(err.value)
    for w, b in zip(engine.get_weights(), before, strict=True):
        assert np.array_equal(w, b)  # refused before any update
    if HAVE_NATIVE:
        with pytest.raises(ValueError) as native_err:
            _slide_engine().fit_step(batch)
        assert str(native_err.value) == str(err.value)


@pytest.mark.parametrize(("batch", "fragment"), [(b, f) for b, f in BAD_BATCHES if f.startswith("features")])
def test_bad_predict_batch_refused_like_the_slide_engine(batch: Batch, fragment: str) -> None:
    with pytest.raises(ValueError) as err:
        make_engine().predict_topk(batch.features, 3)
    assert fragment in str(err.value)
    if HAVE_NATIVE:
        with pytest.raises(ValueError) as native_err:
            _slide_engine().predict_topk(batch.features, 3)
        assert str(native_err.value) == str(err.value)


def test_predict_k_out_of_range_refused() -> None:
    x = make_batch(np.random.default_rng(0)).features
    with pytest.raises(ValueError, match=rf"k must be in 1..num_labels \({L}\), got {L + 1}"):
        make_engine().predict_topk(x, L + 1)


@pytest.mark.parametrize(
    ("optimizer", "fragment"),
    [
        (OptimizerSpec(lr=float("nan")), "optimizer.lr must be a finite number > 0, got nan"),
        (OptimizerSpec(lr=-0.1), "optimizer.lr must be a finite number > 0, got -0.1"),
        (OptimizerSpec(lr=float("inf")), "optimizer.lr must be a finite number > 0, got inf"),
        (OptimizerSpec(beta1=1.0), "optimizer.beta1 must be in [0, 1), got 1"),
        (OptimizerSpec(beta2=-0.5), "optimizer.beta2 must be in [0, 1), got -0.5"),
        (OptimizerSpec(eps=0.0), "optimizer.eps must be a finite number > 0, got 0"),
    ],
)
def test_bad_optimizer_refused_like_the_slide_engine(optimizer: OptimizerSpec, fragment: str) -> None:
    meta = TrainMeta(F, L, 100, 5, ModelSpec(hidden=(6,)), optimizer, seed=0)
    engine = NumpyDenseEngine({})
    with pytest.raises(ValueError) as err:
        engine.prepare(meta)
    assert fragment in str(err.value)
    if HAVE_NATIVE:
        from engines.slide import SlideEngine

        with pytest.raises(ValueError, match="optimizer") as native_err:
            SlideEngine({"min_active": L}).prepare(meta)
        assert str(native_err.value).split("optimizer.")[1] == str(err.value).split("optimizer.")[1]


def test_zero_width_layer_refused() -> None:
    with pytest.raises(ValueError, match=r"numpy_dense: layers\[0\]\.size must be >= 1, got 0"):
        NumpyDenseEngine({}).prepare(TrainMeta(F, L, 100, 5, ModelSpec(hidden=(0,)), OptimizerSpec()))
    with pytest.raises(ValueError, match=r"numpy_dense: layers\[1\]\.size must be >= 1, got 0"):
        NumpyDenseEngine({}).prepare(TrainMeta(F, 0, 100, 5, ModelSpec(hidden=(6,)), OptimizerSpec()))


def test_set_weights_refuses_non_finite() -> None:
    engine = make_engine()
    weights = engine.get_weights()
    weights[3][2] = np.nan  # the output layer's bias
    with pytest.raises(ValueError, match="set_weights: layer 1 bias has a non-finite value"):
        engine.set_weights(weights)
