"""The numpy_dense oracle itself: its gradients, its determinism, its weight layout."""

from __future__ import annotations

import numpy as np
import pytest

from engines.reference import NumpyDenseEngine, topk_desc
from harness.engine import Batch, ModelSpec, OptimizerSpec, TrainMeta
from harness.sparse import Csr

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
